"""The pipeline through Spark Connect, as on Databricks serverless and standard access mode: a Connect server with
Delta (started by the test, from pyspark's own JARs) and `dataprep run` as a client of it, in its own process, with
`SPARK_REMOTE` set as a user sets it. Its tables and MDS files must equal those of a classic run of the same config.

The client is kept from building a session of its own: it is given no Delta JARs, so the embedded session (which
needs them) cannot start; only a run that went through the server can succeed.
"""

from __future__ import annotations

import os

from cluster_scenario import (
    STAGE,
    failure,
    finishing,
    mds_digests,
    start_dataprep,
    table_rows,
    write_config,
    write_corpus,
)

from pipelines.storage import Storage


def test_the_pipeline_through_spark_connect_writes_what_a_classic_run_writes(tmp_path, spark_connect):
    work = str(tmp_path)
    write_corpus(f"{work}/corpus")
    mix = f"{work}/mix.yaml"
    configs = {}
    for mode in ("classic", "connect"):
        root, corpus, mlflow_db = f"{work}/{mode}", f"{work}/corpus", f"{work}/{mode}.db"
        configs[mode] = write_config(f"{work}/{mode}.yaml", root, corpus, "local[2]", mlflow_db, mix)
    os.makedirs(f"{work}/no-jars")
    environments = {"classic": {}, "connect": {"SPARK_REMOTE": spark_connect, "DATAPREP_DELTA_JARS": f"{work}/no-jars"}}
    # The two runs are independent (own lakehouse, own MLflow store): side by side, as two users would run them.
    runs = {mode: start_dataprep(["run", "--config", configs[mode]], env) for mode, env in environments.items()}
    for mode, result in {mode: finishing(process) for mode, process in runs.items()}.items():
        code, output = result()
        assert code == 0, f"{mode} run:\n{failure(output)}"
    assert table_rows(f"{work}/connect") == table_rows(f"{work}/classic")
    store = Storage()
    assert mds_digests(store, f"{work}/connect/{STAGE}") == mds_digests(store, f"{work}/classic/{STAGE}")
