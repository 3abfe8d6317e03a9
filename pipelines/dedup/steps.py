"""Spark steps shared by the full and the incremental dedup: signatures, LSH candidates, verification, keep order.

Per-bucket and per-document choices are aggregations (groupBy, min over the keep order), never windows: a window
needs a whole group in one task, sorted, and one boilerplate bucket or a cluster of a million copies would then be
one task. An aggregation is combined map-side first, so a huge group reaches its final task as one partial result
per input partition.
"""

from __future__ import annotations

import functools

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, DoubleType, FloatType, IntegralType, StringType, StructType

from pipelines.dedup.minhash import MinHasher, Shingling
from pipelines.dedup.settings import DedupConfig
from pipelines.dedup.tasks import SHINGLE_HASH_SCHEMA, SIGNATURE_COLUMNS, shingle_hash_partition, signature_partition
from pipelines.tables import SILVER_DEDUP_SIGNATURES, spark_schema

# Up to this many candidate pairs, `verified` broadcasts their ids to pick their rows (at most two million 32-character
# ids for exact verification, which picks both ends of every pair: about 100 MB).
_BROADCAST_PAIRS = 1_000_000


def index_params(settings: DedupConfig, bands: int, rows: int) -> str:
    """Everything a stored signature or band key depends on: an incremental run may only reuse equal ones."""
    return (
        f"num_perm={settings.num_perm} seed={settings.seed} scheme={settings.scheme} "
        f"shingles={settings.shingle_size}-{settings.shingle_unit}-{settings.shingle_hash} bands={bands}x{rows}"
    )


def signatures(documents: DataFrame, settings: DedupConfig, bands: int, rows: int) -> DataFrame:
    """(doc_id, text) -> rows of silver.dedup_signatures."""
    task = functools.partial(
        signature_partition,
        shingling=_shingling(settings),
        hasher=MinHasher(settings.num_perm, settings.seed, settings.scheme),
        bands=bands,
        rows=rows,
    )
    computed = SILVER_DEDUP_SIGNATURES.spark_schema(SIGNATURE_COLUMNS)
    signed = documents.select("doc_id", "text").mapInArrow(task, computed)
    return signed.withColumn("params", F.lit(index_params(settings, bands, rows)))


def _shingling(settings: DedupConfig) -> Shingling:
    return Shingling(settings.shingle_size, settings.shingle_unit, settings.shingle_hash)


def band_rows(signed: DataFrame) -> DataFrame:
    """One row per band of each document: (doc_id, band, key), and `rank` when `signed` has it."""
    carried = [name for name in ("rank",) if name in signed.columns]
    return signed.select("doc_id", *carried, F.posexplode("band_keys").alias("band", "key"))


def candidate_pairs(signed: DataFrame, ranks: DataFrame) -> DataFrame:
    """(src, dst) pairs sharing a band key: each bucket is a star around its best-ranked member (never all pairs).
    `ranks`: (doc_id, rank) of every signed document (`keep_ranks`).

    The centre is the member the keep rule considers first, not an arbitrary one: in a bucket of exact copies it is
    then kept and every other member removed as its duplicate. Around the smallest doc_id instead, a better-ranked
    leaf would be kept, the centre removed, and the other leaves (with no edge to the kept one) all kept."""
    bands = band_rows(signed)
    # Almost every bucket holds one document and gives no pair. They are found by counting the (band, key) longs,
    # a hash aggregation; only the members of shared buckets then carry their rank, whose minimum (a struct, which
    # Spark can only aggregate by sorting) picks the centre. The members are materialised: two steps read them.
    shared = bands.groupBy("band", "key").count().where(F.col("count") > 1).drop("count")
    members = bands.join(shared, ["band", "key"], "left_semi").join(ranks, "doc_id").localCheckpoint()
    centres = members.groupBy("band", "key").agg(F.min("rank")["doc_id"].alias("center"))
    # Band keys are 64-bit hashes, never null, so an equi-join finds every bucket the grouping made.
    return (
        members.join(centres, ["band", "key"])
        .where(F.col("doc_id") != F.col("center"))
        .select(F.col("center").alias("src"), F.col("doc_id").alias("dst"))
        .distinct()
    )


def verified(
    pairs: DataFrame,
    settings: DedupConfig,
    texts: DataFrame,
    sources: DataFrame,
    destinations: DataFrame,
    pair_count: int | None = None,
) -> DataFrame:
    """Pairs whose similarity reaches the threshold: the exact Jaccard of the two sets of shingle hashes
    (`verify: exact`), or the share of equal signature values, an estimate of it (`verify: signature`).
    `texts`: (doc_id, text) of every document a pair may name, for exact verification; `sources`/`destinations`:
    signature rows of src and dst, for verification by signature. `pair_count`, when known: how many pairs there are
    (a few pick their rows before the joins, see below)."""
    if settings.verify == "none":
        return pairs
    if settings.verify == "exact":
        left, right, similarity = _exact_sides(pairs, settings, texts, pair_count)
    else:
        left, right, similarity = _signature_sides(pairs, settings, sources, destinations, pair_count)
    return pairs.join(left, "src").join(right, "dst").where(similarity >= settings.threshold).select("src", "dst")


