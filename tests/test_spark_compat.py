"""pipelines/spark_compat.py, the one module that may touch a classic session's internals: each function on a
classic session and through Spark Connect (in a child process: a Connect session switches PySpark into Connect
mode for its whole process), and the rule that no other module of the product touches them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from pipelines import spark_compat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRODUCT = ["pipelines", "dataprep", "trainer", "jobs", "notebooks", "bench"]
CLASSIC_ONLY = re.compile(r"\bsparkContext\b|\b_jvm\b|\b_jsc\b|\b_jsparkSession\b|\.rdd\b|\bSparkContext\b")


def test_on_a_classic_session(spark, tmp_path):
    assert not spark_compat.is_connect(spark)
    assert spark_compat.default_parallelism(spark) == 2  # the test session is local[2]
    spark_compat.quiet(spark)
    spark_compat.forget_cached_delta_logs(spark)
    package = tmp_path / "compat_probe_classic"
    package.mkdir()
    (package / "__init__.py").write_text("VALUE = 41\n")
    archive = _zip(tmp_path, package)
    spark_compat.add_python_archive(spark, archive)

    def probe(batches):  # defined here, so that it travels by value, not as a reference to this test module
        import compat_probe_classic

        for batch in batches:
            yield batch.assign(value=compat_probe_classic.VALUE + 1)[["value"]]

    assert spark.range(1).mapInPandas(probe, "value long").first()["value"] == 42


def _zip(directory, package) -> str:
    import zipfile

    path = str(directory / f"{package.name}.zip")
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(package / "__init__.py", f"{package.name}/__init__.py")
    return path


CONNECT_PROBE = """
import json, sys, zipfile
from pyspark.sql import SparkSession
from pipelines import spark_compat

spark = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
with zipfile.ZipFile(sys.argv[2] + "/compat_probe_connect.zip", "w") as archive:
    archive.writestr("compat_probe_connect/__init__.py", "VALUE = 6\\n")
spark_compat.add_python_archive(spark, sys.argv[2] + "/compat_probe_connect.zip")

def probe(batches):
    import compat_probe_connect
    for batch in batches:
        yield batch.assign(value=compat_probe_connect.VALUE * 7)[["value"]]

spark_compat.quiet(spark)
spark_compat.forget_cached_delta_logs(spark)
print(json.dumps({
    "is_connect": spark_compat.is_connect(spark),
    "parallelism": spark_compat.default_parallelism(spark),
    "shipped": spark.range(1).mapInPandas(probe, "value long").first()["value"],
}))
"""


def test_through_spark_connect(spark_connect, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", CONNECT_PROBE, spark_connect, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # the server's shuffle partition count (tests/cluster_harness.py:connect_server) stands in for its parallelism
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"is_connect": True, "parallelism": 2, "shipped": 42}


def test_no_other_module_touches_a_classic_sessions_internals():
    offenders = []
    for top in PRODUCT:
        for folder, _, names in os.walk(os.path.join(REPO, top)):
            for name in names:
                path = os.path.join(folder, name)
                if not name.endswith(".py") or path.endswith(os.path.join("pipelines", "spark_compat.py")):
                    continue
                with open(path, encoding="utf-8") as handle:
                    for number, line in enumerate(handle, 1):
                        code = line.split("#", 1)[0]
                        if CLASSIC_ONLY.search(code) and not code.lstrip().startswith(('"', "'")):
                            offenders.append(f"{os.path.relpath(path, REPO)}:{number}: {line.strip()}")
    assert not offenders, "use pipelines/spark_compat.py:\n" + "\n".join(offenders)
