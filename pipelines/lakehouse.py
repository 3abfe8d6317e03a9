"""Named Delta tables, wherever the lakehouse lives.

Stages speak of tables by their declaration (pipelines/tables.py), whose name is medallion-style
(`bronze.documents`). Locally that is a Delta directory under the lakehouse root (`<root>/bronze/documents`); with
Unity Catalog configured it is `<catalog>.<schema>.bronze_documents`. Nothing else in the code needs to know which.
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines import spark_compat, storage
from pipelines.settings import ConfigError, LakehouseConfig
from pipelines.tables import TableSpec, table_spec


@dataclass(frozen=True)
class Table:
    """One Delta table of the lakehouse: `layer.name` plus where it is stored.

    Everything here is SQL or DataFrame API, which a Spark Connect server (Databricks serverless, standard access
    mode) runs without Delta's Connect plugin; Delta's Python `DeltaTable` API needs that plugin there."""

    spark: SparkSession
    label: str  # layer.name
    path: str | None  # storage location; None for a Unity Catalog managed table
    full_name: str | None  # catalog.schema.table as written (for reports); None for a path table
    spec: TableSpec | None = None  # None for a staging table, whose schema is whatever its writer wrote
    quoted_name: str | None = None  # `catalog`.`schema`.`table`: what SQL and the reader/writer APIs are given

    @property
    def sql_name(self) -> str:
        """What to put after FROM in SQL."""
        return self.quoted_name if self.full_name else f"delta.{quote(self.path)}"

    def exists(self) -> bool:
        if self.full_name:
            return self.spark.catalog.tableExists(self.quoted_name)
        try:
            self.spark.sql(f"DESCRIBE DETAIL {self.sql_name}").select("format").first()
        except AnalysisException as error:
            if error.getCondition() in _NO_TABLE_HERE:
                return False
            raise
        return True

    def create_if_missing(self) -> None:
        """Creates the table as declared (columns, clustering keys, declared_properties), unless it exists; an existing
        table gains the declared nullable columns it lacks (a column added to a declaration reaches tables made before
        it, as nulls). An existing table's layout is `apply_layout`'s business (`dataprep maintain`)."""
        spec = self._declared()
        clustering = f" CLUSTER BY {_clustering(spec.clustering)}" if spec.clustering else ""
        properties = _properties(declared_properties(spec))
        location = f" LOCATION {sql_string(self.path)}" if self.full_name and self.path else ""
        self._create(
            f"CREATE TABLE IF NOT EXISTS {self.sql_name} ({spec.spark_schema().toDDL()}) USING DELTA{clustering}"
            f" COMMENT {sql_string(spec.description)} TBLPROPERTIES ({properties}){location}"
        )
        self._add_missing_columns()

    def detail(self) -> TableDetail:
        """What DESCRIBE DETAIL says of the table's current version."""
        row = self.spark.sql(f"DESCRIBE DETAIL {self.sql_name}").first()
        return TableDetail(
            files=int(row["numFiles"] or 0),
            bytes=int(row["sizeInBytes"] or 0),
            clustering=tuple(row["clusteringColumns"] or ()),
            properties=dict(row["properties"] or {}),
        )

    def apply_layout(self) -> list[str]:
        """Gives an existing table its declared clustering keys and declared_properties where it lacks them (a table
        made before they were declared, or one an overwrite stripped of its keys); returns what changed: "clustering",
        "properties", or nothing. Metadata only: OPTIMIZE then clusters the files."""
        return retry_on_conflict(self._apply_layout, f"layout of {self.label}")

    def _apply_layout(self) -> list[str]:
        changed = self.layout_differences(self.detail())
        if "clustering" in changed:
            self.spark.sql(f"ALTER TABLE {self.sql_name} CLUSTER BY {_clustering(self._declared().clustering)}")
        if "properties" in changed:
            self.set_properties(declared_properties(self._declared()))
        return changed

    def layout_differences(self, detail: TableDetail) -> list[str]:
        """Where a table, as DESCRIBE DETAIL says it is, differs from its declared layout: "clustering" (other keys,
        or none), "properties" (one of declared_properties unset or otherwise set)."""
        differences = ["clustering"] if detail.clustering != self._declared().clustering else []
        if any(detail.properties.get(key) != value for key, value in declared_properties(self._declared()).items()):
            differences.append("properties")
        return differences

    def _declared(self) -> TableSpec:
        if self.spec is None:
            raise TypeError(f"{self.label} is a staging table: it has no declaration to create it from")
        return self.spec

    def _create(self, statement: str) -> None:
        # Two runs starting together both try to create the table. The loser sees a commit conflict, or the winner's
        # directory before its first commit (where DESCRIBE DETAIL and CREATE ... IF NOT EXISTS can both pass): it
        # waits until the table reads.
        for attempt in range(1, _ATTEMPTS + 1):
            if not self.exists():
                try:
                    self.spark.sql(statement)
                except Exception as error:
                    if attempt == _ATTEMPTS or not (isinstance(error, AnalysisException) or is_commit_conflict(error)):
                        raise
            if self._readable():
                return
            # Delta caches each path's log, including "no table here": forget it, or the table the winner created
            # stays invisible to this session.
            spark_compat.forget_cached_delta_logs(self.spark)
            _back_off(attempt)
        raise RuntimeError(f"{self.label}: created, yet no committed table is there to read after {_ATTEMPTS} attempts")

    def _readable(self) -> bool:
        try:
            self.read()  # loading resolves the latest committed snapshot: no table, no schema
        except AnalysisException as error:
            if error.getCondition() in _NO_TABLE_HERE | {"DELTA_TABLE_NOT_FOUND"}:
                return False
            raise
        return True

    def _add_missing_columns(self) -> None:
        present = set(self.read().columns)
        missing = [f for f in self.spec.spark_schema().fields if f.name not in present]
        if not missing:
            return
        required = [f.name for f in missing if not f.nullable]
        if required:
            raise RuntimeError(f"{self.label} lacks the required column(s) {required}: it was made by another version")
        columns = ", ".join(
            f"{quote(f.name)} {f.dataType.simpleString()} COMMENT {sql_string(f.metadata['comment'])}" for f in missing
        )
        try:
            self.spark.sql(f"ALTER TABLE {self.sql_name} ADD COLUMNS ({columns})")
        except Exception as error:
            # Another run upgrading the same table at the same moment may have added them first.
            if not (isinstance(error, AnalysisException) or is_commit_conflict(error)):
                raise
            if not {f.name for f in missing} <= set(self.read().columns):
                raise

    def set_properties(self, properties: Mapping[str, str]) -> None:
        self.spark.sql(f"ALTER TABLE {self.sql_name} SET TBLPROPERTIES ({_properties(properties)})")

    def unset_property(self, name: str) -> None:
        self.spark.sql(f"ALTER TABLE {self.sql_name} UNSET TBLPROPERTIES IF EXISTS ({sql_string(name)})")

    def changes(self, start: int, end: int) -> DataFrame:
        """Delta's change data feed of versions `start` to `end`, both included: every row a commit inserted,
        deleted or updated, with its `_change_type` (insert, delete, update_preimage, update_postimage) and
        `_commit_version`. Only those commits' files are read."""
        reader = (
            self.spark.read.format("delta")
            .option("readChangeFeed", "true")
            .option("startingVersion", start)
            .option("endingVersion", end)
        )
        return reader.table(self.quoted_name) if self.full_name else reader.load(self.path)

    def read(self, version: int | None = None) -> DataFrame:
        """The table's rows: as of `version` when given (Delta time travel), else its latest."""
        reader = self.spark.read if version is None else self.spark.read.option("versionAsOf", version)
        if self.full_name:
            return reader.table(self.quoted_name)
        return reader.format("delta").load(self.path)

    def overwrite(self, frame: DataFrame) -> None:
        """Replaces the rows, and the schema with the frame's. A declared table keeps its layout: it is created as
        declared first, and Delta 4.0 drops a table's clustering keys on every overwrite (whatever the options; only
        a `replaceWhere` overwrite keeps them, and it cannot change the schema), so they are declared again after."""
        if self.spec is not None and not self.exists():
            self.create_if_missing()  # the comment and properties, which an overwrite keeps
        writer = frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
        self._save(writer)
        if self.spec is not None and self.spec.clustering:
            # Always dropped, so declared again without asking DESCRIBE DETAIL first (one metadata commit).
            statement = f"ALTER TABLE {self.sql_name} CLUSTER BY {_clustering(self.spec.clustering)}"
            retry_on_conflict(lambda: self.spark.sql(statement), f"layout of {self.label}")

    def append(self, frame: DataFrame, commit_metadata: str | None = None) -> None:
        """Appends rows; `commit_metadata` tags the commit (Delta's userMetadata) so that `commit_metrics` finds it."""
        writer = frame.write.format("delta").mode("append")
        if commit_metadata is not None:
            writer = writer.option("userMetadata", commit_metadata)
        self._save(writer)

    def _save(self, writer) -> None:
        if not self.full_name:
            writer.save(self.path)
            return
        if self.path:  # an external table: its files go where the config says
            writer = writer.option("path", self.path)
        writer.saveAsTable(self.quoted_name)

    def merge(self, source: DataFrame, on: str) -> Merge:
        """A MERGE INTO this table (alias `t`) from `source` (alias `s`) on the SQL condition `on`."""
        return Merge(self, source, on)

    def history(self, limit: int) -> DataFrame:
        """The newest `limit` commits (version, userMetadata, operationMetrics, ...), newest first."""
        return self.spark.sql(f"DESCRIBE HISTORY {self.sql_name} LIMIT {int(limit)}")

    def commit_metrics(self, commit_metadata: str) -> dict[str, str]:
        """The operation metrics of the newest commit tagged `commit_metadata` (not merely the newest commit, which
        may be a concurrent writer's)."""
        history = self.history(_HISTORY_SEARCHED).where(F.col("userMetadata") == commit_metadata)
        row = history.orderBy(F.desc("version")).select("operationMetrics").first()
        if row is None:
            raise RuntimeError(f"{self.label}: no commit tagged {commit_metadata!r} among the last {_HISTORY_SEARCHED}")
        return dict(row[0])

    def drop(self) -> None:
        if self.full_name:
            self.spark.sql(f"DROP TABLE IF EXISTS {self.quoted_name}")
        if self.path:  # a path table, or an external table's files (DROP TABLE leaves them)
            storage.Storage.from_spark(self.spark).delete_tree(self.path)

    def version(self) -> int:
        """The latest committed version (what a run report records as 'read at'; what is derived from the rows is
        keyed by `data_version()`)."""
        return int(self.history(1).select("version").first()[0])

    def data_version(self) -> int:
        """The latest version whose commit may have changed the rows: `version()` less the upkeep commits since
        (OPTIMIZE, VACUUM, properties, layout), after which a read returns what it returned before. What output
        derived from the table is keyed by, so that `dataprep maintain` does not make it stale."""
        upkeep = F.col("operation").isin(*_UPKEEP_OPERATIONS)
        found = (F.max(F.when(~upkeep, F.col("version"))).alias("data"), F.min("version").alias("oldest"),
                 F.count("*").alias("commits"))  # fmt: skip
        row = self.history(_HISTORY_SEARCHED).agg(*found).first()
        if row["data"] is None and row["commits"] == _HISTORY_SEARCHED:  # upkeep only, and there is more history
            row = self.spark.sql(f"DESCRIBE HISTORY {self.sql_name}").agg(*found).first()
        # Upkeep only in the whole log (its last data commit cleaned up, after Delta's log retention of 30 days): the
        # oldest version listed. That never misses a change, but it moves each time the log is cleaned, and what is
        # keyed by it is then derived again although no row changed.
        return int(row["data"] if row["data"] is not None else row["oldest"])


