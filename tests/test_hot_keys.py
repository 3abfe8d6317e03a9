"""No step puts a whole group in one task: per-bucket, per-cluster, per-content and per-locator choices are
aggregations, not windows, and choose exactly what the windows they replaced chose (each test states that window
formulation and compares), on groups with ties, nulls, NaN, one 5,000-member group and singletons."""

import contextlib
import io
import pathlib
import random
import re

import pytest
from pyspark.sql import Window
from pyspark.sql import functions as F

from pipelines.dedup.settings import DedupConfig
from pipelines.dedup.stage import assign_clusters
from pipelines.dedup.steps import candidate_pairs, keep_key, keep_ranks
from pipelines.filter.decide import with_exact_duplicates
from pipelines.ingest.stage import RECORD_SCHEMA, separate_duplicate_locators

BIG = 5_000
KEEP_ORDERS = [
    ("quality_score desc", "n_chars desc"),  # the default
    ("n_chars asc", "quality_score asc"),
    ("doc_id desc",),
    ("quality_score asc", "doc_id desc"),
]


def window_keep_order(keep_order: tuple[str, ...]) -> list:
    """The keep order as the window used to sort it: the configured items, nulls last, then the smallest doc_id."""
    columns = []
    for item in keep_order:
        name, _, direction = item.partition(" ")
        columns.append(F.col(name).desc_nulls_last() if direction == "desc" else F.col(name).asc_nulls_last())
    return columns + [F.col("doc_id").asc()]


def plan(frame) -> str:
    text = io.StringIO()
    with contextlib.redirect_stdout(text):  # pyspark prints the plan with Python's print
        frame.explain(mode="formatted")
    return text.getvalue()


def assert_no_window(frame) -> None:
    text = plan(frame)
    assert "Window" not in text, text


