"""Named Delta tables, wherever the lakehouse lives.

Stages speak of tables by their declaration (pipelines/tables.py), whose name is medallion-style
(`bronze.documents`). Locally that is a Delta directory under the lakehouse root (`<root>/bronze/documents`); with
Unity Catalog configured it is `<catalog>.<schema>.bronze_documents`. Nothing else in the code needs to know which.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import delta.exceptions
import delta.exceptions.captured  # noqa: F401  (turns Delta's JVM commit conflicts into the Python classes below)
from delta.tables import DeltaTable, DeltaTableBuilder
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines import storage
from pipelines.settings import LakehouseConfig
from pipelines.tables import TableSpec, table_spec


@dataclass(frozen=True)
class Table:
    """One Delta table of the lakehouse: `layer.name` plus where it is stored."""

    spark: SparkSession
    label: str  # layer.name
    path: str | None  # local/object-store location; None for a Unity Catalog managed table
    full_name: str | None  # catalog.schema.table; None for a path table
    spec: TableSpec | None = None  # None for a staging table, whose schema is whatever its writer wrote

    @property
    def sql_name(self) -> str:
        """What to put after FROM in SQL."""
        return self.full_name if self.full_name else f"delta.`{self.path}`"

    def exists(self) -> bool:
        if self.full_name:
            return self.spark.catalog.tableExists(self.full_name)
        return DeltaTable.isDeltaTable(self.spark, self.path)

    def create_if_missing(self) -> None:
        """Creates the table as declared, unless it exists; an existing table gains the declared nullable columns it
        lacks (a column added to a declaration reaches tables made before it, as nulls)."""
        if self.spec is None:
            raise TypeError(f"{self.label} is a staging table: it has no declaration to create it from")
        builder = DeltaTable.createIfNotExists(self.spark).addColumns(self.spec.spark_schema())
        builder = builder.comment(self.spec.description)
        builder = builder.tableName(self.full_name) if self.full_name else builder.location(self.path)
        self._create(builder)
        self._add_missing_columns()

    def _create(self, builder: DeltaTableBuilder) -> None:
        # Two runs starting together both try to create the table. The loser sees a commit conflict, or a location
        # the winner has begun to write but not yet committed: it waits and finds the table there.
        for attempt in range(1, _ATTEMPTS + 1):
            if self.exists():
                return
            try:
                builder.execute()
                return
            except (*COMMIT_CONFLICTS, AnalysisException):
                if attempt == _ATTEMPTS:
                    raise
                # Delta caches each path's log, including "no table here": forget it, or the table the winner
                # created stays invisible to this session. (A Spark Connect session has no JVM here to ask;
                # its server resolves the table afresh.)
                jvm = getattr(self.spark, "_jvm", None)
                if jvm is not None:
                    jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
                _back_off(attempt)

    def _add_missing_columns(self) -> None:
        present = set(self.read().columns)
        missing = [f for f in self.spec.spark_schema().fields if f.name not in present]
        if not missing:
            return
        required = [f.name for f in missing if not f.nullable]
        if required:
            raise RuntimeError(f"{self.label} lacks the required column(s) {required}: it was made by another version")
        columns = ", ".join(
            f"`{f.name}` {f.dataType.simpleString()} COMMENT '{f.metadata['comment'].replace(chr(39), '')}'"
            for f in missing
        )
        try:
            self.spark.sql(f"ALTER TABLE {self.sql_name} ADD COLUMNS ({columns})")
        except (*COMMIT_CONFLICTS, AnalysisException):
            # Another run upgrading the same table at the same moment may have added them first.
            if not {f.name for f in missing} <= set(self.read().columns):
                raise

    def delta(self) -> DeltaTable:
        if self.full_name:
            return DeltaTable.forName(self.spark, self.full_name)
        return DeltaTable.forPath(self.spark, self.path)

    def read(self) -> DataFrame:
        if self.full_name:
            return self.spark.read.table(self.full_name)
        return self.spark.read.format("delta").load(self.path)

    def overwrite(self, frame: DataFrame) -> None:
        writer = frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
        writer.saveAsTable(self.full_name) if self.full_name else writer.save(self.path)

    def append(self, frame: DataFrame, commit_metadata: str | None = None) -> None:
        """Appends rows; `commit_metadata` tags the commit (Delta's userMetadata) so that `commit_metrics` finds it."""
        writer = frame.write.format("delta").mode("append")
        if commit_metadata is not None:
            writer = writer.option("userMetadata", commit_metadata)
        writer.saveAsTable(self.full_name) if self.full_name else writer.save(self.path)

    def commit_metrics(self, commit_metadata: str) -> dict[str, str]:
        """The operation metrics of the newest commit tagged `commit_metadata` (not merely the newest commit, which
        may be a concurrent writer's)."""
        history = self.delta().history(_HISTORY_SEARCHED).where(F.col("userMetadata") == commit_metadata)
        row = history.orderBy(F.desc("version")).select("operationMetrics").first()
        if row is None:
            raise RuntimeError(f"{self.label}: no commit tagged {commit_metadata!r} among the last {_HISTORY_SEARCHED}")
        return dict(row[0])

    def drop(self) -> None:
        if self.full_name:
            self.spark.sql(f"DROP TABLE IF EXISTS {self.full_name}")
        else:
            storage.Storage.from_spark(self.spark).delete_tree(self.path)

    def version(self) -> int:
        """The latest committed version (what a report or manifest records as 'read at')."""
        return int(self.delta().history(1).select("version").first()[0])


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
            full_name = f"{self.config.catalog}.{self.config.schema}.{layer}_{name}"
            return Table(self.spark, label, path=None, full_name=full_name, spec=spec)
        return Table(self.spark, label, path=storage.join(self.config.root, layer, name), full_name=None, spec=spec)


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
        except COMMIT_CONFLICTS as error:
            if attempt == _ATTEMPTS:
                raise RuntimeError(f"{what}: still conflicting with concurrent writers after {_ATTEMPTS} attempts") \
                    from error  # fmt: skip
        else:
            if attempt == _ATTEMPTS or not again(result):
                return result
        _back_off(attempt)
    raise AssertionError("unreachable")


_ATTEMPTS = 8
_HISTORY_SEARCHED = 100  # commits searched for one's own (concurrent writers commit in between)
# Delta's Python conflict classes each derive from PySparkException alone (not from their common base), so
# catching the base misses them: every one is named.
COMMIT_CONFLICTS = tuple(getattr(delta.exceptions, name) for name in delta.exceptions.__all__)


def _back_off(attempt: int) -> None:
    """Waits longer after each attempt, with jitter so that two retrying runs do not collide again in step."""
    time.sleep(random.uniform(0.5, 1.5) * attempt)
