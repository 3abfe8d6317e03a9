"""Spark steps shared by the full and the incremental dedup: signatures, LSH candidates, verification, keep order."""

from __future__ import annotations

import functools

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipelines.dedup.minhash import MinHasher, Shingling
from pipelines.dedup.settings import DedupConfig
from pipelines.dedup.tasks import SIGNATURE_COLUMNS, signature_partition
from pipelines.tables import SILVER_DEDUP_SIGNATURES


def index_params(settings: DedupConfig, bands: int, rows: int) -> str:
    """Everything a stored signature or band key depends on: an incremental run may only reuse equal ones."""
    exact = settings.verify == "exact"
    return (
        f"num_perm={settings.num_perm} seed={settings.seed} scheme={settings.scheme} "
        f"shingles={settings.shingle_size}-{settings.shingle_unit}-{settings.shingle_hash} bands={bands}x{rows} "
        f"shingle_hashes={str(exact).lower()}"
    )


def signatures(documents: DataFrame, settings: DedupConfig, bands: int, rows: int) -> DataFrame:
    """(doc_id, text) -> rows of silver.dedup_signatures."""
    task = functools.partial(
        signature_partition,
        shingling=Shingling(settings.shingle_size, settings.shingle_unit, settings.shingle_hash),
        hasher=MinHasher(settings.num_perm, settings.seed, settings.scheme),
        bands=bands,
        rows=rows,
        keep_shingle_hashes=settings.verify == "exact",
    )
    computed = SILVER_DEDUP_SIGNATURES.spark_schema(SIGNATURE_COLUMNS)
    signed = documents.select("doc_id", "text").mapInArrow(task, computed)
    return signed.withColumn("params", F.lit(index_params(settings, bands, rows)))


def band_rows(signed: DataFrame) -> DataFrame:
    return signed.select("doc_id", F.posexplode("band_keys").alias("band", "key"))


def candidate_pairs(signed: DataFrame) -> DataFrame:
    """(src, dst) pairs sharing a band key: each bucket is a star around its smallest doc_id (never all pairs)."""
    center = F.min("doc_id").over(Window.partitionBy("band", "key"))
    return (
        band_rows(signed)
        .withColumn("center", center)
        .where(F.col("doc_id") != F.col("center"))
        .select(F.col("center").alias("src"), F.col("doc_id").alias("dst"))
        .distinct()
    )


def verified(pairs: DataFrame, sources: DataFrame, destinations: DataFrame, settings: DedupConfig) -> DataFrame:
    """Pairs whose similarity reaches the threshold: the share of equal signature values (an estimate of Jaccard),
    or the exact Jaccard of the two shingle-hash sets. `sources`/`destinations`: signature rows of src and dst."""
    if settings.verify == "none":
        return pairs
    column = "shingle_hashes" if settings.verify == "exact" else "signature"
    left = sources.select(F.col("doc_id").alias("src"), F.col(column).alias("a"))
    right = destinations.select(F.col("doc_id").alias("dst"), F.col(column).alias("b"))
    if settings.verify == "exact":
        union = F.size(F.array_union("a", "b"))
        similarity = F.when(union > 0, F.size(F.array_intersect("a", "b")) / union).otherwise(F.lit(1.0))
    else:
        similarity = F.size(F.filter(F.arrays_zip("a", "b"), lambda pair: pair["a"] == pair["b"])) / settings.num_perm
    return pairs.join(left, "src").join(right, "dst").where(similarity >= settings.threshold).select("src", "dst")


def keep_order(settings: DedupConfig) -> list[Column]:
    """The configured keep order, then the smallest doc_id: a total order, so the choice never depends on layout."""
    return [_order_column(item) for item in settings.keep_order] + [F.col("doc_id").asc()]


def _order_column(item: str) -> Column:
    column, _, direction = item.partition(" ")
    return F.col(column).desc_nulls_last() if direction == "desc" else F.col(column).asc_nulls_last()
