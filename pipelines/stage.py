"""What a stage is: its declaration (name, tables, config sections, run function, command-line options), what its
run function is given (`StageContext`) and what it returns (a `StageSummary`).

The common skeleton every stage shares (input check, MLflow stage run, timer, metrics, reconciliation tag, the
tables read as MLflow inputs, the summary page) is written once, in dataprep/runner.py; a stage's run function does
only its own work. This module imports nothing heavier than pyarrow, so the registry built from it (stages.py) can be
read by any process, the PyTorch environment's command line included.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipelines.tables import TableSpec

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from pipelines.lakehouse import Lakehouse
    from pipelines.tracking import StepTimer


class MissingTableError(FileNotFoundError):
    """A stage's input table does not exist yet: an earlier stage has not run."""


@dataclass(frozen=True)
class Option:
    """A command-line option of a stage, passed to its run function as the keyword `dest`."""

    flag: str  # e.g. "--source"
    dest: str  # the run function's keyword
    help: str
    action: str = "store"  # argparse action: store, store_true, append
    metavar: str | None = None  # what the help shows for the value


@dataclass(frozen=True)
class StageSpec:
    name: str
    help: str  # one line, for the command line
    reads: tuple[TableSpec, ...]  # tables that must exist before it runs (each written by an earlier stage)
    writes: tuple[TableSpec, ...]
    sections: tuple[str, ...]  # config sections handed to the run function, in order, after the context
    run: str  # "module:function", imported when the stage runs (keeps this declaration free of Spark imports)
    options: tuple[Option, ...] = ()
    # "module:function" taking the same sections and options as `run`, raising ConfigError on a setting the stage
    # cannot honour: run before anything runs (before a whole pipeline, when the stage is part of one)
    preflight: str | None = None

    def function(self) -> Callable[..., StageSummary]:
        return _resolve(self.run)

    def check(self, sections: list, options: dict) -> None:
        if self.preflight:
            _resolve(self.preflight)(*sections, **options)


def _resolve(reference: str) -> Callable:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass
class StageContext:
    """What the runner hands a stage's run function besides its config sections."""

    spark: SparkSession
    lakehouse: Lakehouse
    run_id: str  # the stage's MLflow run
    started_at: datetime  # UTC, naive (what Delta's timestamp columns store)
    steps: StepTimer  # `with context.steps("name"):` times a step and passes its failpoint


@dataclass(kw_only=True)
class StageSummary:
    """What a stage run returns. The runner fills the three fields below, logs `metrics()`, the summary as JSON,
    `reconciles` as a tag and `format()` as the run's summary page, then calls `report` for the stage's plots."""

    run_id: str = ""
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """The run's MLflow metrics (the runner adds `seconds` and `seconds.<step>`)."""
        raise NotImplementedError

    def format(self) -> str:
        raise NotImplementedError

    def report(self, context: StageContext) -> None:
        """Plots and tables beyond the summary page; none by default."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def timing(self) -> str:
        """`12.3 s: read 4.0 s, merge 8.1 s` for the first line of format()."""
        steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.step_seconds.items())
        return f"{self.seconds:.1f} s" + (f": {steps}" if steps else "")
