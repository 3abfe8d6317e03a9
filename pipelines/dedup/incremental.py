"""Incremental dedup: a new batch of kept documents against the already-deduplicated corpus, reusing the stored
signatures and band keys (silver.dedup_signatures) instead of recomputing them.

The old corpus's decisions are frozen. In the keep rule (keep.py) the old kept documents rank before every new
document, as if decided first, which they were; old removed documents take no part, since nothing may be the
duplicate of a removed document. So a new document is removed when a verified edge joins it to an old kept document
or to a new document the rule keeps, and kept otherwise, even if it matches only old removed documents (none of them
stands for its content in the data), or scores higher than the old document it matches. Candidates against the old
corpus are one per bucket: the best-ranked old kept document of each (band, key) a new document shares.

Clusters stay families for analysis: a new document connected to an old cluster joins it (its size grows); one
bridging two old clusters joins the one with the smallest cluster_id without merging them (that would rewrite old
rows). A full run decides everything afresh.

An incremental run is only possible when the stored index is exactly the one of silver.dedup (same documents), was
computed with the same settings, silver.dedup was written by the current keep rule (has duplicate_of), and no
deduplicated document has left silver.documents; otherwise `full_run_reason` says why the stage must run in full.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.dedup.components import connected_components
from pipelines.dedup.keep import keep_decisions
from pipelines.dedup.settings import DedupConfig
from pipelines.dedup.steps import band_rows, candidate_pairs, keep_ranks, verified
from pipelines.lakehouse import Table
from pipelines.tables import SILVER_DEDUP_SIGNATURES


@dataclass
class IncrementalResult:
    decided: DataFrame  # silver.dedup rows of the new documents, after the MERGE
    candidates: DataFrame
    pairs: DataFrame


def full_run_reason(documents: DataFrame, dedup: Table, index: Table, params: str) -> str | None:
    """None when an incremental run can go ahead; else why the stage has to run in full."""
    if not dedup.exists() or not index.exists():
        return "no previous dedup result or signature index"
    if "duplicate_of" not in dedup.read().columns:
        return f"{dedup.label} was decided by the earlier keep rule (one kept per cluster; no duplicate_of)"
    columns = set(index.read().columns)
    if columns != set(SILVER_DEDUP_SIGNATURES.column_names):  # e.g. one that still stores shingle hashes
        return f"{index.label} was built by another version (columns {sorted(columns)})"
    stored = {row["params"] for row in index.read().select("params").distinct().collect()}
    if stored - {params}:
        return f"settings changed since the index was built ({sorted(stored)[0]} -> {params})"
    decided, indexed = dedup.read().select("doc_id"), index.read().select("doc_id")
    if (
        decided.join(indexed, "doc_id", "left_anti").limit(1).count()
        or indexed.join(decided, "doc_id", "left_anti").limit(1).count()
    ):
        return f"the signature index and {dedup.label} hold different documents (an earlier run did not finish)"
    gone = decided.join(documents.select("doc_id"), "doc_id", "left_anti").count()
    if gone:
        return f"{gone} deduplicated documents are no longer kept by the filter"
    return None


def new_documents(documents: DataFrame, dedup: Table) -> DataFrame:
    return documents.join(dedup.read().select("doc_id"), "doc_id", "left_anti")


def deduplicate_batch(
    documents: DataFrame, new: DataFrame, new_signed: DataFrame, dedup: Table, index: Table, settings: DedupConfig
) -> IncrementalResult:
    """Decides the new documents (rows of `new`, signatures `new_signed`; `documents`: every document the filter
    kept, for the old kept documents' keep order), MERGEs them into silver.dedup and their signatures into the
    index."""
    if not new_signed.limit(1).count():  # nothing new: commit nothing, so a rerun leaves every table as it was
        nothing = new_signed.select(F.col("doc_id").alias("src"), F.col("doc_id").alias("dst"))
        return IncrementalResult(decided=dedup.read().limit(0), candidates=nothing, pairs=nothing)
    old = dedup.read().select("doc_id", "cluster_id", "cluster_size", "keep")
    old_signed = index.read()
    new_ranks = keep_ranks(new, settings)
    old_kept_ranks = keep_ranks(documents.join(old.where(F.col("keep")), "doc_id", "left_semi"), settings)

    # Candidates among the new documents, and between a new document and the best-ranked old kept document of each
    # bucket they share (a bucket of 10,000 old copies adds one candidate per new document, not 10,000).
    # Materialised and counted: verification picks the rows of few pairs by broadcasting their ids (steps.py).
    inner_candidates = candidate_pairs(new_signed, new_ranks).localCheckpoint()
    inner = verified(inner_candidates, settings, new, new_signed, new_signed, inner_candidates.count())
    new_bands = band_rows(new_signed)
    old_kept_bands = band_rows(old_signed.join(old_kept_ranks, "doc_id")).join(
        new_bands.select("band", "key").distinct(), ["band", "key"], "left_semi"
    )
    representatives = old_kept_bands.groupBy("band", "key").agg(F.min("rank")["doc_id"].alias("src"))
    cross_candidates = (
        new_bands.join(representatives, ["band", "key"])
        .select("src", F.col("doc_id").alias("dst"))
        .distinct()
        .localCheckpoint()
    )
    cross = verified(cross_candidates, settings, documents, old_signed, new_signed, cross_candidates.count())
    edges = inner.unionByName(cross).localCheckpoint()

    # Old kept documents rank before every new one: each is kept in the first round, and removes its new neighbours.
    ranks = _ranked_by_batch(old_kept_ranks, False).unionByName(_ranked_by_batch(new_ranks, True))
    decisions = keep_decisions(edges, ranks)
    labelled = _clusters(new, edges, old)
    # Per cluster, its new members: they add to the size of an old cluster they join.
    added = labelled.groupBy("cluster_id").agg(F.count("*").alias("added"))
    old_sizes = old.select("cluster_id", "cluster_size").distinct()
    new_rows = (
        labelled.join(added, "cluster_id")
        .join(old_sizes, "cluster_id", "left")
        .join(decisions, "doc_id", "left")
        .select(
            "doc_id",
            "cluster_id",
            (F.col("added") + F.coalesce("cluster_size", F.lit(0))).alias("cluster_size"),
            F.col("duplicate_of").isNull().alias("keep"),
            "duplicate_of",
        )
    )
    grown = old.join(added, "cluster_id").select(
        "doc_id",
        "cluster_id",
        (F.col("cluster_size") + F.col("added")).alias("cluster_size"),
        F.lit(None).cast("boolean").alias("keep"),
        F.lit(None).cast("string").alias("duplicate_of"),
    )
    changes = new_rows.unionByName(grown).localCheckpoint()
    (
        dedup.merge(changes, "t.doc_id = s.doc_id")
        .when_matched_update(set={"cluster_size": "s.cluster_size"})
        .when_not_matched_insert()
        .execute()
    )
    index.merge(new_signed, "t.doc_id = s.doc_id").when_not_matched_insert().execute()
    return IncrementalResult(
        decided=dedup.read().join(new.select("doc_id"), "doc_id", "left_semi"),
        candidates=inner_candidates.unionByName(cross_candidates),
        pairs=edges,
    )


def _ranked_by_batch(ranks: DataFrame, new: bool) -> DataFrame:
    """(doc_id, rank) ranked as a batch: every old document before every new one (false sorts first)."""
    return ranks.select("doc_id", F.struct(F.lit(new).alias("new"), F.col("rank").alias("order")).alias("rank"))


def _clusters(new: DataFrame, edges: DataFrame, old: DataFrame) -> DataFrame:
    """(doc_id, cluster_id) of the new documents: the old cluster their component reaches (the smallest cluster_id
    when several), else their component's smallest doc_id, else themselves."""
    # In this graph an old document stands for its whole cluster: its node is the cluster_id.
    to_cluster = old.select(F.col("doc_id").alias("src"), F.col("cluster_id"))
    cross_edges = edges.join(to_cluster, "src").select(F.col("cluster_id").alias("src"), "dst")
    inner_edges = edges.join(to_cluster, "src", "left_anti")
    components = connected_components(inner_edges.unionByName(cross_edges))
    old_nodes = cross_edges.select(F.col("src").alias("node")).distinct()
    attached = (
        components.join(old_nodes, "node", "left_semi").groupBy("component").agg(F.min("node").alias("old_cluster"))
    )
    return (
        new.select("doc_id")
        .join(components, new.doc_id == components.node, "left")
        .join(attached, "component", "left")
        .select("doc_id", F.coalesce("old_cluster", "component", "doc_id").alias("cluster_id"))
    )
