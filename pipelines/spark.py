"""The Spark session every stage runs in.

Five places a stage can run, one function; only the last builds and configures a session:
- An active session (a notebook, Databricks, a test's session, classic or Spark Connect): used as it is.
- Spark Connect (`SPARK_REMOTE=sc://...` or `spark.remote` in the config; Databricks serverless and standard access
  mode are Connect too): a client session of that server, configured by the server, never from here.
- Databricks without an active session (a wheel task): the runtime's own session, as it is.
- `spark-submit`: the launcher has already fixed master, memory and packages; only the Delta SQL settings are added
  and the launcher's choices win.
- Embedded (CLI, tests, notebooks run locally): a `local[*]` session sized for the machine, with Delta configured,
  or a session on the cluster `spark.master` names. The Delta JARs come from the directory in DATAPREP_DELTA_JARS
  (filled by scripts/env.sh), else Spark resolves them from Maven at start-up through `configure_spark_with_delta_pip`.

Executors on other hosts need this project's code. Its dependencies are on their image (the worker Python named by
PYSPARK_PYTHON / spark.pyspark.python has requirements/runtime.txt installed); the project itself is shipped with
the session: its three packages, zipped from the driver's copy, go on every executor's Python path (addPyFile, or a
session artifact under Spark Connect), so executors always run the driver's version of the code and nothing has to
be installed per release. Databricks installs the project's wheel on the cluster instead, and local sessions share
the driver's interpreter.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
import tempfile
import zipfile

from pyspark.sql import SparkSession

from pipelines import spark_compat
from pipelines.settings import SparkConfig, on_databricks_runtime

# The variable PySpark itself reads for a Spark Connect server's address.
REMOTE_ENV = "SPARK_REMOTE"
# What executors import: the project's own packages (its dependencies come with the workers' Python).
PROJECT_PACKAGES = ("pipelines", "trainer", "dataprep")

DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def get_spark(config: SparkConfig | None = None, app_name: str = "dataprep") -> SparkSession:
    """The active session if there is one, else a Spark Connect or Databricks session as it comes, else the embedded
    session built from `config` (see the module's docstring)."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    config = config or SparkConfig()
    remote = os.environ.get(REMOTE_ENV) or config.remote
    if remote:
        # Nothing may be set on a Connect session's builder but the server (a master or conf is an error there).
        return _with_project_code(SparkSession.builder.remote(remote).getOrCreate())
    if on_databricks_runtime():
        return SparkSession.builder.getOrCreate()
    builder = SparkSession.builder.appName(app_name)
    for key, value in DELTA_SQL_CONF.items():
        builder = builder.config(key, value)
    if _launched_by_spark_submit():
        return _with_project_code(builder.getOrCreate())
    if config.master.startswith("local"):
        # A local session talks only to itself: bind to loopback (and skip Spark's hostname warning). A driver of a
        # cluster must be reachable from the workers: it binds as Spark decides, or as spark.driver.host says.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if "spark.pyspark.python" in config.conf:
        # PySpark starts executors' Python from this variable, read when the context starts; the conf alone is
        # honoured only by spark-submit.
        os.environ.setdefault("PYSPARK_PYTHON", config.conf["spark.pyspark.python"])
    elif config.master.startswith("local"):
        # Local workers run this interpreter, not the first `python3` on PATH (PySpark's default): a scheduler (cron,
        # a job runner) starts the console script by its path without activating its environment, and workers
        # started from PATH would lack the project and its dependencies. PySpark reads it when the context starts.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in _local_conf(config).items():
        builder = builder.config(key, value)
    jars = _delta_jars()
    if jars:
        # The config's own spark.jars (a connector, a JDBC driver) are kept beside Delta's.
        extra = [jar for jar in config.conf.get("spark.jars", "").split(",") if jar]
        builder = builder.config("spark.jars", ",".join(dict.fromkeys(jars + _s3a_jars() + extra)))
    else:
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder)
    return _with_project_code(builder.getOrCreate())


def _with_project_code(spark: SparkSession) -> SparkSession:
    """Ships the project's packages to the executors when they run on a cluster, or behind a Connect server, which
    may be anywhere (see the module's docstring)."""
    if on_databricks_runtime():
        return spark
    if not spark_compat.is_connect(spark) and spark.conf.get("spark.master", "local").startswith("local"):
        return spark
    # Not a scratch directory removed on return: a classic driver serves the file to executors when they ask.
    spark_compat.add_python_archive(spark, project_archive(tempfile.mkdtemp(prefix="dataprep-code-")))
    return spark


def project_archive(directory: str) -> str:
    """A zip of the project's packages (sources and their data files, as the driver has them) for executors'
    Python path; the same sources give the same bytes."""
    path = os.path.join(directory, "dataprep-project.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for package in PROJECT_PACKAGES:
            (location,) = importlib.util.find_spec(package).submodule_search_locations
            top = os.path.dirname(location)
            for folder, subfolders, names in os.walk(location):
                subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
                for name in sorted(names):
                    if not name.endswith((".pyc", ".pyo")):
                        full = os.path.join(folder, name)
                        info = zipfile.ZipInfo(os.path.relpath(full, top), date_time=(1980, 1, 1, 0, 0, 0))
                        with open(full, "rb") as handle:
                            archive.writestr(info, handle.read(), zipfile.ZIP_DEFLATED)
    return path


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
        # s3:// means the same bucket to Spark as to Python (pipelines/storage.py): Hadoop's S3A connector serves both
        # spellings, as Databricks does.
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        # Small local tables: no point computing statistics on every commit in a 2-core sandbox.
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    }
    conf.update(config.conf)
    return conf


def _s3a_jars() -> list[str]:
    """Hadoop's S3 connector (hadoop-aws + the AWS SDK bundle), when scripts/env.sh fetched it (DATAPREP_S3A_JARS)."""
    directory = os.environ.get("DATAPREP_S3A_JARS")
    return sorted(glob.glob(os.path.join(directory, "*.jar"))) if directory else []


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
