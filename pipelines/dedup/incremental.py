"""Incremental dedup: a new batch of kept documents against the already-deduplicated corpus, reusing the stored
signatures and band keys (silver.dedup_signatures) instead of recomputing them.

The old corpus's decisions are frozen: a new document that matches an old cluster joins it and is removed (the
cluster already has its kept document; only the cluster's size changes). New documents that match only each other
form new clusters with the usual keep rule. When a new document bridges two old clusters they are not merged (that
would rewrite old decisions): it joins the one with the smallest cluster_id. A full run decides everything afresh.

An incremental run is only possible when the stored index is exactly the one of silver.dedup (same documents), was
computed with the same settings, and no deduplicated document has left silver.documents; otherwise `full_run_reason`
says why the stage must run in full.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.dedup.components import connected_components
from pipelines.dedup.settings import DedupConfig
from pipelines.dedup.steps import band_rows, candidate_pairs, keep_key, verified
from pipelines.lakehouse import Table


@dataclass
class IncrementalResult:
    decided: DataFrame  # silver.dedup rows of the new documents, after the MERGE
    candidates: DataFrame
    pairs: DataFrame


def full_run_reason(documents: DataFrame, dedup: Table, index: Table, params: str) -> str | None:
    """None when an incremental run can go ahead; else why the stage has to run in full."""
    if not dedup.exists() or not index.exists():
        return "no previous dedup result or signature index"
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
    new: DataFrame, new_signed: DataFrame, dedup: Table, index: Table, settings: DedupConfig
) -> IncrementalResult:
    """Decides the new documents (rows of `new`, signatures `new_signed`), MERGEs them into silver.dedup and their
    signatures into the index."""
    if not new_signed.limit(1).count():  # nothing new: commit nothing, so a rerun leaves every table as it was
        nothing = new_signed.select(F.col("doc_id").alias("src"), F.col("doc_id").alias("dst"))
        return IncrementalResult(decided=dedup.read().limit(0), candidates=nothing, pairs=nothing)
    old = dedup.read().select("doc_id", "cluster_id", "cluster_size")
    old_signed = index.read()

    # Candidates among the new documents, and between a new document and each old cluster sharing one of its
    # buckets (one representative per cluster and bucket: a 10,000-copy old cluster adds one edge, not 10,000).
    inner = verified(candidate_pairs(new_signed), new_signed, new_signed, settings)
    new_bands = band_rows(new_signed)
    old_bands = band_rows(old_signed).join(new_bands.select("band", "key").distinct(), ["band", "key"], "left_semi")
    representatives = (
        old_bands.join(old.select("doc_id", "cluster_id"), "doc_id")
        .groupBy("band", "key", "cluster_id")
        .agg(F.min("doc_id").alias("src"))
    )
    cross_candidates = (
        new_bands.join(representatives, ["band", "key"]).select("src", F.col("doc_id").alias("dst")).distinct()
    )
    cross = verified(cross_candidates, old_signed, new_signed, settings)
    # In the graph an old document stands for its whole cluster: its node is the cluster_id.
    to_cluster = old.select(F.col("doc_id").alias("src"), F.col("cluster_id"))
    cross_edges = cross.join(to_cluster, "src").select(F.col("cluster_id").alias("src"), "dst").localCheckpoint()
    edges = inner.unionByName(cross_edges).localCheckpoint()
    components = connected_components(edges)

    old_nodes = cross_edges.select(F.col("src").alias("node")).distinct()
    attached = (
        components.join(old_nodes, "node", "left_semi").groupBy("component").agg(F.min("node").alias("old_cluster"))
    )
    labelled = (
        new.select("doc_id", "n_chars", "quality_score")
        .join(components, new.doc_id == components.node, "left")
        .join(attached, "component", "left")
        .select(
            "doc_id",
            "n_chars",
            "quality_score",
            F.coalesce("old_cluster", "component", "doc_id").alias("cluster_id"),
            F.col("old_cluster").isNotNull().alias("joins_old"),
        )
    )
    # Per cluster, its new members and the first of them in keep order (which is kept if the cluster is new).
    added = labelled.groupBy("cluster_id").agg(
        F.count("*").alias("added"), F.min(keep_key(settings, labelled.schema))["doc_id"].alias("first")
    )
    old_sizes = old.select("cluster_id", "cluster_size").distinct()
    new_rows = (
        labelled.join(added, "cluster_id")
        .join(old_sizes, "cluster_id", "left")
        .select(
            "doc_id",
            "cluster_id",
            (F.col("added") + F.coalesce("cluster_size", F.lit(0))).alias("cluster_size"),
            (~F.col("joins_old") & (F.col("doc_id") == F.col("first"))).alias("keep"),
        )
    )
    grown = old.join(added, "cluster_id").select(
        "doc_id",
        "cluster_id",
        (F.col("cluster_size") + F.col("added")).alias("cluster_size"),
        F.lit(None).alias("keep"),
    )
    changes = new_rows.unionByName(grown.withColumn("keep", F.col("keep").cast("boolean"))).localCheckpoint()
    (
        dedup.merge(changes, "t.doc_id = s.doc_id")
        .when_matched_update(set={"cluster_size": "s.cluster_size"})
        .when_not_matched_insert()
        .execute()
    )
    index.merge(new_signed, "t.doc_id = s.doc_id").when_not_matched_insert().execute()
    return IncrementalResult(
        decided=dedup.read().join(new.select("doc_id"), "doc_id", "left_semi"),
        candidates=candidate_pairs(new_signed).unionByName(cross_candidates),
        pairs=edges,
    )
