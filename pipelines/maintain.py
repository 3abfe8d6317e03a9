"""`dataprep maintain`: the upkeep every table of the lakehouse needs, however it was written.

For each declared table that exists: its declared layout (clustering keys and properties, which a table made before
they were declared lacks), then OPTIMIZE (small files compacted, rows clustered by the keys, rows that deletion
vectors mark purged), then VACUUM (the files no version within `lakehouse.maintain.retain_hours` needs, deleted).
Each step is idempotent: on a table already maintained, OPTIMIZE commits nothing and VACUUM deletes nothing.

Not a stage of the pipeline (pipelines/stages.py): it reads and writes no rows and runs on its own schedule, at a
time no stage writes (a commit conflict with a writer is retried, but VACUUM must not race a long job reading an old
version). Its summary is a StageSummary all the same, logged to an MLflow run of its own like a stage's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pyspark.errors import PySparkException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines import reports, spark_compat
from pipelines.lakehouse import Lakehouse, Table, retry_on_conflict
from pipelines.settings import DELTA_RETENTION_HOURS, LakehouseConfig, MaintainConfig, MlflowConfig
from pipelines.stage import StageSummary
from pipelines.tables import TABLES
from pipelines.tracking import StepTimer, log_summary, metric_name, stage_run

NAME = "maintain"

# Delta's switch for its refusal to VACUUM with less than the table's retention (DeltaSQLConf).
RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
# How many tasks VACUUM lists a table's directories with: Spark's default of 10,000 is meant for tables partitioned
# into many directories. Ours are not partitioned (one directory of files), and scheduling 10,000 tasks costs a small
# cluster more than the listing: 36-62 s against 5 s for a table of six files on local[2].
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


@dataclass
class TableUpkeep:
    """What maintenance did to one table."""

    table: str  # layer.name
    layout_changed: list[str]  # what apply_layout changed: "clustering", "properties"; empty: it was as declared
    files_before: int  # data files of the current version, before OPTIMIZE
    bytes_before: int
    files_after: int  # after OPTIMIZE
    bytes_after: int
    files_compacted: int  # OPTIMIZE: files rewritten (numFilesRemoved)
    files_written: int  # OPTIMIZE: files they became (numFilesAdded)
    files_deleted: int | None  # VACUUM: files deleted from storage; None when Delta did not log the VACUUM
    bytes_deleted: int | None
    as_declared: bool  # the table ends with its declared clustering keys and properties


@dataclass(kw_only=True)
class MaintainSummary(StageSummary):
    retain_hours: int
    tables: list[TableUpkeep] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # declared tables not created yet: nothing to maintain

    @property
    def reconciles(self) -> bool:
        return all(upkeep.as_declared for upkeep in self.tables)

    def metrics(self) -> dict[str, float]:
        metrics: dict[str, float] = {"tables": len(self.tables)}
        for upkeep in self.tables:
            for key, value in vars(upkeep).items():
                if isinstance(value, int) and not isinstance(value, bool):  # the counts (None: not logged)
                    metrics[metric_name(upkeep.table, key)] = value
        return metrics

    def format(self) -> str:
        lines = [
            f"maintain run {self.run_id} ({self.timing()}); VACUUM keeps {self.retain_hours} h of history",
            f"{'table':<26}{'layout':<22}{'files':>14}{'size':>22}{'OPTIMIZE':>16}{'VACUUM deleted':>24}",
        ]
        for upkeep in self.tables:
            layout = "as declared" if not upkeep.layout_changed else "set " + ", ".join(upkeep.layout_changed)
            files = f"{upkeep.files_before} -> {upkeep.files_after}"
            size = f"{_size(upkeep.bytes_before)} -> {_size(upkeep.bytes_after)}"
            optimized = f"-{upkeep.files_compacted} +{upkeep.files_written}"
            deleted = "not logged"
            if upkeep.files_deleted is not None:
                plural = "" if upkeep.files_deleted == 1 else "s"
                deleted = f"{upkeep.files_deleted} file{plural}, {_size(upkeep.bytes_deleted or 0)}"
            mark = "" if upkeep.as_declared else "  LAYOUT NOT AS DECLARED"
            lines.append(f"{upkeep.table:<26}{layout:<22}{files:>14}{size:>22}{optimized:>16}{deleted:>24}{mark}")
        if self.missing:
            lines.append(f"not created yet: {', '.join(self.missing)}")
        return "\n".join(lines)


def run_maintain(spark: SparkSession, lakehouse: LakehouseConfig, tracking: MlflowConfig) -> MaintainSummary:
    """Maintains every existing table of the lakehouse, in an MLflow run of its own (metrics, summary as JSON and as
    the summary page, the reconciliation tag: what the runner logs for a stage)."""
    settings = lakehouse.maintain
    with stage_run(tracking, lakehouse.root, NAME, {f"{NAME}.{k}": v for k, v in vars(settings).items()}) as run:
        started, steps = time.monotonic(), StepTimer(NAME)
        summary = maintain(Lakehouse(spark, lakehouse), settings, steps)
        summary.run_id, summary.seconds = run.info.run_id, time.monotonic() - started
        summary.step_seconds = dict(steps.seconds)
        log_summary(NAME, summary)
        reports.log_summary_page(NAME, summary.format())
    return summary


def maintain(lakehouse: Lakehouse, settings: MaintainConfig, steps: StepTimer) -> MaintainSummary:
    """Maintains each declared table that exists, in declaration order."""
    summary = MaintainSummary(retain_hours=settings.retain_hours)
    for spec in TABLES:
        table = lakehouse.table(spec)
        if table.exists():
            summary.tables.append(upkeep(table, settings, steps))
        else:
            summary.missing.append(spec.name)
    return summary


def upkeep(table: Table, settings: MaintainConfig, steps: StepTimer) -> TableUpkeep:
    before = table.detail()
    with steps("layout"):
        changed = table.apply_layout()
    with steps("optimize"):
        # New keys: OPTIMIZE leaves files clustered by other keys alone unless told to recluster everything.
        full = "clustering" in changed
        compacted, written = retry_on_conflict(lambda: optimize(table, full), f"OPTIMIZE {table.label}")
    after = table.detail()
    with steps("vacuum"):
        deleted, bytes_deleted = vacuum(table, settings.retain_hours)
    return TableUpkeep(
        table=table.label,
        layout_changed=changed,
        files_before=before.files,
        bytes_before=before.bytes,
        files_after=after.files,
        bytes_after=after.bytes,
        files_compacted=compacted,
        files_written=written,
        files_deleted=deleted,
        bytes_deleted=bytes_deleted,
        as_declared=not table.layout_differences(after),
    )


def optimize(table: Table, full: bool = False) -> tuple[int, int]:
    """OPTIMIZE (FULL: recluster every file); returns (files rewritten, files written). Nothing to do commits
    nothing."""
    row = table.spark.sql(f"OPTIMIZE {table.sql_name}{' FULL' if full else ''}").first()
    metrics = row["metrics"]
    return int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])


def vacuum(table: Table, retain_hours: int) -> tuple[int | None, int | None]:
    """VACUUM keeping `retain_hours` of history; returns the files and bytes it deleted, from the VACUUM START / END
    commits Delta logs (None, None where it does not: by default it logs them on local, HDFS, Azure and GCS storage
    but not on S3, unless spark.databricks.delta.vacuum.logging.enabled says otherwise). Below Delta's safety default
    only as the config allows (`allow_short_retention`, checked when the config was read), with Delta's check off for
    this VACUUM alone."""
    since = table.version()
    settings = {LISTING_PARALLELISM: str(spark_compat.default_parallelism(table.spark))}
    if retain_hours < DELTA_RETENTION_HOURS:
        settings[RETENTION_CHECK] = "false"
    with _session_conf(table.spark, settings):
        table.spark.sql(f"VACUUM {table.sql_name} RETAIN {int(retain_hours)} HOURS").collect()
    logged = {
        row["operation"]: row["operationMetrics"]
        for row in table.history(_VACUUM_COMMITS)
        .where((F.col("version") > since) & F.col("operation").isin("VACUUM START", "VACUUM END"))
        .orderBy(F.desc("version"))  # the oldest last: our own START and END if another VACUUM followed
        .collect()
    }
    if "VACUUM END" not in logged:
        return None, None
    size = (logged.get("VACUUM START") or {}).get("sizeOfDataToDelete")
    return int(logged["VACUUM END"]["numDeletedFiles"]), None if size is None else int(size)


@contextlib.contextmanager
def _session_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """The session's settings changed for the block only, each restored as it was after it (unset stays unset). One
    the session refuses to change (Databricks serverless allows only a few) keeps its value: the VACUUM then runs as
    Delta does by default, and refuses a short retention with its own message."""
    previous: dict[str, str | None] = {}
    try:
        for key, value in settings.items():
            before = spark.conf.get(key, None)
            try:
                spark.conf.set(key, value)
            except PySparkException:
                continue
            previous[key] = before
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def _size(count: int) -> str:
    """Bytes for people: 512 B, 3.4 MB."""
    if count < 1000:
        return f"{count} B"
    for exponent, unit in enumerate(("KB", "MB", "GB", "TB"), start=1):
        if count < 1000 ** (exponent + 1) or unit == "TB":
            return f"{count / 1000**exponent:.1f} {unit}"
    raise AssertionError("unreachable")


_VACUUM_COMMITS = 10  # newest commits searched for the VACUUM's START and END (nothing else should write meanwhile)
