"""Reading what changed in a source table since a stage caught up with it (pipelines/changes.py), on real Delta
tables: bronze.documents, declared with its change data feed, feeding a silver.documents that records progress."""

from datetime import datetime

import pytest

from pipelines import changes
from pipelines.lakehouse import CHANGE_FEED, Lakehouse
from pipelines.settings import LakehouseConfig
from pipelines.tables import BRONZE_DOCUMENTS, SILVER_DOCUMENTS


def bronze_rows(spark, *documents: tuple[str, str, str]):
    """(doc_id, locator, text) -> bronze.documents rows of source "s"."""
    rows = [
        (doc_id, "s", "text", locator, text, len(text), len(text), None, None, "run", datetime(2026, 1, 1))
        for doc_id, locator, text in documents
    ]
    return spark.createDataFrame(rows, BRONZE_DOCUMENTS.spark_schema())


@pytest.fixture
def tables(spark, tmp_path):
    lakehouse = Lakehouse(spark, LakehouseConfig(root=str(tmp_path)))
    bronze, silver = lakehouse.table(BRONZE_DOCUMENTS), lakehouse.table(SILVER_DOCUMENTS)
    bronze.create_if_missing()
    silver.create_if_missing()
    bronze.append(bronze_rows(spark, ("a", "1", "alpha"), ("b", "2", "beta"), ("c", "3", "gamma")))
    return bronze, silver


def net(bronze, caught_up):
    present, removed = changes.net_changes(bronze, caught_up, "doc_id")
    return sorted((row.doc_id, row.text) for row in present.collect()), sorted(r.doc_id for r in removed.collect())


def test_the_first_run_reads_the_whole_source_and_a_caught_up_one_reads_nothing(tables):
    bronze, silver = tables
    first = changes.catch_up(silver, bronze, "v1")
    assert first.whole and "records no version of bronze.documents" in first.reason
    changes.record(silver, bronze, first, "v1")
    again = changes.catch_up(silver, bronze, "v1")
    assert not again.whole and again.start == again.end + 1 == first.end + 1
    assert net(bronze, again) == ([], [])


def test_the_changes_since_the_recorded_version_are_read_as_they_ended(spark, tables):
    bronze, silver = tables
    changes.record(silver, bronze, changes.catch_up(silver, bronze, "v1"), "v1")
    # After the record: d inserted; b's locator changed content (new doc_id e, b gone); c deleted; f inserted then
    # deleted; a untouched.
    bronze.append(bronze_rows(spark, ("d", "4", "delta"), ("f", "6", "phi")))
    changed = bronze_rows(spark, ("e", "2", "beta, edited"))
    bronze.merge(changed, "t.locator = s.locator").when_matched_update(
        set={"doc_id": "s.doc_id", "text": "s.text"}
    ).execute()
    deleted = bronze_rows(spark, ("c", "3", ""), ("f", "6", ""))
    bronze.merge(deleted, "t.doc_id = s.doc_id").when_matched_delete().execute()
    caught_up = changes.catch_up(silver, bronze, "v1")
    assert not caught_up.whole and caught_up.end - caught_up.start == 2  # the three commits since
    assert net(bronze, caught_up) == ([("d", "delta"), ("e", "beta, edited")], ["b", "c", "f"])


def test_another_fingerprint_or_a_replaced_source_means_reading_it_whole(tables):
    bronze, silver = tables
    changes.record(silver, bronze, changes.catch_up(silver, bronze, "v1"), "v1")
    other = changes.catch_up(silver, bronze, "v2")
    assert other.whole and "'v1', now 'v2'" in other.reason
    ahead = changes.CatchUp(end=bronze.version() + 5, start=None)
    changes.record(silver, bronze, ahead, "v1")
    replaced = changes.catch_up(silver, bronze, "v1")
    assert replaced.whole and "replaced" in replaced.reason


def test_a_source_without_a_change_feed_is_read_whole_and_maintain_is_named(spark, tables):
    bronze, silver = tables
    changes.record(silver, bronze, changes.catch_up(silver, bronze, "v1"), "v1")
    bronze.set_properties({CHANGE_FEED: "false"})  # as a table made before the feed was declared
    caught_up = changes.catch_up(silver, bronze, "v1")
    assert caught_up.whole and "no change data feed (`dataprep maintain` turns it on)" in caught_up.reason
    assert bronze.apply_layout() == ["properties"]
    # Turning the feed off and on again changed no row: nothing to read (test_a_feed_that_does_not_reach_back... has
    # rows written meanwhile); from then on the feed is read.
    once = changes.catch_up(silver, bronze, "v1")
    assert once.unchanged and once.end > 1, once
    changes.record(silver, bronze, once, "v1")
    bronze.append(bronze_rows(spark, ("d", "4", "delta")))
    assert net(bronze, changes.catch_up(silver, bronze, "v1")) == ([("d", "delta")], [])


def test_a_feed_that_does_not_reach_back_means_reading_the_source_whole(spark, tables):
    bronze, silver = tables
    changes.record(silver, bronze, changes.catch_up(silver, bronze, "v1"), "v1")
    bronze.set_properties({CHANGE_FEED: "false"})
    bronze.append(bronze_rows(spark, ("d", "4", "delta")))
    bronze.set_properties({CHANGE_FEED: "true"})
    caught_up = changes.catch_up(silver, bronze, "v1")
    assert caught_up.whole and "does not cover versions" in caught_up.reason, caught_up


def test_changes_older_than_the_history_vacuum_keeps_mean_reading_the_source_whole(spark, tables):
    bronze, silver = tables
    changes.record(silver, bronze, changes.catch_up(silver, bronze, "v1"), "v1")
    bronze.append(bronze_rows(spark, ("d", "4", "delta")))
    # Within a week of history (the default): the feed. Kept for none (a VACUUM may have deleted its change files
    # already): the whole source, before anything is read.
    assert not changes.catch_up(silver, bronze, "v1", retain_hours=168).whole
    vacuumed = changes.catch_up(silver, bronze, "v1", retain_hours=0)
    assert vacuumed.whole and "beyond the 0 h of history VACUUM keeps" in vacuumed.reason, vacuumed
    # A long job's change files are older than its commit: a day short of the retention counts as beyond it.
    assert changes.catch_up(silver, bronze, "v1", retain_hours=23).whole
