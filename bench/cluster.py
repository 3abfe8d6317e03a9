"""The pipeline on a Spark standalone cluster over object storage, beside local mode: same results, and the time.

    source scripts/env.sh && ensure_torch_env && python bench/cluster.py [--work DIR]

The scenario of tests/test_cluster.py (tests/cluster_scenario.py), run as a benchmark: a master and two workers,
each worker in its own mount namespace that hides the driver's checkout and temporary directory (so the project's
code reaches them only as the driver ships it, and nothing on the driver's disk is visible to them), and an
S3-compatible server (moto) on loopback as the only storage they share. The whole pipeline runs three times from
`python -m dataprep run`: in local mode on local paths, on the cluster with every path a bucket URI, and on the
cluster again with one worker SIGKILLed in the middle of the filter stage. Then two training steps read the shards
from the bucket. Delta tables are compared row for row (read by delta-rs), MDS files byte for byte.

This machine has 2 cores: the cluster's two workers get one core each, local mode both. The cluster run's extra
time is the price of separate executor JVMs, s3a and an S3 server on the same 2 cores, not a forecast for real
machines. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the scenario and the cluster harness are shared with the test

from cluster_harness import s3_server, standalone_cluster  # noqa: E402
from cluster_scenario import (  # noqa: E402
    STAGE,
    ScenarioFailed,
    mds_digests,
    run_everywhere,
    table_rows,
    upload_tree,
    write_corpus,
)

from pipelines.storage import Storage  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", help="working directory (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="dataprep-cluster-bench-")
    torch_python = os.environ.get("DATAPREP_TORCH_PYTHON")
    if not torch_python:
        sys.exit("DATAPREP_TORCH_PYTHON is not set: `source scripts/env.sh && ensure_torch_env` first")
    write_corpus(f"{work}/corpus")
    hidden = [ROOT, os.path.realpath(tempfile.gettempdir())]
    with s3_server() as s3:
        os.environ.update(s3.env)  # this process's AWS clients find the credentials where they look
        s3.create_bucket("lake")
        env = {**s3.env, "PYSPARK_PYTHON": sys.executable, "DATAPREP_TORCH_PYTHON": torch_python}
        store = Storage(s3_endpoint=s3.endpoint)
        upload_tree(store, f"{work}/corpus", "s3://lake/corpus")
        with standalone_cluster(workers=2, hidden_paths=hidden, env=env) as cluster:
            try:
                run = run_everywhere(work, cluster, s3.endpoint, env)
            except ScenarioFailed as error:
                sys.exit(str(error))
        expected = table_rows(f"{work}/local")
        files = mds_digests(Storage(), f"{work}/local/{STAGE}")
        identical = table_rows("s3a://lake/cluster", s3.endpoint) == expected and (
            mds_digests(store, f"s3://lake/cluster/{STAGE}") == files
        )
        kill_identical = table_rows("s3a://lake/killed", s3.endpoint) == expected and (
            mds_digests(store, f"s3://lake/killed/{STAGE}") == files
        )
    local_stages, cluster_stages = run.stage_seconds["local"], run.stage_seconds["cluster"]
    print(f"{'stage':<10}{'local s':>10}{'cluster s':>12}")
    for stage in local_stages:
        print(f"{stage:<10}{local_stages[stage]:>10.1f}{cluster_stages.get(stage, float('nan')):>12.1f}")
    print(f"{'run':<10}{run.seconds['local']:>10.1f}{run.seconds['cluster']:>12.1f}   (process wall time)")
    print(f"with worker 0 killed mid-filter: {run.seconds['killed']:.1f} s; training 2 steps from the bucket: "
          f"{run.seconds['train']:.1f} s (process wall times)")  # fmt: skip
    print(
        f"RESULT identical={int(identical)} worker_kill_identical={int(kill_identical)} "
        f"cluster_s={run.seconds['cluster']:.1f} local_s={run.seconds['local']:.1f}"
    )


if __name__ == "__main__":
    main()
