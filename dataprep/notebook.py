"""What the notebooks in notebooks/ share, so that the same file runs on Databricks and locally.

On Databricks the notebook's globals hold `spark`, `dbutils` and `display`; locally (tests, a laptop) they do not,
and widgets fall back to environment variables (`DATAPREP_<NAME>`), `display` to a printed table, and the session
to the embedded one.
"""

from __future__ import annotations

import os
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from dataprep.config import PipelineConfig, load_config


class Notebook:
    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace

    def widget(self, name: str, default: str) -> str:
        """A text widget on Databricks; locally DATAPREP_<NAME> or the default."""
        dbutils = self.namespace.get("dbutils")
        if dbutils is not None:
            dbutils.widgets.text(name, default)
            return dbutils.widgets.get(name)
        return os.environ.get(f"DATAPREP_{name.upper()}", default)

    def config(self) -> PipelineConfig:
        """The pipeline config of the `config` widget; without one, the demo's over the `lakehouse` widget."""
        from dataprep.cli import demo_config

        path = self.widget("config", "")
        return load_config(path) if path else demo_config(self.widget("lakehouse", "./lakehouse"))

    def spark(self, config: PipelineConfig) -> SparkSession:
        from pipelines.spark import get_spark

        return self.namespace.get("spark") or get_spark(config.spark)

    def show(self, data: Any, rows: int = 20) -> None:
        """Databricks' display() where there is one; else the first rows as text."""
        display = self.namespace.get("display")
        if display is not None:
            display(data)
            return
        if isinstance(data, DataFrame):
            data = data.limit(rows).toPandas()
        print(data.head(rows).to_string() if hasattr(data, "head") else data)
