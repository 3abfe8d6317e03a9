"""Tables of the lakehouse: retrying a read-decide-commit action that lost a race with another writer (no Spark
needed: the action is ours), declared columns reaching older tables, finding one's own commit, MERGE as SQL."""

import delta.exceptions
import pytest
from pyspark.errors import AnalysisException, PySparkException
from pyspark.errors.exceptions.connect import SparkConnectGrpcException

from pipelines import lakehouse
from pipelines.lakehouse import Lakehouse, is_commit_conflict, quote, retry_on_conflict, sql_string
from pipelines.settings import ConfigError, LakehouseConfig
from pipelines.tables import GOLD_TOKEN_STATS, SILVER_DEDUP, SILVER_DOCUMENTS


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


def conflict(condition: str, kind: type = PySparkException) -> PySparkException:
    """A Delta commit conflict as a session raises it: classic sessions as delta.exceptions classes, Spark Connect
    clients as their own error types; both carry Delta's error class."""
    return kind(message=f"[{condition}] another writer committed first", errorClass=condition)


@pytest.mark.parametrize(
    "error",
    [
        conflict("DELTA_CONCURRENT_APPEND.WITHOUT_HINT", delta.exceptions.ConcurrentAppendException),
        conflict("DELTA_CONCURRENT_DELETE_READ", SparkConnectGrpcException),
        conflict("DELTA_CONCURRENT_TRANSACTION", SparkConnectGrpcException),
        conflict("DELTA_METADATA_CHANGED", AnalysisException),
        conflict("DELTA_PROTOCOL_CHANGED", SparkConnectGrpcException),
    ],
)
def test_commit_conflicts_are_recognised_by_their_error_class_in_both_session_kinds(error):
    assert is_commit_conflict(error)


def test_a_conflict_a_classic_session_passes_up_unconverted_is_recognised(spark):
    # PySpark has no Python class for Delta's JVM conflict exceptions: a classic session raises them as py4j's
    # Py4JJavaError around the JVM exception (seen when two ingests collide), which carries Delta's error class.
    from py4j.protocol import Py4JJavaError

    java_exception = spark._jvm.io.delta.exceptions.ConcurrentAppendException("files were added")
    error = Py4JJavaError("An error occurred while calling o58.sql.\n", java_exception)
    assert is_commit_conflict(error)
    action, calls = outcomes(error, "merged")
    assert retry_on_conflict(action, "merge") == "merged" and len(calls) == 2
    other = Py4JJavaError("An error occurred.\n", spark._jvm.java.lang.IllegalStateException("a bug"))
    assert not is_commit_conflict(other)


@pytest.mark.parametrize(
    "error",
    [
        conflict("DELTA_MISSING_DELTA_TABLE", SparkConnectGrpcException),
        conflict("TABLE_OR_VIEW_NOT_FOUND", AnalysisException),
        delta.exceptions.ConcurrentAppendException("a conflict class without Delta's error class"),
        RuntimeError("DELTA_CONCURRENT_APPEND"),
    ],
)
def test_other_errors_are_not_commit_conflicts(error):
    assert not is_commit_conflict(error)


def test_names_and_text_are_quoted_for_sql():
    assert quote("my-catalog") == "`my-catalog`" and quote("odd`name") == "`odd``name`"
    assert sql_string("it's a \\path") == "'it\\'s a \\\\path'"


def test_a_commit_conflict_runs_the_action_again():
    action, calls = outcomes(conflict("DELTA_CONCURRENT_APPEND"), "merged")
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
    conflicts = [conflict("DELTA_CONCURRENT_TRANSACTION", SparkConnectGrpcException)] * lakehouse._ATTEMPTS
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


def test_a_table_is_created_as_declared_with_nullability_and_comments(spark, tmp_path):
    table = Lakehouse(spark, LakehouseConfig(root=str(tmp_path))).table(SILVER_DOCUMENTS)
    assert not table.exists()
    table.create_if_missing()
    table.create_if_missing()  # a second time finds it
    assert table.exists()
    assert table.read().schema == SILVER_DOCUMENTS.spark_schema()
    assert spark.sql(f"DESCRIBE DETAIL {table.sql_name}").first()["description"] == SILVER_DOCUMENTS.description


