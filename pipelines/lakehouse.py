"""Named Delta tables, wherever the lakehouse lives.

Stages speak of tables by their medallion name (`bronze.documents`). Locally that is a Delta directory under the
lakehouse root (`<root>/bronze/documents`); with Unity Catalog configured it is `<catalog>.<schema>.bronze_documents`.
Nothing else in the code needs to know which.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import delta.exceptions
import delta.exceptions.captured  # noqa: F401  (turns Delta's JVM commit conflicts into the Python classes below)
from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from pipelines.config import LakehouseConfig


@dataclass(frozen=True)
class Table:
    """One Delta table of the lakehouse: `layer.name` plus where it is stored."""

    spark: SparkSession
    layer: str
    name: str
    path: str | None  # local/object-store location; None for a Unity Catalog managed table
    full_name: str | None  # catalog.schema.table; None for a path table

    @property
    def label(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def sql_name(self) -> str:
        """What to put after FROM in SQL."""
        return self.full_name if self.full_name else f"delta.`{self.path}`"

    def exists(self) -> bool:
        if self.full_name:
            return self.spark.catalog.tableExists(self.full_name)
        return DeltaTable.isDeltaTable(self.spark, self.path)

    def create_if_missing(self, schema: StructType, comment: str) -> None:
        builder = DeltaTable.createIfNotExists(self.spark).addColumns(schema).comment(comment)
        builder = builder.tableName(self.full_name) if self.full_name else builder.location(self.path)

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

    def append(self, frame: DataFrame) -> None:
        writer = frame.write.format("delta").mode("append")
        writer.saveAsTable(self.full_name) if self.full_name else writer.save(self.path)

    def drop(self) -> None:
        if self.full_name:
            self.spark.sql(f"DROP TABLE IF EXISTS {self.full_name}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)

    def version(self) -> int:
        """The latest committed version (what a report or manifest records as 'read at')."""
        return int(self.delta().history(1).select("version").first()[0])


class Lakehouse:
    def __init__(self, spark: SparkSession, config: LakehouseConfig) -> None:
        self.spark = spark
        self.config = config

    def table(self, label: str) -> Table:
        layer, _, name = label.partition(".")
        if not layer or not name:
            raise ValueError(f"table names are 'layer.name' such as 'bronze.documents', got {label!r}")
        if self.config.uses_unity_catalog:
            full_name = f"{self.config.catalog}.{self.config.schema}.{layer}_{name}"
            return Table(self.spark, layer, name, path=None, full_name=full_name)
        return Table(self.spark, layer, name, path=os.path.join(self.config.root, layer, name), full_name=None)


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
# Delta's Python conflict classes each derive from PySparkException alone (not from their common base), so
# catching the base misses them: every one is named.
COMMIT_CONFLICTS = tuple(getattr(delta.exceptions, name) for name in delta.exceptions.__all__)


def _back_off(attempt: int) -> None:
    """Waits longer after each attempt, with jitter so that two retrying runs do not collide again in step."""
    time.sleep(random.uniform(0.5, 1.5) * attempt)