@dataclass(frozen=True)
class TableDetail:
    files: int  # data files of the current version (what a full read opens)
    bytes: int  # their total size
    clustering: tuple[str, ...]  # liquid clustering keys; empty: none
    properties: dict[str, str]  # table properties (TBLPROPERTIES)


@dataclass
class Merge:
    """A Delta `MERGE INTO`, built clause by clause like Delta's Python merge builder and run as SQL. Conditions and
    values are SQL over `t` (the table) and `s` (the source)."""

    table: Table
    source: DataFrame
    on: str
    clauses: list[str] = field(default_factory=list)

    def when_matched_update(self, set: Mapping[str, str], condition: str | None = None) -> Merge:
        assignments = ", ".join(f"t.{quote(column)} = {value}" for column, value in set.items())
        return self._clause(f"WHEN MATCHED{_and(condition)} THEN UPDATE SET {assignments}")

    def when_matched_delete(self, condition: str | None = None) -> Merge:
        return self._clause(f"WHEN MATCHED{_and(condition)} THEN DELETE")

    def when_not_matched_insert(self, values: Mapping[str, str] | None = None, condition: str | None = None) -> Merge:
        """Inserts the given column values, or every column of the source by name (`values=None`), for the source
        rows that match no row of the table (and `condition`, when given)."""
        if values is None:
            return self._clause(f"WHEN NOT MATCHED{_and(condition)} THEN INSERT *")
        columns = ", ".join(quote(column) for column in values)
        return self._clause(
            f"WHEN NOT MATCHED{_and(condition)} THEN INSERT ({columns}) VALUES ({', '.join(values.values())})"
        )

    def when_not_matched_by_source_delete(self) -> Merge:
        """Deletes the table's rows that no source row matches: with the other clauses, the table becomes the source."""
        return self._clause("WHEN NOT MATCHED BY SOURCE THEN DELETE")

    def execute(self) -> dict[str, int]:
        """Commits the MERGE; returns its own row counts (num_inserted_rows, num_updated_rows, num_deleted_rows,
        num_affected_rows): the table's newest commit may already be a concurrent writer's."""
        # The source reaches SQL as a temporary view of this session, named uniquely so that concurrent merges of
        # one session do not collide.
        view = f"dataprep_merge_source_{uuid.uuid4().hex}"
        self.source.createOrReplaceTempView(view)
        try:
            statement = f"MERGE INTO {self.table.sql_name} AS t USING {view} AS s ON {self.on} {' '.join(self.clauses)}"
            row = self.table.spark.sql(statement).first()
        finally:
            self.table.spark.catalog.dropTempView(view)
        return {name: int(value) for name, value in row.asDict().items()}

    def _clause(self, clause: str) -> Merge:
        self.clauses.append(clause)
        return self