def test_a_merge_runs_as_sql_and_returns_its_own_counts(spark, tmp_path):
    table = Lakehouse(spark, LakehouseConfig(root=str(tmp_path))).staging("merge")
    table.overwrite(spark.createDataFrame([(1, "a"), (2, "b"), (3, "c")], "k int, v string"))
    source = spark.createDataFrame([(2, "B"), (3, "gone"), (4, "d")], "k int, v string")
    metrics = (
        table.merge(source, "t.k = s.k")
        .when_matched_delete(condition="s.v = 'gone'")
        .when_matched_update(set={"v": "upper(s.v)"})
        .when_not_matched_insert()
        .execute()
    )
    assert (metrics["num_updated_rows"], metrics["num_deleted_rows"], metrics["num_inserted_rows"]) == (1, 1, 1)
    assert sorted(tuple(row) for row in table.read().collect()) == [(1, "a"), (2, "B"), (4, "d")]
    assert not [view for view in spark.catalog.listTables() if view.name.startswith("dataprep_merge_source")]


def test_the_data_version_skips_upkeep_commits_and_follows_every_change_to_the_rows(spark, tmp_path):
    table = Lakehouse(spark, LakehouseConfig(root=str(tmp_path))).staging("versions")
    table.append(spark.createDataFrame([(1, "a")], "k int, v string"))
    table.append(spark.createDataFrame([(2, "b")], "k int, v string"))
    written = table.version()
    spark.sql(f"OPTIMIZE {table.sql_name}")  # the two files compacted into one: same rows
    table.set_properties({"dataprep.note": "upkeep"})
    assert table.version() == written + 2 and table.data_version() == written
    spark.sql(f"RESTORE TABLE {table.sql_name} TO VERSION AS OF 0")  # rows change back: a change like any write
    assert table.data_version() == table.version() == written + 3
    spark.sql(f"DELETE FROM {table.sql_name} WHERE k = 1")
    assert table.data_version() == table.version()


def test_unity_catalog_names_are_quoted_so_that_any_valid_name_works():
    config = LakehouseConfig(root="/unused", catalog="data-prep", schema="team`s llm")
    table = Lakehouse(None, config).table(GOLD_TOKEN_STATS)
    assert table.full_name == "data-prep.team`s llm.gold_token_stats"
    assert table.sql_name == "`data-prep`.`team``s llm`.`gold_token_stats`"
    external = LakehouseConfig(root="/unused", catalog="main", schema="llm", external_location="s3://bucket/tables")
    assert Lakehouse(None, external).table(GOLD_TOKEN_STATS).path == "s3://bucket/tables/gold_token_stats"


def test_catalog_tables_are_managed_and_their_schema_is_created_when_asked(spark, tmp_path):
    # The session's own catalog stands in for Unity Catalog: three-part names, a schema to create, managed tables.
    # (It accepts only plain names, which Unity Catalog does not require: quoting is checked above.)
    config = LakehouseConfig(root=str(tmp_path), catalog="spark_catalog", schema="dataprep_uc", create_schema=True)
    lakehouse = Lakehouse(spark, config)
    lakehouse.prepare()
    table = lakehouse.table(GOLD_TOKEN_STATS)
    assert table.sql_name == "`spark_catalog`.`dataprep_uc`.`gold_token_stats`"
    table.create_if_missing()
    table.append(spark.createDataFrame([("web", "text", "en", 1, 2, 3, 1.5)], GOLD_TOKEN_STATS.spark_schema()))
    assert table.exists() and table.read().count() == 1 and table.version() == 1
    table.drop()
    assert not table.exists()
    missing = Lakehouse(spark, LakehouseConfig(root=str(tmp_path), catalog="spark_catalog", schema="absent_schema"))
    with pytest.raises(ConfigError, match="absent_schema does not exist"):
        missing.prepare()


def test_an_overwrite_keeps_the_declared_layout_that_delta_drops(spark, tmp_path):
    table = Lakehouse(spark, LakehouseConfig(root=str(tmp_path))).table(SILVER_DEDUP)
    rows = spark.createDataFrame([("a", "a", 1, True, None), ("b", "a", 2, False, "a")], SILVER_DEDUP.spark_schema())
    # Delta 4.0 itself drops a table's clustering keys on overwrite: what Table.overwrite has to make up for.
    table.create_if_missing()
    rows.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(table.path)
    assert table.detail().clustering == ()
    for _ in ("an existing table", "a new one"):
        table.overwrite(rows)
        detail = table.detail()
        assert detail.clustering == SILVER_DEDUP.clustering == ("doc_id",)
        # silver.dedup declares a change feed (tokenize reads which decisions changed from it).
        assert detail.properties == {"delta.enableDeletionVectors": "true", lakehouse.CHANGE_FEED: "true"}
        assert table.read().count() == 2
        assert spark.sql(f"DESCRIBE DETAIL {table.sql_name}").first()["description"] == SILVER_DEDUP.description
        table.drop()