def doc_ids(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    """Distinct ids of 1-6 characters, some multi-byte in UTF-8 and many prefixes of others (a descending string
    order must put "ab" before "a")."""
    alphabet = "0123456789abcdef\u00e9\u20ac"
    ids = []
    while len(ids) < count:
        candidate = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        if candidate not in taken:
            taken.add(candidate)
            ids.append(candidate)
    return ids


@pytest.fixture(scope="module")
def members(spark):
    """(doc_id, cluster_id, n_chars, quality_score): one 5,000-member cluster, clusters of 2-6, all-null, all-NaN
    and prefix-id clusters, and singletons; quality_score mixes null, NaN, 0.0, -0.0 and ties; cluster_id is the
    smallest doc_id, as connected components labels clusters."""
    rng = random.Random(7)
    taken = {"a", "ab", "abc"}
    groups = [doc_ids(rng, BIG, taken)] + [doc_ids(rng, rng.randint(2, 6), taken) for _ in range(60)]
    groups += [doc_ids(rng, 1, taken) for _ in range(100)]
    scores = [None, float("nan"), 0.0, -0.0, 0.5, 1.0]
    rows = [(i, rng.choice((1, 2, 3)), rng.choice(scores)) for group in groups for i in group]
    all_null, all_nan, prefixes = doc_ids(rng, 4, taken), doc_ids(rng, 4, taken), ["a", "ab", "abc"]
    rows += [(i, 5, None) for i in all_null] + [(i, 5, float("nan")) for i in all_nan] + [(i, 5, 0.5) for i in prefixes]
    groups += [all_null, all_nan, prefixes]
    cluster_of = {doc_id: min(group) for group in groups for doc_id in group}
    return spark.createDataFrame(
        [(doc_id, cluster_of[doc_id], n_chars, score) for doc_id, n_chars, score in rows],
        "doc_id string, cluster_id string, n_chars long, quality_score double",
    ).localCheckpoint()


@pytest.mark.parametrize("keep_order", KEEP_ORDERS)
def test_the_minimum_keep_key_is_the_first_document_in_keep_order(members, keep_order):
    settings = DedupConfig(keep_order=keep_order)
    chosen = members.groupBy("cluster_id").agg(F.min(keep_key(settings, members.schema))["doc_id"].alias("kept"))
    rank = F.row_number().over(Window.partitionBy("cluster_id").orderBy(*window_keep_order(keep_order)))
    first = members.withColumn("rank", rank).where("rank = 1").select("cluster_id", F.col("doc_id").alias("kept"))
    assert sorted(chosen.collect()) == sorted(first.collect())


def test_assign_clusters_sizes_and_keeps_as_the_window_did(members):
    """Each cluster's edges are a star around its first document in keep order (as LSH buckets now are), so the
    greedy keep rule keeps exactly that document and removes the others as its duplicates, as the window chose."""
    settings = DedupConfig(keep_order=KEEP_ORDERS[3])
    by_cluster = Window.partitionBy("cluster_id")
    rank = F.row_number().over(by_cluster.orderBy(*window_keep_order(settings.keep_order)))
    first = F.first("doc_id").over(by_cluster.orderBy(*window_keep_order(settings.keep_order)))
    ranked = members.withColumn("rank", rank).withColumn("first", first)
    stars = ranked.where(F.col("rank") > 1).select(F.col("first").alias("src"), F.col("doc_id").alias("dst"))
    clusters = assign_clusters(members.drop("cluster_id"), stars, settings)
    windowed = ranked.select(
        "doc_id",
        "n_chars",
        "quality_score",
        "cluster_id",
        F.count("*").over(by_cluster).alias("cluster_size"),
        (F.col("rank") == 1).alias("keep"),
        F.when(F.col("rank") > 1, F.col("first")).alias("duplicate_of"),
    )
    assert clusters.columns == windowed.columns
    assert clusters.exceptAll(windowed).isEmpty() and windowed.exceptAll(clusters).isEmpty()
    assert_no_window(clusters)


def test_only_the_prefix_sums_use_a_window():
    """A window needs its whole group in one task; the pipeline's only one is partitioned by a Spark partition id
    (pipelines/prefix_sums.py). The incremental dedup's choices are the full dedup's (`keep_key`), and
    tests/test_dedup_stage.py checks its decisions."""
    root = pathlib.Path(__file__).resolve().parents[1] / "pipelines"
    users = sorted(
        str(path.relative_to(root)) for path in root.rglob("*.py") if re.search(r"\bWindow\b", path.read_text())
    )
    assert users == ["prefix_sums.py"], users


def test_candidate_pairs_are_the_stars_the_window_drew(spark):
    """Band 0: one 5,000-document bucket and buckets of 3; band 1: buckets of a few and of one; documents without
    band keys. Each star's centre is the bucket's first document in keep order (scores with ties, nulls, NaN)."""
    rng = random.Random(3)
    scores = [None, float("nan"), 0.0, 0.5, 1.0]
    rows = [(f"d{i:05d}", [7, rng.randint(0, 3_000)]) for i in rng.sample(range(BIG), BIG)]
    rows += [(f"e{i}", [10_000 + i // 3, 20_000 + i]) for i in range(100)] + [("short", [])]
    documents = spark.createDataFrame(
        [(doc_id, keys, rng.choice((1, 2, 3)), rng.choice(scores)) for doc_id, keys in rows],
        "doc_id string, band_keys array<long>, n_chars long, quality_score double",
    )
    settings = DedupConfig()
    members = documents.select("doc_id", "n_chars", "quality_score", F.posexplode("band_keys").alias("band", "key"))
    bucket = Window.partitionBy("band", "key").orderBy(*window_keep_order(settings.keep_order))
    center = F.first("doc_id").over(bucket)
    windowed = (
        members.withColumn("center", center)
        .where(F.col("doc_id") != F.col("center"))
        .select(F.col("center").alias("src"), F.col("doc_id").alias("dst"))
        .distinct()
    )
    pairs = candidate_pairs(documents.select("doc_id", "band_keys"), keep_ranks(documents, settings))
    assert sorted(pairs.collect()) == sorted(windowed.collect())
    big_center = members.where("band = 0 AND key = 7").orderBy(*window_keep_order(settings.keep_order)).first()
    assert pairs.where(F.col("src") == big_center["doc_id"]).count() == BIG - 1
    assert_no_window(pairs)


def test_exact_duplicates_point_at_the_copy_the_window_chose(spark):
    """5,000 copies of one text, small groups, unique texts, and null hashes (one group, as in a window)."""
    rng = random.Random(5)
    hashes = ["h-big"] * BIG + [f"h{rng.randint(0, 300)}" for _ in range(600)] + [None] * 3
    rows = [(f"doc{i}", "text", content_hash, "stale") for i, content_hash in enumerate(hashes)]
    rng.shuffle(rows)
    frame = spark.createDataFrame(rows, "doc_id string, kind string, content_hash string, duplicate_of string")
    first = F.min("doc_id").over(Window.partitionBy("content_hash"))
    windowed = frame.withColumn("duplicate_of", F.when(first != F.col("doc_id"), first))
    marked = with_exact_duplicates(frame)
    assert marked.columns == windowed.columns
    assert sorted(marked.collect()) == sorted(windowed.collect())
    assert marked.where(F.col("content_hash").isNull() & F.col("duplicate_of").isNotNull()).count() == 2
    assert_no_window(marked)


def test_repeated_locators_keep_the_occurrence_the_window_kept(spark):
    """Source "ids": one id 5,000 times across files, ids twice, unique ids; source "lines" is not checked."""
    rng = random.Random(9)
    origins = ["b.jsonl", "a.jsonl", "a/z.jsonl", "c.jsonl"]
    places = rng.sample([(origin, offset) for origin in origins for offset in range(0, 40_000, 7)], BIG + 400)
    locators = ["hot"] * BIG + [f"twice{i}" for i in range(100)] * 2 + [f"id{i}" for i in range(200)]
    fields = RECORD_SCHEMA.fieldNames()

    def record(source: str, locator: str, origin: str, offset: int, is_document: str = "y") -> tuple:
        values = dict(
            is_document=is_document,
            source=source,
            kind="text",
            locator=locator,
            doc_id=f"{source}/{locator}/{origin}@{offset}",
            text=f"text at {origin}@{offset}",
            origin=origin,
            offset=offset,
        )
        if is_document == "n":
            values |= {"reason": "malformed_json", "detail": "bad", "raw_excerpt": "{"}
        return tuple(values.get(name) for name in fields)

    rows = [record("ids", locator, *place) for locator, place in zip(locators, places, strict=True)]
    rows += [record("lines", f"a.jsonl@{i}", "a.jsonl", i) for i in range(50)]
    rows += [record("ids", "bad", "a.jsonl", 1, is_document="n")]
    records = spark.createDataFrame(rows, RECORD_SCHEMA)

    kept, rejected = separate_duplicate_locators(records, ["ids"])

    documents = records.where(F.col("is_document") == "y")
    checked = documents.where(F.col("source") == "ids")
    order = Window.partitionBy("source", "locator").orderBy("origin", "offset")
    ranked = checked.withColumn("_rank", F.row_number().over(order)).withColumn(
        "_first", F.first(F.concat_ws("@", "origin", F.col("offset").cast("string"))).over(order)
    )
    windowed_kept = documents.where(F.col("source") != "ids").unionByName(
        ranked.where(F.col("_rank") == 1).drop("_rank", "_first")
    )
    windowed_duplicates = ranked.where(F.col("_rank") > 1).select(
        "source",
        "locator",
        F.lit("duplicate_locator").alias("reason"),
        F.concat(F.lit("same locator as the document kept at "), F.col("_first")).alias("detail"),
        F.substring("text", 1, 256).alias("raw_excerpt"),
    )
    windowed_rejected = records.where(F.col("is_document") == "n").select(*windowed_duplicates.columns)
    assert kept.columns == windowed_kept.columns and rejected.columns == windowed_duplicates.columns
    assert sorted(kept.collect()) == sorted(windowed_kept.collect())
    assert sorted(rejected.collect()) == sorted(windowed_rejected.unionByName(windowed_duplicates).collect())
    assert rejected.where(F.col("locator") == "hot").count() == BIG - 1
    assert_no_window(kept)
    assert_no_window(rejected)
