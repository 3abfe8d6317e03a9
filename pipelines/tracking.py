"""MLflow bookkeeping shared by every stage: one run per stage execution, with its parameters and counts.

The embedded default is a sqlite store inside the lakehouse (MLflow 3.13+ refuses the old ./mlruns file store); on a
Databricks cluster the default is the workspace's tracking server (`databricks`), whose experiments are workspace
paths: `/Users/<user>/dataprep` unless `mlflow.experiment` names another.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Run

from pipelines.faults import failpoint
from pipelines.settings import DEFAULT_EXPERIMENT, ConfigError, MlflowConfig

if TYPE_CHECKING:
    from pipelines.stage import StageSummary

PARENT_RUN_ENV = "DATAPREP_PARENT_RUN_ID"


def configure(settings: MlflowConfig) -> str:
    """Points MLflow at the configured store, registry and experiment; returns the experiment id."""
    if settings.tracking_uri.startswith("sqlite:"):
        os.makedirs(os.path.dirname(settings.tracking_uri.removeprefix("sqlite:///")), exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    if settings.registry_uri is not None:
        mlflow.set_registry_uri(settings.registry_uri)
    name = experiment_name(settings)
    with _store_lock(settings.tracking_uri):
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return mlflow.create_experiment(name, artifact_location=settings.artifact_location)


def experiment_name(settings: MlflowConfig) -> str:
    """The configured experiment, or on a Databricks server the home path of the user the run authenticates as."""
    if settings.experiment is not None:
        return settings.experiment
    return f"/Users/{databricks_user(settings.tracking_uri)}/{DEFAULT_EXPERIMENT}"


@functools.lru_cache
def databricks_user(tracking_uri: str) -> str:
    """The user name (a service principal's application id) that the credentials of `databricks` or
    `databricks://<profile>` belong to, asked of the workspace with databricks-sdk, which MLflow depends on and which
    finds credentials as MLflow does: the cluster's own on Databricks, else DATABRICKS_HOST / DATABRICKS_TOKEN (or
    another unified-auth method) or the named profile of ~/.databrickscfg."""
    advice = f"set mlflow.experiment to a workspace path such as /Shared/{DEFAULT_EXPERIMENT}"
    profile = tracking_uri.partition("://")[2] or None
    if profile is not None and ":" in profile:
        raise ConfigError(
            f"mlflow.experiment: {tracking_uri!r} keeps its credentials in a secret scope, where the current user "
            f"cannot be looked up for the default /Users/<user>/{DEFAULT_EXPERIMENT}: {advice}"
        )
    try:
        from databricks.sdk import WorkspaceClient

        return WorkspaceClient(profile=profile).current_user.me().user_name
    except Exception as error:  # noqa: BLE001 (missing SDK, no credentials, workspace unreachable: one advice)
        raise ConfigError(
            f"mlflow.experiment: the default /Users/<current user>/{DEFAULT_EXPERIMENT} needs the workspace's current "
            f"user, and asking {tracking_uri!r} for it failed ({type(error).__name__}: {error}); {advice}"
        ) from error


@contextlib.contextmanager
def muted(logger_name: str, warning: str) -> Iterator[None]:
    """Quiets one MLflow logger (below ERROR) and the warnings whose message matches `warning` while something is
    logged: MLflow's advice on every dataset or model it logs (schemas, input examples), which is noise in every
    run's output where we chose otherwise on purpose."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=warning, category=UserWarning)
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    """Holds an exclusive file lock beside a local sqlite store while it is opened. Two runs starting at once
    against a new store would otherwise both run its schema migrations (one leaves it broken) or both create the
    experiment; with the lock the second finds the store and the experiment made."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    with open(tracking_uri.removeprefix("sqlite:///") + ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def pipeline_run(
    settings: MlflowConfig, lakehouse: str, resolved: dict[str, Any], name: str = "pipeline"
) -> Iterator[Run]:
    """The parent MLflow run of a whole pipeline: the resolved config (a dict) as parameters and as config.json;
    each stage run opened inside it is its child. Runs are tagged with the lakehouse root they worked on."""
    experiment_id = configure(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
        mlflow.set_tags({"dataprep.stage": name, "dataprep.lakehouse": lakehouse})
        mlflow.log_params({key: _param_value(value) for key, value in _flatten(resolved).items()})
        mlflow.log_dict(resolved, "config.json")
        yield run


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


@contextlib.contextmanager
def stage_run(settings: MlflowConfig, lakehouse: str, stage: str, params: Mapping[str, Any]) -> Iterator[Run]:
    """An MLflow run for one stage; nested under the active run when a pipeline run is open (or under the run that
    $DATAPREP_PARENT_RUN_ID names)."""
    experiment_id = configure(settings)
    nested = mlflow.active_run() is not None
    # A stage run in another process (the trainer, started by `dataprep run`) names its parent through the
    # environment.
    parent = None if nested else os.environ.get(PARENT_RUN_ENV)
    with mlflow.start_run(experiment_id=experiment_id, run_name=stage, nested=nested, parent_run_id=parent) as run:
        mlflow.set_tags({"dataprep.stage": stage, "dataprep.lakehouse": lakehouse})
        mlflow.log_params({key: _param_value(value) for key, value in params.items()})
        yield run


def _param_value(value: Any) -> str:
    text = str(value)
    # MLflow rejects parameter values over 6000 characters.
    return text if len(text) <= 6000 else text[:5990] + "...[cut]"


def log_summary(stage: str, summary: StageSummary) -> None:
    """A finished stage's summary in the active run: its metrics with the stage's and each step's seconds, the
    summary as JSON, and the reconciliation tag."""
    metrics = {"seconds": summary.seconds, **summary.metrics()}
    metrics.update({metric_name("seconds", step): value for step, value in summary.step_seconds.items()})
    mlflow.log_metrics(metrics)
    mlflow.log_dict(summary.as_dict(), f"{stage}_summary.json")
    mlflow.set_tag("dataprep.reconciles", str(summary.reconciles).lower())


def metric_name(*parts: str) -> str:
    """MLflow metric names allow letters, digits, and _ - . / space; anything else becomes '_'."""
    joined = ".".join(parts)
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in joined)


class StepTimer:
    """Wall-clock seconds per named step, reported with the run so slow steps are visible. Entering a step passes
    the failpoint `<stage>.<step>` (pipelines/faults.py)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        failpoint(f"{self.stage}.{name}")
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - started
