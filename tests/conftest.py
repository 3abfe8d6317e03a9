"""One real local Spark session (with Delta) for the whole test run; fixtures write their own input files."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from typing import Any

import pytest

from pipelines.config import PipelineConfig, parse_config


@pytest.fixture(scope="session", autouse=True)
def shared_mlflow_store(tmp_path_factory):
    """One sqlite MLflow store for the session: creating its tables costs seconds, so tests share it."""
    path = tmp_path_factory.mktemp("mlflow")
    os.environ["DATAPREP_TEST_MLFLOW_URI"] = f"sqlite:///{path}/mlflow.db"
    yield
    os.environ.pop("DATAPREP_TEST_MLFLOW_URI")


@pytest.fixture(scope="session")
def spark():
    from pipelines.config import SparkConfig
    from pipelines.spark import get_spark

    session = get_spark(SparkConfig(master="local[2]", driver_memory="2g", shuffle_partitions=2))
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@dataclass(frozen=True)
class DemoRun:
    lakehouse: str
    output: str  # what the stages printed


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, spark) -> DemoRun:
    """`dataprep demo` once (training 12 steps) for every test that reads what it leaves: the CLI's and the
    notebooks'. Those tests must not change it."""
    from pipelines.cli import main

    # The demo ends by training in the PyTorch environment (scripts/test.sh exports its interpreter).
    assert os.environ.get("DATAPREP_TORCH_PYTHON"), "run the suite with scripts/test.sh (it builds the torch env)"
    lakehouse = str(tmp_path_factory.mktemp("demo") / "lakehouse")
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert main(["demo", "--lakehouse", lakehouse, "--train-steps", "12"]) == 0
    return DemoRun(lakehouse, output.getvalue())


def make_config(root: str, sources: list[dict[str, Any]], **sections: Any) -> PipelineConfig:
    """A validated config whose lakehouse and MLflow store live under `root`."""
    raw = {
        "lakehouse": {"root": os.path.join(root, "lakehouse")},
        "mlflow": {"tracking_uri": os.environ["DATAPREP_TEST_MLFLOW_URI"]},
        "sources": sources,
        **sections,
    }
    return parse_config(raw)


def write_lines(path: str, lines: list[bytes | str]) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        for line in lines:
            handle.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\n")
    return path


def write_file(path: str, data: bytes | str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path
