"""The dedup stage on real Spark + Delta: clusters, keep rule, short documents, a 10,000-copy cluster, partitioning."""

import random

import pytest

from dataprep.runner import run_stage
from pipelines.dedup.minhash import Shingling
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


def with_words(text: str, positions: list[int]) -> str:
    """`text` with the words at `positions` replaced: each replacement breaks the 5 shingles that cover it."""
    words = text.split()
    for position in positions:
        words[position] = f"new{position}"
    return " ".join(words)


def jaccard(a: str, b: str) -> float:
    """Exact Jaccard of the two documents' shingle sets (the stage's word 5-grams)."""
    shingling = Shingling()
    left, right = (set(shingling.shingles(text)[0]) for text in (a, b))
    return len(left & right) / len(left | right)


def chain() -> tuple[str, str, str]:
    """A ~ B ~ C at Jaccard 0.84 each, A and C at 0.71: five words of B replaced at one end for A, the other for C."""
    b = article(11)
    a, c = with_words(b, [10, 40, 70, 100, 130]), with_words(b, [160, 190, 220, 250, 280])
    assert jaccard(a, b) > 0.8 and jaccard(b, c) > 0.8 and jaccard(a, c) < 0.75
    return a, b, c


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
    assert rows["a"].duplicate_of == rows["c"].duplicate_of == "b" and rows["b"].duplicate_of is None
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


def test_an_exact_copy_bucket_keeps_its_best_ranked_member_even_if_not_its_smallest_doc_id(spark, config):
    copy = article(8, 80)
    write_silver(spark, config, [(f"copy{i:02d}", copy, 0.9 if i == 17 else 0.5) for i in range(30)])
    summary = run_stage("dedup", spark, config)
    rows = dedup_rows(spark, config)
    assert [d for d, r in rows.items() if r.keep] == ["copy17"]
    assert {r.duplicate_of for d, r in rows.items() if d != "copy17"} == {"copy17"}
    assert summary.candidate_pairs == 29 and rows["copy17"].cluster_id == "copy00"


def test_a_chain_keeps_both_ends_when_they_are_not_near_duplicates(spark, config):
    """A ~ B ~ C with A and C below the threshold and A first in keep order: B is removed as A's duplicate, and C,
    which no kept document is a near-duplicate of, is kept. All three stay one cluster (a family)."""
    a, b, c = chain()
    write_silver(spark, config, [("a", a, 0.9), ("b", b, 0.5), ("c", c, 0.1)])
    summary = run_stage("dedup", spark, config)
    rows = dedup_rows(spark, config)
    assert {d: (r.keep, r.duplicate_of) for d, r in rows.items()} == {
        "a": (True, None),
        "b": (False, "a"),
        "c": (True, None),
    }
    assert {(r.cluster_id, r.cluster_size) for r in rows.values()} == {("a", 3)}
    assert (summary.kept, summary.removed, summary.clusters) == (2, 1, 1)


def test_every_removed_document_names_a_kept_near_duplicate(spark, config):
    """Families of chained edits (each edit of the previous one, so far members fall below the threshold) and their
    copies: each removed document's duplicate_of is kept and within the threshold of it (exact Jaccard here)."""
    rng, rows = random.Random(4), []
    for family in range(4):
        text = article(20 + family)
        for step in range(5):
            rows.append((f"f{family}v{step}", text, rng.random()))
            if step % 2:
                rows.append((f"f{family}copy{step}", text, rng.random()))
            text = with_words(text, rng.sample(range(5, 295, 6), 4))
    write_silver(spark, config, rows)
    run_stage("dedup", spark, config)
    decided, texts = dedup_rows(spark, config), {doc_id: text for doc_id, text, _ in rows}
    removed = {d: r.duplicate_of for d, r in decided.items() if not r.keep}
    assert removed and all(decided[kept].keep for kept in removed.values())
    assert all(jaccard(texts[d], texts[kept]) >= 0.8 for d, kept in removed.items())
    kept = sorted(d for d, r in decided.items() if r.keep)
    per_family = [sum(d.startswith(f"f{f}") for d in kept) for f in range(4)]
    assert max(per_family) > 1, per_family  # chains: a family keeps the members no kept document stands for


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
    assert after["0d"].duplicate_of == "a" and after["e"].duplicate_of == "f"
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


def test_incremental_new_documents_are_removed_only_as_duplicates_of_kept_documents(spark, incremental_config):
    """Old: A (kept) ~ B (removed). New: C, a near-duplicate of B only, is kept (nothing kept stands for it); a copy
    of the old kept D is removed as D's duplicate, though it scores higher."""
    config = incremental_config()
    a, b, c = chain()
    old = [("a", a, 0.9), ("b", b, 0.5), ("d", article(12), 0.5)]
    write_silver(spark, config, old)
    run_stage("dedup", spark, config)
    assert {d: r.keep for d, r in dedup_rows(spark, config).items()} == {"a": True, "b": False, "d": True}

    write_silver(spark, config, old + [("c", c, 0.1), ("d2", article(12), 0.99)])
    summary = run_stage("dedup", spark, config)
    assert summary.mode == "incremental" and (summary.kept, summary.removed) == (1, 1), summary.format()
    rows = dedup_rows(spark, config)
    assert (rows["c"].keep, rows["c"].duplicate_of) == (True, None)
    assert (rows["d2"].keep, rows["d2"].duplicate_of, rows["d2"].cluster_id, rows["d"].cluster_size) == (
        False,
        "d",
        "d",
        2,
    )


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

    # An index written by an earlier version (it stored every document's shingle hashes) is rebuilt, not extended.
    index = Lakehouse(spark, config.lakehouse).table("silver.dedup_signatures")
    spark.sql(f"ALTER TABLE {index.sql_name} ADD COLUMNS (shingle_hashes array<int>)")
    rebuilt = run_stage("dedup", spark, smaller)
    assert rebuilt.mode == "full" and "was built by another version" in rebuilt.reason, rebuilt.format()
    assert "shingle_hashes" not in index.read().columns and rebuilt.reconciles
