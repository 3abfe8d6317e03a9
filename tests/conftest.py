"""One real local Spark session (with Delta) for the whole test run; fixtures write their own input files.

Helpers several test modules use (config builder, file writers, prose generator) are fixtures that return the
function, so that test modules never import one another or this file; they are pure functions, so session-scoped,
which lets module-scoped fixtures use them too."""

from __future__ import annotations

import contextlib
import io
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from spark_plans import executed_plans

from dataprep.config import PipelineConfig, parse_config


@pytest.fixture(scope="session", autouse=True)
def shared_mlflow_store(tmp_path_factory):
    """One sqlite MLflow store for the session: creating its tables costs seconds, so tests share it."""
    path = tmp_path_factory.mktemp("mlflow")
    os.environ["DATAPREP_TEST_MLFLOW_URI"] = f"sqlite:///{path}/mlflow.db"
    yield
    os.environ.pop("DATAPREP_TEST_MLFLOW_URI")


@pytest.fixture(scope="session")
def spark_events(tmp_path_factory) -> str:
    """Where the test session's Spark writes its event log (one uncompressed JSON file): the executed plans."""
    return str(tmp_path_factory.mktemp("spark-events"))


@pytest.fixture(scope="session")
def spark(spark_events):
    from pyspark.sql import SparkSession

    from pipelines import spark_compat
    from pipelines.settings import SparkConfig
    from pipelines.spark import get_spark

    earlier = SparkSession.getActiveSession()
    if earlier is not None:  # started by a command an earlier test ran, configured for it, not for the suite
        earlier.stop()
    events = {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": spark_events,
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    }
    session = get_spark(SparkConfig(master="local[2]", driver_memory="2g", shuffle_partitions=2, conf=events))
    spark_compat.quiet(session)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark_connect(tmp_path_factory) -> str:
    """The `sc://` address of a Spark Connect server with Delta (started once, on first use, for the whole run):
    what Databricks serverless and standard access mode present to PySpark."""
    from cluster_harness import connect_server

    with connect_server(str(tmp_path_factory.mktemp("spark-connect"))) as address:
        yield address


@dataclass(frozen=True)
class DemoRun:
    lakehouse: str
    output: str  # what the stages printed
    plans: list[dict]  # every plan Spark executed for it (spark_plans.executed_plans)


@pytest.fixture(scope="session")
def torch_python() -> str:
    """The PyTorch environment's interpreter (scripts/test.sh builds it and exports its path)."""
    python = os.environ.get("DATAPREP_TORCH_PYTHON")
    if not python:
        pytest.fail("DATAPREP_TORCH_PYTHON is not set: run the tests with `bash scripts/test.sh`, which builds it")
    return python


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, spark, spark_events) -> DemoRun:
    """`dataprep demo` once (training 12 steps) for every test that reads what it leaves: the CLI's and the
    notebooks'. Those tests must not change it."""
    from dataprep.cli import main

    # The demo ends by training in the PyTorch environment (scripts/test.sh exports its interpreter).
    assert os.environ.get("DATAPREP_TORCH_PYTHON"), "run the suite with scripts/test.sh (it builds the torch env)"
    lakehouse = str(tmp_path_factory.mktemp("demo") / "lakehouse")
    output = io.StringIO()
    with executed_plans(spark_events) as plans, contextlib.redirect_stdout(output):
        assert main(["demo", "--lakehouse", lakehouse, "--train-steps", "12"]) == 0
    return DemoRun(lakehouse, output.getvalue(), plans)


# The tests' corpora are a few hundred documents: a quality model of 20,000 hashed n-gram rows (5 MB) instead of
# fastText's 2 M (0.5 GB, written, logged to MLflow and loaded by every Python worker in each test that trains one).
SMALL_QUALITY_MODEL_BUCKETS = 20_000


def with_small_quality_model(sections: dict[str, Any]) -> dict[str, Any]:
    """Config `sections` whose `filter.quality.buckets` is the tests' small table unless they set it."""
    filter_section = dict(sections.get("filter") or {})
    filter_section["quality"] = {"buckets": SMALL_QUALITY_MODEL_BUCKETS, **(filter_section.get("quality") or {})}
    return {**sections, "filter": filter_section}


@pytest.fixture(scope="session")
def make_config() -> Callable[..., PipelineConfig]:
    """`make_config(root, sources, **sections)`: a validated config whose lakehouse and MLflow store live under
    `root`."""

    def build(root: str, sources: list[dict[str, Any]], **sections: Any) -> PipelineConfig:
        raw = {
            "lakehouse": {"root": os.path.join(root, "lakehouse")},
            "mlflow": {"tracking_uri": os.environ["DATAPREP_TEST_MLFLOW_URI"]},
            "sources": sources,
            **with_small_quality_model(sections),
        }
        return parse_config(raw)

    return build


@pytest.fixture(scope="session")
def write_lines() -> Callable[[str, list[bytes | str]], str]:
    """`write_lines(path, lines)`: writes each line (text as UTF-8, bytes as given) and a newline after it, making the
    parent directories; returns `path`."""

    def write(path: str, lines: list[bytes | str]) -> str:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            for line in lines:
                handle.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\n")
        return path

    return write


@pytest.fixture(scope="session")
def write_file() -> Callable[[str, bytes | str], str]:
    """`write_file(path, data)`: writes `data` (text as UTF-8, bytes as given), making the parent directories;
    returns `path`."""

    def write(path: str, data: bytes | str) -> str:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    return write


PROSE_VOCABULARY = (
    "river stone garden window morning letter market bridge harbor lantern valley orchard meadow village "
    "teacher painter sailor farmer baker doctor writer builder walked carried opened noticed followed "
    "remembered painted gathered quiet golden narrow ancient gentle bright heavy distant early"
).split()
PROSE_STOP_WORDS = ["the", "of", "and", "to", "with", "that"]


@pytest.fixture(scope="session")
def prose() -> Callable[..., str]:
    """`prose(sentences, seed=0, words_per_sentence=10)`: varied English-like prose (stop words, terminal punctuation,
    no repeated n-grams to speak of, three sentences a line); the same text for the same arguments."""

    def generate(sentences: int, seed: int = 0, words_per_sentence: int = 10) -> str:
        rng = random.Random(seed)
        out = []
        for _ in range(sentences):
            words = [rng.choice(PROSE_VOCABULARY if j % 3 else PROSE_STOP_WORDS) for j in range(words_per_sentence)]
            out.append(" ".join(words).capitalize() + ".")
        return "\n".join(" ".join(out[i : i + 3]) for i in range(0, len(out), 3))

    return generate
