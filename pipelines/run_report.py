"""`dataprep report`: the latest pipeline run in the terminal, or what changed between two pipeline runs.

A pipeline run is the parent MLflow run `dataprep run` / `dataprep demo` opens; its stages are child runs. The report
reads them back from the tracking store, so it works for any past run, from any machine that sees the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pipelines.settings import ConfigError, MlflowConfig
from pipelines.tracking import configure, experiment_name


@dataclass
class PipelineRun:
    run: Run
    stages: dict[str, Run]  # by stage name, in execution order

    @property
    def run_id(self) -> str:
        return self.run.info.run_id


def pipeline_runs(settings: MlflowConfig) -> list[PipelineRun]:
    """Every pipeline run of the configured experiment, newest first."""
    experiment_id = configure(settings)
    client = MlflowClient()  # after configure: a client keeps the store that was current when it was made
    parents = client.search_runs(
        [experiment_id], filter_string="tags.`dataprep.stage` = 'pipeline'", order_by=["attributes.start_time DESC"]
    )
    result = []
    for parent in parents:
        children = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
            order_by=["attributes.start_time ASC"],
        )
        stages = {child.data.tags.get("dataprep.stage", child.info.run_name): child for child in children}
        result.append(PipelineRun(parent, stages))
    return result


def find(settings: MlflowConfig, run_id: str | None) -> PipelineRun:
    """The pipeline run with this id (or id prefix), or the latest."""
    runs = pipeline_runs(settings)
    if run_id:
        for candidate in runs:
            if candidate.run_id.startswith(run_id):
                return candidate
        raise ConfigError(f"no pipeline run {run_id!r} in experiment {experiment_name(settings)!r}")
    if not runs:
        raise ConfigError(f"experiment {experiment_name(settings)!r} has no pipeline run yet: run `dataprep run`")
    return runs[0]


def summary(pipeline: PipelineRun) -> str:
    run = pipeline.run
    first_stage = run.data.tags.get("dataprep.first_stage", "ingest")
    resumed = f", from {first_stage}" if first_stage != "ingest" else ""
    lines = [f"pipeline run {pipeline.run_id} ({run.info.status}, started {_time(run.info.start_time)}{resumed})"]
    for stage, child in pipeline.stages.items():
        # Data stages reconcile row counts; the trainer has none to reconcile.
        reconciles = child.data.tags.get("dataprep.reconciles")
        checked = f", reconciles={reconciles}" if reconciles is not None else ""
        seconds = child.data.metrics.get("seconds")
        took = f", {seconds:.1f} s" if seconds is not None else ""
        lines.append(f"  {stage}: {child.info.status}{checked}{took}  (run {child.info.run_id})")
        for name in sorted(child.data.metrics):
            if not name.startswith("seconds"):
                lines.append(f"      {name} = {_number(child.data.metrics[name])}")
    return "\n".join(lines)


def compare(old: PipelineRun, new: PipelineRun) -> str:
    """Changed settings, then every metric that changed, stage by stage, with the change in percent."""
    lines = [f"pipeline run {new.run_id} against {old.run_id}"]
    old_params, new_params = old.run.data.params, new.run.data.params
    changed = sorted(k for k in set(old_params) | set(new_params) if old_params.get(k) != new_params.get(k))
    lines.append("  settings: " + ("unchanged" if not changed else f"{len(changed)} changed"))
    lines += [f"      {key}: {old_params.get(key)} -> {new_params.get(key)}" for key in changed]
    for stage in dict.fromkeys([*old.stages, *new.stages]):
        before = old.stages[stage].data.metrics if stage in old.stages else {}
        after = new.stages[stage].data.metrics if stage in new.stages else {}
        differences = []
        for name in sorted(set(before) | set(after)):
            a, b = before.get(name), after.get(name)
            if a == b or name.startswith("seconds"):
                continue
            if a is None or b is None:
                differences.append(f"      {name}: {_number(a)} -> {_number(b)}")
            else:
                percent = f" ({(b - a) / a:+.1%})" if a else ""
                differences.append(f"      {name}: {_number(a)} -> {_number(b)}{percent}")
        lines.append(f"  {stage}: " + ("no metric changed" if not differences else f"{len(differences)} changed"))
        lines += differences
    return "\n".join(lines)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _time(milliseconds: int) -> str:
    return datetime.fromtimestamp(milliseconds / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
