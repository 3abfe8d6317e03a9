"""The proof that the pipeline runs on a real cluster with object storage and nothing shared but the bucket.

The test starts a Spark standalone master and two workers (separate processes, each in its own mount namespace
with a tmpfs over the checkout and the temporary directory, so nothing the driver writes locally is visible to them
and the project is not installed for them: its code reaches them only as the driver ships it) and an S3-compatible
server (moto) on loopback. The whole pipeline, then a few training steps, runs with every path a bucket URI
(`s3a://` and `s3://` both), from `python -m dataprep` processes as a user runs them, and one of the two workers is
SIGKILLed in the middle of the filter stage. Its Delta tables must equal a local-mode run's row for row and its MDS
files byte for byte. bench/cluster.py runs the same scenario, with an undisturbed cluster run too, and prints the
timings.
"""

from __future__ import annotations

import os
import sys

import mlflow
import pytest
from cluster_harness import s3_server, standalone_cluster
from cluster_scenario import STAGE, mds_digests, run_everywhere, table_rows, upload_tree, write_corpus

from pipelines import storage
from pipelines.storage import Storage

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_pipeline_on_a_cluster_over_object_storage_equals_local_mode_even_when_a_worker_dies(
    tmp_path, torch_python
):
    work = str(tmp_path)
    write_corpus(f"{work}/corpus")
    hidden = [REPOSITORY, os.path.realpath(os.environ.get("TMPDIR", "/tmp"))]
    with s3_server() as s3, pytest.MonkeyPatch.context() as patch:
        for name, value in s3.env.items():  # this process's AWS clients find the credentials where they look
            patch.setenv(name, value)
        s3.create_bucket("lake")
        env = {**s3.env, "PYSPARK_PYTHON": sys.executable, "DATAPREP_TORCH_PYTHON": torch_python}
        store = Storage(s3_endpoint=s3.endpoint)
        assert upload_tree(store, f"{work}/corpus", "s3://lake/corpus") == 12
        with standalone_cluster(workers=2, hidden_paths=hidden, env=env) as cluster:
            run = run_everywhere(work, cluster, s3.endpoint, env, local_alongside=True, plain_run=False)
        assert run.verify_output.rstrip().endswith("ok"), run.verify_output

        # Everything the cluster wrote is in the bucket, equal to what local mode wrote.
        expected = table_rows(f"{work}/local")
        assert all(expected[name] for name in expected), {name: len(rows) for name, rows in expected.items()}
        assert table_rows("s3://lake/killed", s3.endpoint) == expected
        local_files = mds_digests(Storage(), f"{work}/local/{STAGE}")
        assert {"index.json", "manifest.json"} < set(local_files) and len(local_files) > 4
        assert mds_digests(store, f"s3a://lake/killed/{STAGE}") == local_files
        checkpoints = [e.uri for e in store.list_files("s3://lake/killed/checkpoints")]
        assert any(uri.endswith("step-00000002.pt") for uri in checkpoints), checkpoints
        assert not [e.uri for e in store.list_files("s3://lake/killed/staging")]  # per-run scratch removed
        _assert_killed_during_filter(f"{work}/killed.db", run.killed_at)
        _assert_streaming_reads(torch_python, s3.env, f"s3://lake/killed/{STAGE}", f"{work}/streaming", store)


def _assert_killed_during_filter(mlflow_db: str, killed_at: float) -> None:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{mlflow_db}")
    (experiment,) = client.search_experiments(filter_string="name = 'cluster-proof'")
    (run,) = client.search_runs([experiment.experiment_id], filter_string="tags.`dataprep.stage` = 'filter'")
    assert run.info.start_time / 1000 < killed_at < run.info.end_time / 1000, (run.info, killed_at)


def _assert_streaming_reads(python: str, env: dict, remote: str, local: str, store: Storage) -> None:
    """mosaicml-streaming's own reader, given the bucket URI, reads every sample we wrote."""
    import json
    import subprocess

    manifest = json.loads(store.read_bytes(storage.join(remote, "manifest.json")))
    script = (
        "import sys\nfrom streaming import StreamingDataset\n"
        "data = StreamingDataset(remote=sys.argv[1], local=sys.argv[2], shuffle=False, batch_size=1)\n"
        "print(len(data), sum(len(data[i]['tokens']) for i in range(len(data))))\n"
    )
    environment = {**os.environ, **env, "S3_ENDPOINT_URL": env["AWS_ENDPOINT_URL"]}
    result = subprocess.run([python, "-c", script, remote, local], env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    samples, tokens = map(int, result.stdout.split()[-2:])
    assert (samples, tokens) == (manifest["samples"], manifest["tokens_written"])