def _and(condition: str | None) -> str:
    return f" AND ({condition})" if condition else ""


CHANGE_FEED = "delta.enableChangeDataFeed"


def declared_properties(spec: TableSpec) -> dict[str, str]:
    """A declared table's properties. Deletion vectors, everywhere: a MERGE, UPDATE or DELETE marks the rows it
    replaces or removes in a small side file instead of rewriting every data file that holds one of them (and with it
    the `text` of all their other rows); OPTIMIZE purges the marked rows later. The change data feed where the
    declaration asks for it (TableSpec.change_feed)."""
    properties = {"delta.enableDeletionVectors": "true"}
    if spec.change_feed:
        properties[CHANGE_FEED] = "true"
    return properties


def _clustering(columns: tuple[str, ...]) -> str:
    """The argument of CLUSTER BY: `(a, b)`, or NONE."""
    return f"({', '.join(quote(column) for column in columns)})" if columns else "NONE"


def _properties(properties: Mapping[str, str]) -> str:
    return ", ".join(f"{sql_string(key)} = {sql_string(value)}" for key, value in properties.items())


def quote(identifier: str) -> str:
    """An identifier as SQL takes any name: in backticks, a backtick in it doubled."""
    return "`" + identifier.replace("`", "``") + "`"


def sql_string(value: str) -> str:
    """A SQL string literal of any text."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def is_commit_conflict(error: BaseException) -> bool:
    """True for Delta's optimistic-concurrency rejections, recognised by their error class, however the session
    raised them (spark_compat.error_condition)."""
    condition = spark_compat.error_condition(error) or ""
    return condition.startswith(_CONFLICT_PREFIX) or condition.split(".")[0] in _OTHER_CONFLICTS


class Lakehouse:
    def __init__(self, spark: SparkSession, config: LakehouseConfig) -> None:
        self.spark = spark
        self.config = config

    @functools.cached_property
    def storage(self) -> storage.Storage:
        """How Python reaches the files beside the tables (models, shards, inputs): as Spark's connectors do."""
        return storage.Storage.from_spark(self.spark)

    def table(self, spec: TableSpec | str) -> Table:
        """A declared table, by its declaration or its name (`"silver.documents"`, for notebooks and tests)."""
        if isinstance(spec, str):
            spec = table_spec(spec)
        return self._named(spec.name, spec)

    def staging(self, name: str) -> Table:
        """A scratch table of one run (`staging.<name>`), dropped by the run that made it."""
        return self._named(f"staging.{name}", None)

    def _named(self, label: str, spec: TableSpec | None) -> Table:
        layer, _, name = label.partition(".")
        if not layer or not name:
            raise ValueError(f"table names are 'layer.name' such as 'bronze.documents', got {label!r}")
        if self.config.uses_unity_catalog:
            parts = (self.config.catalog, self.config.schema, f"{layer}_{name}")
            location = self.config.external_location
            path = storage.join(location, parts[2]) if location else None
            return Table(self.spark, label, path, ".".join(parts), spec, ".".join(quote(part) for part in parts))
        return Table(self.spark, label, path=storage.join(self.config.root, layer, name), full_name=None, spec=spec)

    def prepare(self) -> None:
        """Makes sure the tables have a home before a stage runs: with Unity Catalog, the schema exists (created when
        `lakehouse.create_schema` says so; a clear error otherwise, rather than a failure at the first write)."""
        if not self.config.uses_unity_catalog:
            return
        schema = f"{quote(self.config.catalog)}.{quote(self.config.schema)}"
        if self.config.create_schema:
            self.spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        elif not self.spark.catalog.databaseExists(schema):
            raise ConfigError(
                f"lakehouse.schema: {self.config.catalog}.{self.config.schema} does not exist; create it (the bundle "
                "declares it) or set lakehouse.create_schema: true"
            )


