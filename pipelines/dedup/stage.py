"""The dedup stage: the documents the filter kept (silver.documents) -> silver.dedup (doc_id, cluster_id,
cluster_size, keep, duplicate_of), plus the signature index silver.dedup_signatures that incremental runs reuse.

MinHash signatures in Spark tasks; LSH bands grouped by their 64-bit key; each bucket becomes star edges from its
best-ranked member in the configured keep order (never all pairs, so a 10,000-copy bucket is 9,999 edges); candidate
pairs optionally verified. The keep decision is greedy in keep order over the verified edges (keep.py): a document
is kept unless a verified edge joins it to a better-ranked kept document, so every removed document names a kept
near-duplicate (duplicate_of), and chains (A~B~C with A and C far apart) no longer remove C. Clusters (cluster_id,
cluster_size) are the connected components of the verified edges: duplicate families for analysis, which may hold
several kept documents. Nothing depends on partitioning: ids, keys, edges and the keep order are all
content-defined.

`mode: full` decides the whole corpus afresh (and writes only the decisions that changed); `mode: incremental`
decides only documents not yet in silver.dedup against the stored index (see incremental.py), and falls back to a
full run, saying why, when it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines import reports
from pipelines.dedup.components import connected_components
from pipelines.dedup.incremental import deduplicate_batch, full_run_reason, new_documents
from pipelines.dedup.keep import keep_decisions
from pipelines.dedup.lsh import optimal_bands
from pipelines.dedup.settings import DedupConfig
from pipelines.dedup.steps import candidate_pairs, index_params, keep_ranks, signatures, verified
from pipelines.lakehouse import Table, quote
from pipelines.stage import StageContext, StageSummary
from pipelines.tables import SILVER_DEDUP, SILVER_DEDUP_SIGNATURES, SILVER_DOCUMENTS
from pipelines.tracking import StepTimer


@dataclass
class DedupSummary(StageSummary):
    mode: str  # what ran: full or incremental
    reason: str  # why a full run, when incremental was asked for
    documents: int  # documents decided by this run (in incremental mode: the new ones)
    kept: int
    removed: int
    clusters: int  # clusters of two or more documents
    largest_cluster: int
    candidate_pairs: int
    verified_pairs: int
    short_documents: int
    bands: int
    rows: int
    corpus_documents: int  # documents the filter kept
    table_rows: int  # rows of silver.dedup afterwards: one per kept document

    @property
    def reconciles(self) -> bool:
        return self.documents == self.kept + self.removed and self.table_rows == self.corpus_documents

    def format(self) -> str:
        share = self.removed / self.documents if self.documents else 0.0
        return "\n".join(
            [
                f"dedup run {self.run_id} ({self.mode}{', ' + self.reason if self.reason else ''}; "
                f"{self.timing()}), LSH {self.bands} bands x {self.rows} rows",
                f"documents {self.documents} = kept {self.kept} + removed {self.removed} ({share:.1%}); "
                f"{SILVER_DEDUP.name} {self.table_rows} rows for {self.corpus_documents} kept documents  "
                f"{'ok' if self.reconciles else 'MISMATCH'}",
                f"{self.clusters} duplicate clusters, largest {self.largest_cluster}; candidate pairs "
                f"{self.candidate_pairs}, verified {self.verified_pairs}; {self.short_documents} documents shorter "
                "than one shingle",
            ]
        )

    def metrics(self) -> dict[str, float]:
        metrics = {k: v for k, v in vars(self).items() if isinstance(v, (int, float)) and k != "seconds"}
        metrics["removed_share"] = self.removed / self.documents if self.documents else 0.0
        return metrics

    def report(self, context: StageContext) -> None:
        sizes = (
            context.lakehouse.table(SILVER_DEDUP)
            .read()
            .select("cluster_id", "cluster_size")
            .distinct()
            .groupBy("cluster_size")
            .count()
            .orderBy("cluster_size")
        ).toPandas()
        if len(sizes):
            labels = [str(size) for size in sizes["cluster_size"]]
            reports.bars(labels[:40], list(sizes["count"][:40]), "cluster_sizes", "clusters by size", "clusters")
            reports.log_table(sizes, "cluster_sizes")


def run_dedup(context: StageContext, settings: DedupConfig) -> DedupSummary:
    lakehouse, steps = context.lakehouse, context.steps
    silver, dedup, index = (lakehouse.table(t) for t in (SILVER_DOCUMENTS, SILVER_DEDUP, SILVER_DEDUP_SIGNATURES))
    bands, rows = optimal_bands(settings.threshold, settings.num_perm, settings.false_positive_weight)
    mlflow.log_params({f"dedup.{key}": value for key, value in vars(settings).items()} | {"bands": bands, "rows": rows})
    documents = silver.read().where(F.col("keep")).select("doc_id", "text", "n_chars", "quality_score")
    reason = ""
    if settings.mode == "incremental":
        reason = full_run_reason(documents, dedup, index, index_params(settings, bands, rows)) or ""
    mode = "incremental" if settings.mode == "incremental" and not reason else "full"
    mlflow.set_tags({"dataprep.dedup_mode": mode, **({"dataprep.dedup_full_run_reason": reason} if reason else {})})
    staging = lakehouse.staging(f"dedup_{context.run_id}")
    try:
        if mode == "full":
            decided, candidates, pairs, signed = _full(documents, dedup, index, settings, bands, rows, steps)
        else:
            with steps("signatures"):
                new = new_documents(documents, dedup).localCheckpoint()
                staging.overwrite(signatures(new, settings, bands, rows))
                signed = staging.read()
            with steps("decide"):
                result = deduplicate_batch(documents, new, signed, dedup, index, settings)
            decided, candidates, pairs = result.decided, result.candidates, result.pairs
        with steps("summary"):
            summary = _summarize(decided, candidates, pairs, signed, documents, dedup, bands, rows)
    finally:
        staging.drop()
    summary.mode, summary.reason = mode, reason
    return summary


def _full(
    documents: DataFrame,
    dedup: Table,
    index: Table,
    settings: DedupConfig,
    bands: int,
    rows: int,
    steps: StepTimer,
) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame]:
    """Every kept document decided afresh; the index rewritten with every signature."""
    with steps("signatures"):
        index.overwrite(SILVER_DEDUP_SIGNATURES.conform(signatures(documents, settings, bands, rows)))
        signed = index.read()
    with steps("pairs"):
        # Kept: the verification reads them, and the summary counts them (the bands grouped again otherwise).
        candidates = candidate_pairs(signed, keep_ranks(documents, settings)).localCheckpoint()
        pairs = verified(candidates, settings, documents, signed, signed, candidates.count()).localCheckpoint()
    with steps("decide"):
        clusters = assign_clusters(documents.select("doc_id", "n_chars", "quality_score"), pairs, settings)
        _replace_changed(dedup, SILVER_DEDUP.conform(clusters))
    return dedup.read(), candidates, pairs, signed


def _replace_changed(dedup: Table, decided: DataFrame) -> None:
    """silver.dedup becomes `decided`, writing only the rows that differ: a MERGE rather than an overwrite, so that
    its change feed names the decisions that changed and the tokenize run after a full run examines only those."""
    dedup.create_if_missing()
    columns = [name for name in SILVER_DEDUP.column_names if name != "doc_id"]
    differs = " OR ".join(f"NOT (t.{quote(name)} <=> s.{quote(name)})" for name in columns)
    (
        dedup.merge(decided, "t.doc_id = s.doc_id")
        .when_matched_update(set={name: f"s.{quote(name)}" for name in columns}, condition=differs)
        .when_not_matched_insert()
        .when_not_matched_by_source_delete()
        .execute()
    )


def assign_clusters(documents: DataFrame, pairs: DataFrame, settings: DedupConfig) -> DataFrame:
    """Every document with its cluster (smallest doc_id of its component; itself when alone), the keep flag and, for
    a removed document, the kept document it duplicates (keep.py)."""
    components = connected_components(pairs)
    clustered = documents.join(components, documents.doc_id == components.node, "left").select(
        "doc_id", "n_chars", "quality_score", F.coalesce("component", "doc_id").alias("cluster_id")
    )
    # Aggregated, not windowed: a million-copy cluster is combined map-side instead of sorted in one task.
    sizes = clustered.groupBy("cluster_id").agg(F.count("*").alias("cluster_size"))
    decisions = keep_decisions(pairs, keep_ranks(documents, settings))
    return (
        clustered.join(sizes, "cluster_id")
        .join(decisions, "doc_id", "left")
        .select(
            "doc_id",
            "n_chars",
            "quality_score",
            "cluster_id",
            "cluster_size",
            F.col("duplicate_of").isNull().alias("keep"),
            "duplicate_of",
        )
    )


def _summarize(
    decided: DataFrame,
    candidates: DataFrame,
    pairs: DataFrame,
    signed: DataFrame,
    documents: DataFrame,
    dedup: Table,
    bands: int,
    rows: int,
) -> DedupSummary:
    totals = decided.agg(
        F.count("*").alias("documents"),
        F.sum(F.col("keep").cast("long")).alias("kept"),
        F.countDistinct(F.when(F.col("cluster_size") > 1, F.col("cluster_id"))).alias("clusters"),
        F.max("cluster_size").alias("largest"),
    ).first()
    count, kept = totals["documents"], int(totals["kept"] or 0)
    return DedupSummary(
        mode="",
        reason="",
        documents=count,
        kept=kept,
        removed=count - kept,
        clusters=totals["clusters"],
        largest_cluster=int(totals["largest"] or 0),
        candidate_pairs=candidates.count(),
        verified_pairs=pairs.count(),
        short_documents=signed.where(F.col("short")).count(),
        bands=bands,
        rows=rows,
        corpus_documents=documents.count(),
        table_rows=dedup.read().count(),
    )
