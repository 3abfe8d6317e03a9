"""What each stage leaves in its MLflow run besides metrics: the Delta tables it read (with versions), PNG plots,
tables and a readable summary page. Aggregations run in Spark; only the small results reach matplotlib.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
from pyspark.sql import DataFrame  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from pipelines.lakehouse import Table  # noqa: E402


def log_inputs(tables: list[Table], context: str = "input") -> None:
    """Each table as an MLflow input dataset named `<layer.name>@v<version>`, with its Delta version."""
    for table in tables:
        if not table.exists():
            continue
        version = table.version()
        try:
            with _without_schema_hints():
                dataset = mlflow.data.from_spark(
                    table.read().limit(0),
                    path=table.path if table.path else None,
                    table_name=table.full_name,
                    version=version,
                    name=f"{table.label}@v{version}",
                )
                mlflow.log_input(dataset, context=context)
        except Exception as error:  # lineage is a report, never a reason to fail a stage
            warnings.warn(f"could not log {table.label} as an MLflow input: {error}", stacklevel=2)
        mlflow.set_tag(f"dataprep.read.{table.label}", str(version))


def log_summary_page(title: str, text: str) -> None:
    """summary.md: the stage's printed summary, readable in the MLflow UI."""
    mlflow.log_text(f"# {title}\n\n```\n{text}\n```\n", "summary.md")


def log_table(frame: pd.DataFrame, name: str) -> None:
    with _without_schema_hints():
        mlflow.log_table(frame, artifact_file=f"tables/{name}.json")


@contextlib.contextmanager
def _without_schema_hints() -> Iterator[None]:
    """mlflow infers a model-input schema for logged tables and datasets, warns that int columns cannot hold
    missing values and logs that a map column has no schema it can infer: irrelevant to a report, and noise in every
    stage's output."""
    inference = logging.getLogger("mlflow.data.spark_dataset")
    level = inference.level
    inference.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
            yield
    finally:
        inference.setLevel(level)


def histogram(frame: DataFrame, column: str, bins: int, name: str, title: str, log_x: bool = False) -> None:
    """A histogram of a numeric column computed in Spark (fixed bins over its range)."""
    values = F.log10(F.col(column) + 1) if log_x else F.col(column)
    clean = frame.select(values.alias("value")).where(F.col("value").isNotNull())
    bounds = clean.agg(F.min("value").alias("low"), F.max("value").alias("high")).first()
    if bounds["low"] is None:
        return
    low, high = float(bounds["low"]), float(bounds["high"])
    width = (high - low) / bins or 1.0
    bucket = F.least(F.floor((F.col("value") - low) / width), F.lit(bins - 1)).cast("int")
    counts = dict(clean.groupBy(bucket.alias("bucket")).count().collect())
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.bar([low + (b + 0.5) * width for b in range(bins)], [counts.get(b, 0) for b in range(bins)], width=width * 0.9)
    axes.set_xlabel(f"log10({column} + 1)" if log_x else column)
    axes.set_ylabel("documents")
    axes.set_title(title)
    _log_figure(figure, name)


def bars(labels: list[str], values: list[float], name: str, title: str, ylabel: str, second: list[float] | None = None,
         legend: tuple[str, str] = ("", "")) -> None:  # fmt: skip
    """Horizontal bars (one series, or two side by side: e.g. requested and realised)."""
    figure, axes = plt.subplots(figsize=(8, max(2.5, 0.35 * len(labels) + 1)))
    positions = range(len(labels))
    if second is None:
        axes.barh(list(positions), values)
    else:
        axes.barh([p - 0.2 for p in positions], values, height=0.4, label=legend[0])
        axes.barh([p + 0.2 for p in positions], second, height=0.4, label=legend[1])
        axes.legend()
    axes.set_yticks(list(positions), labels)
    axes.invert_yaxis()
    axes.set_xlabel(ylabel)
    axes.set_title(title)
    _log_figure(figure, name)


def _log_figure(figure, name: str) -> None:
    figure.tight_layout()
    mlflow.log_figure(figure, f"plots/{name}.png")
    plt.close(figure)
