"""Table layout and `dataprep maintain` on real Spark + Delta: declared clustering keys and deletion vectors, MERGE
writing deletion vectors, OPTIMIZE compacting small files, VACUUM deleting what it replaced, an old table brought to
its declared layout, a second run that changes nothing, and the retention guard."""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass

import mlflow
import pytest
import yaml

from dataprep.cli import EXIT_BAD_INPUT, main
from dataprep.config import load_config, parse_config
from pipelines.lakehouse import CHANGE_FEED, Lakehouse, TableDetail
from pipelines.maintain import RETENTION_CHECK, MaintainSummary, TableUpkeep, run_maintain
from pipelines.settings import ConfigError
from pipelines.tables import BRONZE_DOCUMENTS, GOLD_TOKEN_STATS, GOLD_TOKENS, SILVER_DEDUP, TABLES, TableSpec

SOURCE = {"name": "web", "format": "jsonl", "paths": ["/nowhere/*.jsonl"]}
DELETION_VECTORS = "delta.enableDeletionVectors"


def write_config(directory, maintain: dict) -> str:
    raw = {
        "lakehouse": {"root": str(directory / "lakehouse"), "maintain": maintain},
        "mlflow": {"tracking_uri": os.environ["DATAPREP_TEST_MLFLOW_URI"]},
        "sources": [SOURCE],
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def token_rows(batch: int, count: int = 5) -> list[tuple]:
    return [(f"d{batch}_{i}", "web", "text", "en", [1, 2, 3], 3, 12) for i in range(count)]


def files_on_disk(path: str) -> int:
    """Data and deletion-vector files under a table's directory (not its log, not checksum files)."""
    return sum(
        1
        for directory, _, names in os.walk(path)
        if "_delta_log" not in directory
        for name in names
        if not name.startswith(".")
    )


@dataclass
class Maintained:
    """A lakehouse with gold.tokens grown by small appends and a MERGE, and a silver.dedup made the old way (no
    clustering, no deletion vectors), maintained once, then once more through the command line."""

    merge_metrics: dict[str, str]
    gold_on_disk: tuple[int, int]  # files under gold.tokens before and after the first run
    first: MaintainSummary
    second_output: str  # what `dataprep maintain` printed the second time
    second_metrics: dict[str, float]  # what the second run logged to MLflow
    details: dict[str, TableDetail]  # after both runs
    retention_check_after: str | None  # the session's setting after a VACUUM below the safety default


@pytest.fixture(scope="module")
def maintained(spark, tmp_path_factory) -> Maintained:
    directory = tmp_path_factory.mktemp("maintain")
    config = load_config(write_config(directory, {"retain_hours": 0, "allow_short_retention": True}))
    lakehouse = Lakehouse(spark, config.lakehouse)
    gold = lakehouse.table(GOLD_TOKENS)
    gold.create_if_missing()
    for batch in range(4):
        gold.append(spark.createDataFrame(token_rows(batch), GOLD_TOKENS.spark_schema()).coalesce(1))
    changes = spark.createDataFrame(
        [("d0_1", "web", "text", "en", [9], 1, 4), ("d1_2", "web", "text", "en", [], -1, 0)],
        GOLD_TOKENS.spark_schema(),
    )
    gold.merge(changes, "t.doc_id = s.doc_id").when_matched_delete("s.n_tokens < 0").when_matched_update(
        {"tokens": "s.tokens", "n_tokens": "s.n_tokens"}
    ).execute()
    merge_metrics = dict(gold.history(1).first()["operationMetrics"])
    old = lakehouse.table(SILVER_DEDUP)
    rows = [("d0_0", "d0_0", 1, True, None), ("d0_1", "d0_1", 1, True, None)]
    spark.createDataFrame(rows, SILVER_DEDUP.spark_schema()).write.format("delta").save(old.path)

    on_disk_before = files_on_disk(gold.path)
    first = run_maintain(spark, config.lakehouse, config.mlflow)
    on_disk_after = files_on_disk(gold.path)
    retention_check_after = spark.conf.get(RETENTION_CHECK, None)

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["maintain", "--config", str(directory / "config.yaml")]) == 0
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    latest = mlflow.search_runs(
        experiment_names=[config.mlflow.experiment],
        filter_string=f"tags.`dataprep.stage` = 'maintain' and tags.`dataprep.lakehouse` = '{config.lakehouse.root}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )[0]
    return Maintained(
        merge_metrics=merge_metrics,
        gold_on_disk=(on_disk_before, on_disk_after),
        first=first,
        second_output=printed.getvalue(),
        second_metrics=latest.data.metrics,
        details={table.label: table.detail() for table in (gold, old)},
        retention_check_after=retention_check_after,
    )


def upkeep_of(summary: MaintainSummary, label: str) -> TableUpkeep:
    return next(upkeep for upkeep in summary.tables if upkeep.table == label)


def test_tables_are_created_with_their_declared_clustering_keys_deletion_vectors_and_change_feed(spark, tmp_path):
    lakehouse = Lakehouse(spark, load_config(write_config(tmp_path, {})).lakehouse)
    # two keys and a change feed; no key and no feed (one key: gold.tokens, found as declared)
    for spec, feed in ((BRONZE_DOCUMENTS, "true"), (GOLD_TOKEN_STATS, None)):
        table = lakehouse.table(spec)
        table.create_if_missing()
        detail = table.detail()
        assert detail.clustering == spec.clustering and detail.properties[DELETION_VECTORS] == "true", spec.name
        assert detail.properties.get(CHANGE_FEED) == feed, spec.name
    assert lakehouse.table(BRONZE_DOCUMENTS).detail().clustering == ("source", "locator")


def test_every_clustering_key_is_a_column_delta_keeps_statistics_for():
    # Liquid clustering needs min/max statistics of its keys, which Delta collects for the first 32 columns.
    for spec in TABLES:
        for key in spec.clustering:
            assert spec.column_names.index(key) < 32 and spec.arrow_schema([key]).field(key).type == "string"
    assert {spec.name: spec.clustering for spec in TABLES if spec.clustering == ("doc_id",)}.keys() == {
        "silver.documents",
        "silver.dedup",
        "silver.dedup_signatures",
        "gold.tokens",
    }


def test_clustering_keys_must_be_declared_columns():
    with pytest.raises(ValueError, match=r"clustering \('id',\) must be at most 4 of its columns"):
        TableSpec("gold.x", "a table", GOLD_TOKENS.columns, clustering=("id",))


def test_a_merge_marks_replaced_rows_in_deletion_vectors_instead_of_rewriting_their_files(maintained):
    metrics = maintained.merge_metrics
    assert (metrics["numTargetRowsUpdated"], metrics["numTargetRowsDeleted"]) == ("1", "1")
    # One deletion vector in each of the two files touched; neither file, nor their other rows, rewritten.
    assert metrics["numTargetDeletionVectorsAdded"] == "2"
    assert (metrics["numTargetFilesRemoved"], metrics["numTargetRowsCopied"]) == ("0", "0")


def test_optimize_compacts_small_files_into_one_and_reports_it(maintained):
    gold = upkeep_of(maintained.first, GOLD_TOKENS.name)
    assert gold.files_before == 5  # four appends and the file the MERGE wrote its updated row to
    assert (gold.files_after, gold.files_compacted, gold.files_written) == (1, 5, 1)
    assert gold.bytes_after < gold.bytes_before
    assert gold.layout_changed == [] and gold.as_declared


def test_vacuum_below_the_safety_default_when_allowed_deletes_every_unreferenced_file(maintained):
    before, after = maintained.gold_on_disk
    gold = upkeep_of(maintained.first, GOLD_TOKENS.name)
    assert after == 1  # the one file OPTIMIZE wrote; the five it replaced and the deletion vectors are gone
    assert gold.files_deleted == before + gold.files_written - after and gold.bytes_deleted > 0
    assert maintained.retention_check_after is None  # Delta's check is back as it was: unset


def test_a_table_made_before_its_layout_was_declared_gets_it(maintained):
    dedup = upkeep_of(maintained.first, SILVER_DEDUP.name)
    assert dedup.layout_changed == ["clustering", "properties"] and dedup.as_declared
    detail = maintained.details[SILVER_DEDUP.name]
    assert detail.clustering == ("doc_id",) and detail.properties[DELETION_VECTORS] == "true"


def test_tables_not_created_yet_are_reported_and_left_alone(maintained):
    assert maintained.first.missing == [spec.name for spec in TABLES if spec not in (GOLD_TOKENS, SILVER_DEDUP)]
    assert maintained.first.reconciles


def test_a_second_run_changes_nothing_and_says_so(maintained):
    output = maintained.second_output
    line = next(line for line in output.splitlines() if line.startswith(GOLD_TOKENS.name))
    assert "as declared" in line and "1 -> 1" in line and "-0 +0" in line and "0 files" in line
    metrics = maintained.second_metrics
    assert metrics["gold.tokens.files_compacted"] == 0 and metrics["gold.tokens.files_deleted"] == 0
    assert metrics["silver.dedup.files_compacted"] == 0 and metrics["tables"] == 2
    assert maintained.details[GOLD_TOKENS.name].files == 1


def test_a_retention_below_deltas_default_without_the_flag_is_refused_before_anything_runs(tmp_path, capsys):
    config = write_config(tmp_path, {"retain_hours": 24})
    assert main(["maintain", "--config", config]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "lakehouse.maintain.retain_hours: 24 is below Delta's safety default of 168 hours" in error
    assert "lakehouse.maintain.allow_short_retention: true" in error
    assert not os.path.exists(tmp_path / "lakehouse")  # no session, no MLflow store, no table touched


def test_maintain_settings_default_to_deltas_retention_and_are_validated():
    assert parse_config({"sources": [SOURCE]}).lakehouse.maintain.retain_hours == 168
    for maintain, message in [
        ({"retain_hours": "a week"}, "lakehouse.maintain.retain_hours: expected int, got str"),
        ({"retain_hours": -1}, "lakehouse.maintain.retain_hours: -1 is below the minimum 0"),
        ({"retain_hour": 200}, "lakehouse.maintain: unknown key(s) 'retain_hour'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config({"sources": [SOURCE], "lakehouse": {"maintain": maintain}})
