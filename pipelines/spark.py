"""The Spark session every stage runs in.

Three places a stage can run, one function:
- Databricks (notebook or job): a session is already active; it is reused untouched.
- `spark-submit`: the launcher has already fixed master, memory and packages; only the Delta SQL settings are added
  and the launcher's choices win.
- Embedded (CLI, tests, notebooks run locally): a `local[*]` session sized for the machine, with Delta configured.
  The Delta JARs come from the directory in DATAPREP_DELTA_JARS (filled by scripts/env.sh), else Spark resolves them
  from Maven at start-up through `configure_spark_with_delta_pip`.
"""

from __future__ import annotations

import glob
import os
import sys

from pyspark.sql import SparkSession

from pipelines.settings import SparkConfig

DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def get_spark(config: SparkConfig | None = None, app_name: str = "dataprep") -> SparkSession:
    """Returns the active session if there is one, else builds the embedded local session."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    config = config or SparkConfig()
    builder = SparkSession.builder.appName(app_name)
    for key, value in DELTA_SQL_CONF.items():
        builder = builder.config(key, value)
    if _launched_by_spark_submit():
        return builder.getOrCreate()
    # A local session talks only to itself: bind to loopback (and skip Spark's hostname warning).
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if config.master.startswith("local"):
        # Local workers run this interpreter, not the first `python3` on PATH (PySpark's default): a scheduler (cron,
        # a job runner) starts the console script by its path without activating its environment, and workers
        # started from PATH would lack the project and its dependencies. PySpark reads it when the context starts.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in _local_conf(config).items():
        builder = builder.config(key, value)
    jars = _delta_jars()
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    else:
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder)
    return builder.getOrCreate()


def _launched_by_spark_submit() -> bool:
    # spark-submit (and the pyspark shell) start the JVM first and hand Python its gateway through these variables.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _local_conf(config: SparkConfig) -> dict[str, str]:
    conf = {
        "spark.master": config.master,
        "spark.driver.memory": config.driver_memory,
        "spark.sql.shuffle.partitions": str(config.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": str(config.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        # Arrow-based Python UDFs are how every stage hands batches to Python; keep their batches bounded.
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "2000",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Small local tables: no point computing statistics on every commit in a 2-core sandbox.
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    }
    conf.update(config.conf)
    return conf


def _delta_jars() -> list[str]:
    directory = os.environ.get("DATAPREP_DELTA_JARS")
    if not directory:
        return []
    jars = sorted(glob.glob(os.path.join(directory, "*.jar")))
    if len(jars) < 2:
        raise RuntimeError(
            f"DATAPREP_DELTA_JARS={directory!r} should hold the delta-spark and delta-storage JARs, found {jars}; "
            "rerun scripts/env.sh or unset the variable to let Spark resolve Delta from Maven"
        )
    return jars