def _exact_sides(
    pairs: DataFrame, settings: DedupConfig, texts: DataFrame, pair_count: int | None
) -> tuple[DataFrame, DataFrame, Column]:
    """(src, a) and (dst, b) rows of the pairs' shingle-hash sets, and their exact Jaccard."""
    # The sets are computed here, from the text of the documents that are in a pair (a small share of a corpus),
    # rather than stored in the index for every document: on the scale corpus that table was as large as the
    # text, and writing it and reading it back cost more than hashing the candidates' text a second time.
    ids = pairs.select(F.col("src").alias("doc_id")).union(pairs.select(F.col("dst").alias("doc_id"))).distinct()
    picked = texts.select("doc_id", "text").join(_small(ids, pair_count), "doc_id", "left_semi")
    task = functools.partial(shingle_hash_partition, shingling=_shingling(settings))
    # Materialised once: both sides of every pair read it.
    hashed = picked.mapInArrow(task, spark_schema(SHINGLE_HASH_SCHEMA)).localCheckpoint()
    left = hashed.select(F.col("doc_id").alias("src"), F.col("shingle_hashes").alias("a"))
    right = hashed.select(F.col("doc_id").alias("dst"), F.col("shingle_hashes").alias("b"))
    union = F.size(F.array_union("a", "b"))
    return left, right, F.when(union > 0, F.size(F.array_intersect("a", "b")) / union).otherwise(F.lit(1.0))


def _signature_sides(
    pairs: DataFrame, settings: DedupConfig, sources: DataFrame, destinations: DataFrame, pair_count: int | None
) -> tuple[DataFrame, DataFrame, Column]:
    """(src, a) and (dst, b) rows of the pairs' signatures, and the share of their values that agree."""
    left = sources.select(F.col("doc_id").alias("src"), F.col("signature").alias("a"))
    right = destinations.select(F.col("doc_id").alias("dst"), F.col("signature").alias("b"))
    # The joins shuffle both sides. Few pairs need few of the signature rows: picked first by a broadcast semi-join,
    # which reads the signatures without shuffling them, so only those rows' arrays are shuffled.
    left = left.join(_small(pairs.select("src").distinct(), pair_count), "src", "left_semi")
    right = right.join(_small(pairs.select("dst").distinct(), pair_count), "dst", "left_semi")
    agreeing = F.size(F.filter(F.arrays_zip("a", "b"), lambda pair: pair["a"] == pair["b"]))
    return left, right, agreeing / settings.num_perm


def _small(ids: DataFrame, pair_count: int | None) -> DataFrame:
    """`ids`, broadcast to the join when the pairs are known to be few enough (`_BROADCAST_PAIRS`)."""
    return F.broadcast(ids) if pair_count is not None and pair_count <= _BROADCAST_PAIRS else ids


def keep_ranks(documents: DataFrame, settings: DedupConfig) -> DataFrame:
    """(doc_id, n_chars, quality_score, ...) -> (doc_id, rank): the order in which documents are considered for
    keeping (`keep_key`), for the LSH star centres and the keep rule (keep.py)."""
    return documents.select("doc_id", keep_key(settings, documents.schema).alias("rank"))


def keep_key(settings: DedupConfig, schema: StructType) -> Column:
    """A struct whose ascending order is the keep order (the configured items, nulls last, then the smallest doc_id:
    a total order, so the choice never depends on layout). `min` of it over a group is its first document's key, and
    its `doc_id` field that document. `schema`: the frame's, whose column types say how to reverse a `desc`.
    """
    fields = []
    for position, item in enumerate(settings.keep_order):
        name, _, direction = item.partition(" ")
        fields.append(F.col(name).isNull().alias(f"null_{position}"))  # false sorts first: nulls last either way
        if direction == "desc":
            fields += _descending(name, schema[name].dataType, position)
        else:
            fields.append(F.col(name).alias(f"value_{position}"))
    return F.struct(*fields, F.col("doc_id"))


def _descending(name: str, data_type: DataType, position: int) -> list[Column]:
    """Fields whose ascending order is the column's descending order, exactly as Spark sorts it."""
    column = F.col(name)
    if isinstance(data_type, IntegralType):
        return [F.bitwise_not(column).alias(f"value_{position}")]  # ~x = -x - 1: reversed, and never overflows
    if isinstance(data_type, (FloatType, DoubleType)):
        # Spark sorts NaN above every number, so a descending order starts with it; -NaN is NaN, hence the flag.
        return [(~F.isnan(column)).alias(f"number_{position}"), (-column).alias(f"value_{position}")]
    if isinstance(data_type, StringType):
        # Strings sort by their UTF-8 bytes. Complementing every byte (as hex digits) reverses that order; the
        # closing "Z", above every hex digit, puts a string after the longer strings it is a prefix of.
        complement = F.translate(F.hex(column), "0123456789ABCDEF", "FEDCBA9876543210")
        return [F.concat(complement, F.lit("Z")).alias(f"value_{position}")]
    raise ValueError(f"dedup.keep_order: cannot order the {data_type.simpleString()} column {name!r} descending")