Result = TypeVar("Result")


def retry_on_conflict(
    action: Callable[[], Result], what: str, again: Callable[[Result], bool] = lambda result: False
) -> Result:
    """Runs a read-decide-commit `action` again when another writer committed to the table first.

    Delta's optimistic concurrency rejects a commit whose reads a concurrent commit invalidated; the action must
    therefore re-read what it decides on (as ingest's classify + MERGE does), so that the retry decides against
    the other run's rows and nothing is written twice. A commit can also succeed yet show that another writer got
    in between (a MERGE that wrote fewer rows than it was asked to): `again(result)` says so, and the action is run
    again too; the last attempt's result is returned either way, for the caller's reconciliation to judge.
    """
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            result = action()
        except Exception as error:
            if not is_commit_conflict(error):
                raise
            if attempt == _ATTEMPTS:
                raise RuntimeError(f"{what}: still conflicting with concurrent writers after {_ATTEMPTS} attempts") \
                    from error  # fmt: skip
        else:
            if attempt == _ATTEMPTS or not again(result):
                return result
        _back_off(attempt)
    raise AssertionError("unreachable")


_ATTEMPTS = 8
# Commits searched for one's own (concurrent writers commit in between), and for the newest data commit.
_HISTORY_SEARCHED = 100
# Operations (as DESCRIBE HISTORY names them) that change how a table is stored, never its rows. Anything else,
# including an operation missing here, counts as a change to the rows.
_UPKEEP_OPERATIONS = ("OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES", "UNSET TBLPROPERTIES",
                      "CLUSTER BY", "REORG", "UPGRADE PROTOCOL")  # fmt: skip
# Delta's concurrent-modification error classes (Delta's DeltaErrors): DELTA_CONCURRENT_APPEND, _DELETE_READ,
# _DELETE_DELETE, _TRANSACTION, _WRITE..., and the two that a concurrent metadata or protocol change raises.
_CONFLICT_PREFIX = "DELTA_CONCURRENT_"
_OTHER_CONFLICTS = {"DELTA_METADATA_CHANGED", "DELTA_PROTOCOL_CHANGED"}
# What DESCRIBE DETAIL says of a path that holds no Delta table (missing, empty, or other files).
_NO_TABLE_HERE = {"DELTA_MISSING_DELTA_TABLE", "PATH_NOT_FOUND", "DELTA_PATH_DOES_NOT_EXIST"}


def _back_off(attempt: int) -> None:
    """Waits longer after each attempt, with jitter so that two retrying runs do not collide again in step."""
    time.sleep(random.uniform(0.5, 1.5) * attempt)
