"""The dedup stage on real Spark + Delta: clusters, keep rule, short documents, a 10,000-copy cluster, partitioning."""

import random

import pytest

from conftest import make_config
from pipelines.dedup.stage import run_dedup
from pipelines.lakehouse import Lakehouse

WORDS = [f"w{i}" for i in range(5000)]


def article(seed: int, length: int = 300) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(length))


def edited(text: str, edits: int, seed: int = 0) -> str:
    words = text.split()
    rng = random.Random(seed)
    for position in rng.sample(range(len(words)), edits):
        words[position] = "edited"
    return " ".join(words)


def write_silver(spark, config, rows):
    """rows: (doc_id, text, quality_score); written where the dedup stage reads silver.documents."""
    frame = spark.createDataFrame(
        [(doc_id, text, len(text), score, True) for doc_id, text, score in rows],
        "doc_id string, text string, n_chars long, quality_score double, keep boolean",
    )
    Lakehouse(spark, config.lakehouse).table("silver.documents").overwrite(frame)


def dedup_rows(spark, config) -> dict:
    return {r.doc_id: r for r in Lakehouse(spark, config.lakehouse).table("silver.dedup").read().collect()}


@pytest.fixture
def config(tmp_path):
    return make_config(str(tmp_path), [{"name": "s", "format": "text", "paths": [str(tmp_path)]}])


@pytest.mark.parametrize("verify", ["signature", "exact"])
def test_identical_and_near_identical_documents_cluster_and_the_best_is_kept(spark, tmp_path, verify):
    config = make_config(
        str(tmp_path), [{"name": "s", "format": "text", "paths": [str(tmp_path)]}], dedup={"verify": verify}
    )
    base = article(1)
    write_silver(
        spark,
        config,
        [
            ("a", base, 0.5),
            ("b", base, 0.9),  # identical, better quality: kept
            ("c", edited(base, 3), 0.1),  # ~96% of 5-gram shingles shared
            ("d", article(2), 0.5),  # unrelated
            ("e", edited(base, 60), 0.5),  # far below the 0.8 threshold
        ],
    )
    summary = run_dedup(spark, config)
    rows = dedup_rows(spark, config)
    assert {rows[d].cluster_id for d in "abc"} == {"a"} and rows["a"].cluster_size == 3
    assert [d for d in "abc" if rows[d].keep] == ["b"]
    assert rows["d"].cluster_id == "d" and rows["d"].keep and rows["d"].cluster_size == 1
    assert rows["e"].cluster_id == "e" and rows["e"].keep
    assert (summary.documents, summary.kept, summary.removed, summary.clusters) == (5, 3, 2, 1)
    assert summary.reconciles and (summary.bands, summary.rows) == (9, 13)


def test_empty_and_one_word_documents_are_kept_as_their_own_clusters(spark, config):
    write_silver(spark, config, [("a", "hello", 0.5), ("b", "hello", 0.4), ("c", "world", 0.5), ("d", "...", 0.5)])
    summary = run_dedup(spark, config)
    rows = dedup_rows(spark, config)
    assert rows["a"].cluster_id == rows["b"].cluster_id == "a" and rows["a"].keep and not rows["b"].keep
    assert rows["c"].keep and rows["c"].cluster_size == 1
    assert rows["d"].keep and rows["d"].cluster_size == 1  # no word at all: no shingle, never matched, not lost
    assert summary.short_documents == 4


def test_a_10000_copy_cluster_becomes_one_kept_document(spark, config):
    copy = article(7, 80)
    rows = [(f"copy{i:05d}", copy, 0.5) for i in range(10_000)]
    rows += [(f"other{i}", article(100 + i, 80), 0.5) for i in range(5)]
    write_silver(spark, config, rows)
    summary = run_dedup(spark, config)
    assert (summary.largest_cluster, summary.clusters, summary.kept) == (10_000, 1, 6)
    assert summary.candidate_pairs == 9_999  # star edges, not 50 million pairs
    kept = [d for d, r in dedup_rows(spark, config).items() if r.keep and d.startswith("copy")]
    assert kept == ["copy00000"]


def test_results_do_not_depend_on_partitioning(spark, config):
    base = article(3)
    rows = [(f"d{i:03d}", edited(base, i % 7, seed=i) if i % 3 else article(i), i / 100) for i in range(60)]
    write_silver(spark, config, rows)
    run_dedup(spark, config)
    first = {d: (r.cluster_id, r.cluster_size, r.keep) for d, r in dedup_rows(spark, config).items()}
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        frame = Lakehouse(spark, config.lakehouse).table("silver.documents").read().repartition(5)
        Lakehouse(spark, config.lakehouse).table("silver.documents").overwrite(frame.localCheckpoint())
        run_dedup(spark, config)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)
    assert {d: (r.cluster_id, r.cluster_size, r.keep) for d, r in dedup_rows(spark, config).items()} == first
    assert len({c for c, _, _ in first.values()}) < 60
