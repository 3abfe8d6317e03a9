"""Tables of the lakehouse: retrying a read-decide-commit action that lost a race with another writer (no Spark
needed: the action is ours), declared columns reaching older tables, finding one's own commit."""

import delta.exceptions
import pytest

from pipelines import lakehouse
from pipelines.lakehouse import Lakehouse, retry_on_conflict
from pipelines.settings import LakehouseConfig
from pipelines.tables import GOLD_TOKEN_STATS, SILVER_DOCUMENTS


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(lakehouse, "_back_off", lambda attempt: None)


def outcomes(*results):
    """An action that raises or returns each of `results` in turn, and the list of calls it saw."""
    calls = []

    def action():
        result = results[len(calls)]
        calls.append(result)
        if isinstance(result, Exception):
            raise result
        return result

    return action, calls


def test_a_commit_conflict_runs_the_action_again():
    action, calls = outcomes(delta.exceptions.ConcurrentAppendException("files were added"), "merged")
    assert retry_on_conflict(action, "merge") == "merged" and len(calls) == 2


def test_a_result_the_caller_distrusts_runs_the_action_again_until_it_agrees():
    action, calls = outcomes(("classified 5", 3), ("classified 0", 0))
    assert retry_on_conflict(action, "merge", again=lambda result: result[1] != int(result[0][-1])) == (
        "classified 0",
        0,
    )
    assert len(calls) == 2


def test_the_last_attempt_result_is_returned_for_the_caller_to_judge():
    action, calls = outcomes(*[("disagrees", n) for n in range(lakehouse._ATTEMPTS)])
    assert retry_on_conflict(action, "merge", again=lambda result: True) == ("disagrees", lakehouse._ATTEMPTS - 1)


def test_endless_conflicts_end_in_an_error_naming_the_action():
    conflicts = [delta.exceptions.ConcurrentTransactionException("again")] * lakehouse._ATTEMPTS
    action, _ = outcomes(*conflicts)
    with pytest.raises(RuntimeError, match="ingest into bronze.documents: still conflicting"):
        retry_on_conflict(action, "ingest into bronze.documents")


def test_other_errors_are_not_retried():
    action, calls = outcomes(ValueError("a bug"), "never")
    with pytest.raises(ValueError):
        retry_on_conflict(action, "merge")
    assert len(calls) == 1


def test_a_column_added_to_a_declaration_reaches_a_table_made_before_it(spark, tmp_path):
    table = Lakehouse(spark, LakehouseConfig(root=str(tmp_path))).table(SILVER_DOCUMENTS)
    older = [name for name in SILVER_DOCUMENTS.column_names if name != "signal_versions"]
    spark.createDataFrame([], SILVER_DOCUMENTS.spark_schema(older)).write.format("delta").save(table.path)
    table.create_if_missing()
    assert table.read().columns == SILVER_DOCUMENTS.column_names
    added, declared = table.read().schema["signal_versions"], SILVER_DOCUMENTS.spark_schema()["signal_versions"]
    assert (added.dataType, added.metadata["comment"]) == (declared.dataType, declared.metadata["comment"])


def test_a_commit_is_found_by_its_own_tag_not_by_being_the_latest(spark, tmp_path):
    table = Lakehouse(spark, LakehouseConfig(root=str(tmp_path))).table(GOLD_TOKEN_STATS)
    table.create_if_missing()
    row = [("web", "text", "en", 1, 2, 3, 1.5)]
    table.append(spark.createDataFrame(row * 2, GOLD_TOKEN_STATS.spark_schema()), commit_metadata="mine")
    table.append(spark.createDataFrame(row, GOLD_TOKEN_STATS.spark_schema()), commit_metadata="another writer's")
    assert table.commit_metrics("mine")["numOutputRows"] == "2"
    with pytest.raises(RuntimeError, match="no commit tagged 'absent'"):
        table.commit_metrics("absent")
