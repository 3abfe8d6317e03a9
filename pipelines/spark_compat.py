"""What differs between a classic Spark session and a Spark Connect one, in one place.

Databricks serverless compute and standard (shared) access-mode clusters run PySpark through Spark Connect: the
session is a client of a remote server, with no `sparkContext`, no JVM gateway (`_jvm`) and no RDDs. Every stage
therefore speaks only DataFrames and SQL; the few things that still need the classic session's internals are here,
each with what it does under Connect instead.
"""

from __future__ import annotations

from pyspark.errors import PySparkException
from pyspark.sql import SparkSession


def error_condition(error: BaseException) -> str | None:
    """Spark's error class of an error (e.g. DELTA_CONCURRENT_APPEND), whichever kind of session raised it. A Connect
    client and a classic session raise PySpark errors carrying it; but a classic session passes a JVM exception that
    PySpark has no Python class for (Delta's commit conflicts, unless delta's own converter is imported) up as py4j's
    Py4JJavaError, whose JVM exception is asked here."""
    if isinstance(error, PySparkException):
        return error.getCondition()
    java_exception = getattr(error, "java_exception", None)  # py4j.protocol.Py4JJavaError
    if java_exception is None:
        return None
    try:
        return java_exception.getErrorClass()
    except Exception:  # noqa: BLE001 (not a SparkThrowable: it has no error class)
        return None


def is_connect(spark: SparkSession) -> bool:
    """True for a Spark Connect client session (pyspark.sql.connect), which has no JVM on this side."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def default_parallelism(spark: SparkSession) -> int:
    """How many tasks the cluster runs at once, as a default split count. A Connect client cannot ask the scheduler:
    it takes `spark.default.parallelism` when the server sets it, else the shuffle partition count."""
    if not is_connect(spark):
        return spark.sparkContext.defaultParallelism
    configured = spark.conf.get("spark.default.parallelism", None)
    return int(configured or spark.conf.get("spark.sql.shuffle.partitions", "200"))


def add_python_archive(spark: SparkSession, archive: str) -> None:
    """Puts a zip of Python packages on the executors' Python path for this session: `addPyFile` on a classic
    session, a session artifact (which the server adds to its Python workers' path) under Connect."""
    if is_connect(spark):
        spark.addArtifacts(archive, pyfile=True)
    else:
        spark.sparkContext.addPyFile(archive)


def forget_cached_delta_logs(spark: SparkSession) -> None:
    """Drops the classic driver's cache of Delta logs, which remembers "no table here" for a path another process
    has since made a table. A Connect server resolves tables afresh per request: nothing to drop."""
    if not is_connect(spark):
        spark._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()


def quiet(spark: SparkSession, level: str = "ERROR") -> None:
    """Sets the driver's log level (benchmarks and tests keep their output readable). A Connect server's log level
    is the server's own business: nothing to set from the client."""
    if not is_connect(spark):
        spark.sparkContext.setLogLevel(level)
