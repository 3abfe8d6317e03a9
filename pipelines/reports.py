"""What each stage leaves in its MLflow run besides metrics: the Delta tables it read (with versions), PNG plots,
tables and a readable summary page. Aggregations run in Spark; only the small results reach matplotlib.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.data.delta_dataset_source import DeltaDatasetSource  # noqa: E402
from mlflow.data.spark_dataset import SparkDataset  # noqa: E402
from pyspark.sql import DataFrame  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from pipelines.lakehouse import Table  # noqa: E402
from pipelines.tracking import muted  # noqa: E402

# mlflow infers a model-input schema for logged tables and datasets, warns that int columns cannot hold missing values
# and logs that a map column has no schema it can infer: irrelevant to a report, and noise in every stage's output.
_SCHEMA_HINTS = ("mlflow.data.spark_dataset", "Hint: Inferred schema contains integer")


def log_inputs(tables: list[Table], context: str = "input", versions: Mapping[str, int] | None = None) -> None:
    """Each table as an MLflow input dataset named `<layer.name>@v<version>`, whose source is the Delta table (its
    Unity Catalog name, else its path) at that version: `versions[label]` when given (what the stage read), else its
    latest."""
    for table in tables:
        if not table.exists():
            continue
        version = versions[table.label] if versions and table.label in versions else table.version()
        try:
            # The source is built here rather than guessed by mlflow.data.from_spark, which takes a path for a Delta
            # table only when it finds a _delta_log on a local disk: an s3:// or abfss:// table lost its lineage.
            if table.full_name:
                source = DeltaDatasetSource(delta_table_name=table.full_name, delta_table_version=version)
            else:
                source = DeltaDatasetSource(path=table.path, delta_table_version=version)
            # A table version is its content: the digest says so, where MLflow's default would hash a Spark plan.
            digest = hashlib.sha256(f"{table.full_name or table.path}@{version}".encode()).hexdigest()[:8]
            with muted(*_SCHEMA_HINTS):
                dataset = SparkDataset(table.read().limit(0), source, name=f"{table.label}@v{version}", digest=digest)
                mlflow.log_input(dataset, context=context)
        except Exception as error:  # lineage is a report, never a reason to fail a stage
            warnings.warn(f"could not log {table.label} as an MLflow input: {error}", stacklevel=2)
        mlflow.set_tag(f"dataprep.read.{table.label}", str(version))


def log_summary_page(title: str, text: str) -> None:
    """summary.md: the stage's printed summary, readable in the MLflow UI."""
    mlflow.log_text(f"# {title}\n\n```\n{text}\n```\n", "summary.md")


def log_table(frame: pd.DataFrame, name: str) -> None:
    with muted(*_SCHEMA_HINTS):
        mlflow.log_table(frame, artifact_file=f"tables/{name}.json")


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
