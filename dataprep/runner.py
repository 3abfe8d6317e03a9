"""The one skeleton every data stage runs in, and the MLflow run that holds a pipeline of them.

`run_stage` checks the stage's input tables, opens its MLflow run (a child of the pipeline run when there is one),
hands the run function its context and config sections, then logs what every stage logs: metrics and step timings,
the summary as JSON, the reconciliation tag, the Delta tables read (with versions) and the summary page.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import mlflow
from pyspark.sql import SparkSession

from dataprep.config import PipelineConfig
from pipelines import reports, storage
from pipelines.faults import FAILPOINT_ENV
from pipelines.lakehouse import Lakehouse
from pipelines.settings import ConfigError
from pipelines.stage import MissingTableError, StageContext, StageSummary
from pipelines.stages import STAGE_NAMES, stage, stages_from, writer_of
from pipelines.storage import Storage
from pipelines.tracking import StepTimer, log_summary, pipeline_run, stage_run


def run_stage(name: str, spark: SparkSession, config: PipelineConfig, **options) -> StageSummary:
    """Runs one registered stage (`options` are its command-line options, by keyword) and returns its summary."""
    spec = stage(name)
    _check_failpoint()
    sections = [getattr(config, section) for section in spec.sections]
    spec.check(sections, options)
    check_paths(config, spark)
    lakehouse = Lakehouse(spark, config.lakehouse)
    lakehouse.prepare()
    reads = [lakehouse.table(table) for table in spec.reads]
    for table in reads:
        if not table.exists():
            raise MissingTableError(f"{table.label} does not exist yet: run the {writer_of(table.spec)} stage first")
    # The versions the stage starts from, for its lineage (a table it also writes has moved on by its end).
    versions_read = {table.label: table.version() for table in reads}
    run = spec.function()
    with stage_run(config.mlflow, config.lakehouse.root, name, {}) as mlflow_run:
        started = time.monotonic()
        context = StageContext(
            spark=spark,
            lakehouse=lakehouse,
            run_id=mlflow_run.info.run_id,
            started_at=datetime.now(timezone.utc).replace(tzinfo=None),
            steps=StepTimer(name),
        )
        summary = run(context, *sections, **options)
        summary.run_id, summary.seconds = context.run_id, time.monotonic() - started
        summary.step_seconds = dict(context.steps.seconds)
        log_summary(name, summary)
        reports.log_inputs(reads, versions=versions_read)
        summary.report(context)
        reports.log_summary_page(name, summary.format())
    return summary


def check_stages(config: PipelineConfig, first_stage: str, options: dict[str, dict]) -> None:
    """Every preflight check of the stages a pipeline will run, before the first of them starts."""
    for spec in stages_from(first_stage):
        spec.check([getattr(config, section) for section in spec.sections], options.get(spec.name, {}))


def check_paths(config: PipelineConfig, spark: SparkSession) -> None:
    """Every data path of the config, before anything runs: one that executors on other hosts cannot see is refused
    when the session has such executors, and an object store's bucket must exist and answer a listing."""
    unshared_paths_problem(config, _master(spark))
    store = Storage.from_spark(spark)
    for key, uri in config.storage_paths().items():
        try:
            store.check_reachable(key, storage.non_glob_prefix(uri) if storage.has_glob(uri) else uri)
        except storage.UnsupportedPath as error:
            raise ConfigError(str(error)) from None


def unshared_paths_problem(config: PipelineConfig, master: str | None) -> None:
    """Refuses a path only this machine sees when executors run on other machines (any master but `local[...]`)."""
    if not master or master.startswith("local"):
        return
    for key, uri in config.storage_paths().items():
        if not storage.is_shared(uri):
            raise ConfigError(
                f"{key}: {uri!r} is a path on this machine, but the Spark session's executors run on other hosts "
                f"(spark.master={master}), where it does not exist: use an object store URI (s3a://bucket/..., "
                "abfss://..., gs://...) or, on Databricks, a Unity Catalog volume (/Volumes/...)"
            )


def _master(spark: SparkSession) -> str | None:
    try:
        return spark.conf.get("spark.master", None)
    except Exception:  # noqa: BLE001 (a Spark Connect session may not expose it: nothing to check then)
        return None


@contextlib.contextmanager
def pipeline(config: PipelineConfig, first_stage: str = STAGE_NAMES[0]) -> Iterator[None]:
    """The parent MLflow run of a pipeline: the stages run inside it (`run_stage`) are its children. The resolved
    config is its parameters; `first_stage` is tagged, so that the report expects no earlier stage."""
    with pipeline_run(config.mlflow, config.lakehouse.root, dataclasses.asdict(config)):
        mlflow.set_tag("dataprep.first_stage", first_stage)
        yield


def _check_failpoint() -> None:
    """A failpoint naming no stage would never fire: a test relying on it would pass without its crash."""
    name = os.environ.get(FAILPOINT_ENV)
    if name and name.partition(".")[0] not in STAGE_NAMES:
        raise ConfigError(f"{FAILPOINT_ENV}={name!r}: failpoints are '<stage>.<step>' with a stage of {STAGE_NAMES}")
