"""The dedup stage: the documents the filter kept (silver.documents) -> silver.dedup (doc_id, cluster_id,
cluster_size, keep).

MinHash signatures in Spark tasks; LSH bands grouped by their 64-bit key; each bucket becomes star edges from its
smallest doc_id (never all pairs, so a 10,000-copy bucket is 9,999 edges); candidate pairs optionally verified on
their signatures; connected components with large-star/small-star; one document kept per cluster by a configured,
deterministic order. Nothing depends on partitioning: ids, keys, edges and the keep order are all content-defined.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import mlflow
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BooleanType, LongType, StringType, StructField, StructType

from pipelines.config import DedupConfig, PipelineConfig
from pipelines.dedup.components import connected_components
from pipelines.dedup.lsh import optimal_bands
from pipelines.dedup.minhash import MinHasher, Shingling
from pipelines.dedup.tasks import signature_partition
from pipelines.lakehouse import Lakehouse
from pipelines.schemas import SILVER_DEDUP
from pipelines.tracking import stage_run

SILVER = "silver.documents"
DEDUP = "silver.dedup"
_SIGNATURES = StructType(
    [
        StructField("doc_id", StringType(), False),
        StructField("signature", ArrayType(LongType()), False),
        StructField("band_keys", ArrayType(LongType()), False),
        StructField("n_shingles", LongType(), False),
        StructField("short", BooleanType(), False),
        StructField("shingle_hashes", ArrayType(LongType()), False),
    ]
)


@dataclass
class DedupSummary:
    run_id: str
    documents: int
    kept: int
    removed: int
    clusters: int  # clusters of two or more documents
    largest_cluster: int
    candidate_pairs: int
    verified_pairs: int
    short_documents: int
    bands: int
    rows: int
    seconds: float

    @property
    def reconciles(self) -> bool:
        return self.documents == self.kept + self.removed

    def format(self) -> str:
        share = self.removed / self.documents if self.documents else 0.0
        return "\n".join(
            [
                f"dedup run {self.run_id} ({self.seconds:.1f} s), LSH {self.bands} bands x {self.rows} rows",
                f"documents {self.documents} = kept {self.kept} + removed {self.removed} ({share:.1%})  "
                f"{'ok' if self.reconciles else 'MISMATCH'}",
                f"{self.clusters} duplicate clusters, largest {self.largest_cluster}; candidate pairs "
                f"{self.candidate_pairs}, verified {self.verified_pairs}; {self.short_documents} documents shorter "
                "than one shingle",
            ]
        )


def run_dedup(spark: SparkSession, config: PipelineConfig) -> DedupSummary:
    lakehouse = Lakehouse(spark, config.lakehouse)
    silver, dedup = lakehouse.table(SILVER), lakehouse.table(DEDUP)
    if not silver.exists():
        raise FileNotFoundError(f"{silver.label} does not exist yet: run the filter stage first")
    settings = config.dedup
    bands, rows = optimal_bands(settings.threshold, settings.num_perm, settings.false_positive_weight)
    params = {f"dedup.{key}": value for key, value in vars(settings).items()} | {"bands": bands, "rows": rows}
    with stage_run(config, "dedup", params) as run:
        started = time.monotonic()
        documents = silver.read().where(F.col("keep")).select("doc_id", "text", "n_chars", "quality_score")
        staging = lakehouse.table(f"staging.dedup_{run.info.run_id}")
        try:
            staging.overwrite(signatures(documents, settings, bands, rows))
            signed = staging.read()
            candidates = candidate_pairs(signed)
            pairs = verified(candidates, signed, settings) if settings.verify != "none" else candidates
            pairs = pairs.localCheckpoint()
            clusters = assign_clusters(documents.select("doc_id", "n_chars", "quality_score"), pairs, settings)
            dedup.overwrite(clusters.select(*[F.col(f.name).cast(f.dataType) for f in SILVER_DEDUP.fields]))
            summary = _summarize(dedup.read(), candidates, pairs, signed, run.info.run_id, bands, rows, started)
        finally:
            staging.drop()
        mlflow.log_metrics({k: v for k, v in vars(summary).items() if isinstance(v, (int, float))})
        mlflow.set_tag("dataprep.reconciles", str(summary.reconciles).lower())
    return summary


def signatures(documents: DataFrame, settings: DedupConfig, bands: int, rows: int) -> DataFrame:
    task = functools.partial(
        signature_partition,
        shingling=Shingling(settings.shingle_size, settings.shingle_unit),
        hasher=MinHasher(settings.num_perm, settings.seed, settings.scheme),
        bands=bands,
        rows=rows,
        keep_shingle_hashes=settings.verify == "exact",
    )
    return documents.select("doc_id", "text").mapInArrow(task, _SIGNATURES)


def candidate_pairs(signed: DataFrame) -> DataFrame:
    """(src, dst) pairs sharing a band key: each bucket is a star around its smallest doc_id."""
    band_rows = signed.select("doc_id", F.posexplode("band_keys").alias("band", "key"))
    center = F.min("doc_id").over(Window.partitionBy("band", "key"))
    return (
        band_rows.withColumn("center", center)
        .where(F.col("doc_id") != F.col("center"))
        .select(F.col("center").alias("src"), F.col("doc_id").alias("dst"))
        .distinct()
    )


def verified(pairs: DataFrame, signed: DataFrame, settings: DedupConfig) -> DataFrame:
    """Pairs whose similarity reaches the threshold: the share of equal signature values (an estimate of Jaccard),
    or the exact Jaccard of the two shingle-hash sets."""
    column = "shingle_hashes" if settings.verify == "exact" else "signature"
    left = signed.select(F.col("doc_id").alias("src"), F.col(column).alias("a"))
    right = signed.select(F.col("doc_id").alias("dst"), F.col(column).alias("b"))
    if settings.verify == "exact":
        union = F.size(F.array_union("a", "b"))
        similarity = F.when(union > 0, F.size(F.array_intersect("a", "b")) / union).otherwise(F.lit(1.0))
    else:
        similarity = F.size(F.filter(F.arrays_zip("a", "b"), lambda pair: pair["a"] == pair["b"])) / settings.num_perm
    return pairs.join(left, "src").join(right, "dst").where(similarity >= settings.threshold).select("src", "dst")


def assign_clusters(documents: DataFrame, pairs: DataFrame, settings: DedupConfig) -> DataFrame:
    """Every document with its cluster (smallest doc_id of its component; itself when alone) and the keep flag."""
    components = connected_components(pairs)
    clustered = documents.join(components, documents.doc_id == components.node, "left").select(
        "doc_id", "n_chars", "quality_score", F.coalesce("component", "doc_id").alias("cluster_id")
    )
    size = F.count("*").over(Window.partitionBy("cluster_id"))
    order = [_order_column(item) for item in settings.keep_order] + [F.col("doc_id").asc()]
    rank = F.row_number().over(Window.partitionBy("cluster_id").orderBy(*order))
    return clustered.withColumn("cluster_size", size).withColumn("keep", rank == 1)


def _order_column(item: str):
    column, _, direction = item.partition(" ")
    return F.col(column).desc_nulls_last() if direction == "desc" else F.col(column).asc_nulls_last()


def _summarize(
    result: DataFrame,
    candidates: DataFrame,
    pairs: DataFrame,
    signed: DataFrame,
    run_id: str,
    bands: int,
    rows: int,
    started: float,
) -> DedupSummary:
    totals = result.agg(
        F.count("*").alias("documents"),
        F.sum(F.col("keep").cast("long")).alias("kept"),
        F.countDistinct(F.when(F.col("cluster_size") > 1, F.col("cluster_id"))).alias("clusters"),
        F.max("cluster_size").alias("largest"),
    ).first()
    documents, kept = totals["documents"], int(totals["kept"] or 0)
    return DedupSummary(
        run_id=run_id,
        documents=documents,
        kept=kept,
        removed=documents - kept,
        clusters=totals["clusters"],
        largest_cluster=int(totals["largest"] or 0),
        candidate_pairs=candidates.count(),
        verified_pairs=pairs.count(),
        short_documents=signed.where(F.col("short")).count(),
        bands=bands,
        rows=rows,
        seconds=time.monotonic() - started,
    )
