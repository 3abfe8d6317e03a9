"""MLflow bookkeeping shared by every stage: one run per stage execution, with its parameters and counts.

The embedded default is a sqlite store inside the lakehouse (MLflow 3.13+ refuses the old ./mlruns file store); on
Databricks set `mlflow.tracking_uri: databricks`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import mlflow
from mlflow.entities import Run

from pipelines.faults import failpoint
from pipelines.settings import MlflowConfig

PARENT_RUN_ENV = "DATAPREP_PARENT_RUN_ID"


def configure(settings: MlflowConfig) -> str:
    """Points MLflow at the configured store and experiment; returns the experiment id."""
    if settings.tracking_uri.startswith("sqlite:"):
        os.makedirs(os.path.dirname(settings.tracking_uri.removeprefix("sqlite:///")), exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    with _store_lock(settings.tracking_uri):
        experiment = mlflow.get_experiment_by_name(settings.experiment)
        if experiment is not None:
            return experiment.experiment_id
        return mlflow.create_experiment(settings.experiment, artifact_location=settings.artifact_location)


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
