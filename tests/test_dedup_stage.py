"""The dedup stage on real Spark + Delta: clusters, keep rule, short documents, a 10,000-copy cluster, partitioning."""

import random

import pytest

from dataprep.runner import run_stage
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
def config(tmp_path, make_config):
    return make_config(str(tmp_path), [{"name": "s", "format": "text", "paths": [str(tmp_path)]}])


@pytest.mark.parametrize("verify", ["signature", "exact"])
def test_identical_and_near_identical_documents_cluster_and_the_best_is_kept(spark, tmp_path, make_config, verify):
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
    summary = run_stage("dedup", spark, config)
    rows = dedup_rows(spark, config)
    assert {rows[d].cluster_id for d in "abc"} == {"a"} and rows["a"].cluster_size == 3
    assert [d for d in "abc" if rows[d].keep] == ["b"]
    assert rows["d"].cluster_id == "d" and rows["d"].keep and rows["d"].cluster_size == 1
    assert rows["e"].cluster_id == "e" and rows["e"].keep
    assert (summary.documents, summary.kept, summary.removed, summary.clusters) == (5, 3, 2, 1)
    # 0.8 and 128 permutations; exact verification leans to recall (false-positive weight 0.004, else 0.3)
    assert summary.reconciles and (summary.bands, summary.rows) == ((19, 6) if verify == "exact" else (11, 11))


def test_empty_and_one_word_documents_are_kept_as_their_own_clusters(spark, config):
    write_silver(spark, config, [("a", "hello", 0.5), ("b", "hello", 0.4), ("c", "world", 0.5), ("d", "...", 0.5)])
    summary = run_stage("dedup", spark, config)
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
    summary = run_stage("dedup", spark, config)
    assert (summary.largest_cluster, summary.clusters, summary.kept) == (10_000, 1, 6)
    assert summary.candidate_pairs == 9_999  # star edges, not 50 million pairs
    kept = [d for d, r in dedup_rows(spark, config).items() if r.keep and d.startswith("copy")]
    assert kept == ["copy00000"]


def test_results_do_not_depend_on_partitioning(spark, config):
    base = article(3)
    rows = [(f"d{i:03d}", edited(base, i % 7, seed=i) if i % 3 else article(i), i / 100) for i in range(60)]
    write_silver(spark, config, rows)
    run_stage("dedup", spark, config)
    first = {d: (r.cluster_id, r.cluster_size, r.keep) for d, r in dedup_rows(spark, config).items()}
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        frame = Lakehouse(spark, config.lakehouse).table("silver.documents").read().repartition(5)
        Lakehouse(spark, config.lakehouse).table("silver.documents").overwrite(frame.localCheckpoint())
        run_stage("dedup", spark, config)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)
    assert {d: (r.cluster_id, r.cluster_size, r.keep) for d, r in dedup_rows(spark, config).items()} == first
    assert len({c for c, _, _ in first.values()}) < 60


@pytest.fixture
def incremental_config(tmp_path, make_config):
    """`incremental_config(**dedup)`: this test's config with incremental dedup and the given dedup settings."""

    def build(**dedup):
        return make_config(
            str(tmp_path),
            [{"name": "s", "format": "text", "paths": [str(tmp_path)]}],
            dedup={"mode": "incremental", **dedup},
        )

    return build


def test_incremental_run_decides_only_the_new_documents_against_the_stored_index(spark, incremental_config):
    config = incremental_config()
    lakehouse = Lakehouse(spark, config.lakehouse)
    old = [("a", article(1), 0.5), ("b", article(2), 0.5), ("c", edited(article(1), 3), 0.1)]
    write_silver(spark, config, old)
    first = run_stage("dedup", spark, config)
    assert (first.mode, first.reason) == ("full", "no previous dedup result or signature index")
    before = dedup_rows(spark, config)
    assert before["a"].cluster_id == before["c"].cluster_id == "a" and before["a"].keep

    new = [
        ("0d", article(1), 0.99),  # copy of an old document, better quality and a smaller id: still removed
        ("e", article(3), 0.4),
        ("f", edited(article(3), 2), 0.8),  # near-duplicate of another new document
        ("g", "", 0.5),
    ]
    write_silver(spark, config, old + new)
    second = run_stage("dedup", spark, config)
    assert second.mode == "incremental" and second.reconciles, second.format()
    assert (second.documents, second.kept, second.removed) == (4, 2, 2)
    after = dedup_rows(spark, config)
    assert (after["0d"].cluster_id, after["0d"].keep, after["0d"].cluster_size) == ("a", False, 3)
    assert after["a"].cluster_size == after["c"].cluster_size == 3
    assert {k: (r.cluster_id, r.keep) for k, r in after.items() if k in before} == {
        k: (r.cluster_id, r.keep) for k, r in before.items()
    }
    assert after["e"].cluster_id == after["f"].cluster_id == "e" and after["f"].keep and not after["e"].keep
    assert (after["g"].cluster_id, after["g"].keep, after["g"].cluster_size) == ("g", True, 1)
    index = lakehouse.table("silver.dedup_signatures")
    assert index.read().count() == 7

    versions = (lakehouse.table("silver.dedup").version(), index.version())
    rerun = run_stage("dedup", spark, config)
    assert (rerun.mode, rerun.documents) == ("incremental", 0) and rerun.reconciles
    assert (lakehouse.table("silver.dedup").version(), index.version()) == versions


def test_incremental_run_falls_back_to_full_when_the_index_cannot_be_reused(spark, incremental_config):
    config = incremental_config()
    rows = [("a", article(1), 0.5), ("b", article(1), 0.6), ("c", article(2), 0.5)]
    write_silver(spark, config, rows)
    run_stage("dedup", spark, config)

    smaller = incremental_config(num_perm=64)
    changed = run_stage("dedup", spark, smaller)
    assert changed.mode == "full" and changed.reason.startswith("settings changed"), changed.format()

    write_silver(spark, config, rows[1:])
    shrunk = run_stage("dedup", spark, smaller)
    assert shrunk.mode == "full" and "1 deduplicated documents are no longer kept" in shrunk.reason
    assert set(dedup_rows(spark, config)) == {"b", "c"} and shrunk.reconciles
