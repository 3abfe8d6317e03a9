"""The cluster proof's scenario, shared by tests/test_cluster.py and bench/cluster.py: a small corpus with every
kind of work in it, one config for local mode and one for the cluster (every path an object store URI), the
pipeline and a few training steps run as a user runs them (`python -m dataprep`, its own driver), and what is
compared afterwards (Delta tables row for row through delta-rs, an independent reader; MDS files byte for byte).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import random
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml
from conftest import PROSE_STOP_WORDS, PROSE_VOCABULARY, SMALL_QUALITY_MODEL_BUCKETS

from pipelines import storage
from pipelines.storage import Storage

# Columns naming the MLflow run that wrote a row (or trained the quality model that scored it): provenance, not data.
RUN_REFERENCES = {"run_id", "quality_model"}
TABLES = ["bronze.documents", "bronze.quarantine", "silver.documents", "gold.tokens"]
STDLIB_MODULES = ["bisect.py", "colorsys.py", "fnmatch.py", "glob.py", "heapq.py", "keyword.py", "shlex.py"]
MIX = {
    "name": "c",
    "seq_len": 128,
    "seed": 5,
    "shards": {"size_limit": 8192, "compression": "zstd"},
    "stages": [
        {
            "name": "main",
            "tokens": 12_000,
            "components": [
                {"name": "prose", "source": "curated", "weight": 2, "max_epochs": 2},
                {"name": "code", "where": "kind = 'code'", "weight": 1},
            ],
        }
    ],
}
STAGE = f"mds/{MIX['name']}/main"
TRAIN = {"model": "tiny", "batch_tokens": 1024, "warmup_steps": 2, "checkpoint_every": 2, "log_every": 1}


def cluster_conf(s3_endpoint: str) -> dict[str, str]:
    """The `spark.conf` of the cluster configs: the S3 connector for the test server, executors that fit the
    workers, jobs that wait for both workers (so a killed worker always had work), the driver on loopback where the
    workers are, quick-starting JVMs (the runs are short)."""
    from cluster_harness import SHORT_LIVED_JVM_OPTIONS, s3a_spark_conf

    jvm = f"-Duser.timezone=UTC {SHORT_LIVED_JVM_OPTIONS}"
    return {
        **s3a_spark_conf(s3_endpoint),
        "spark.executor.memory": "1g",
        "spark.cores.max": "2",
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.scheduler.maxRegisteredResourcesWaitingTime": "60s",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.extraJavaOptions": jvm,
        "spark.executor.extraJavaOptions": jvm,
        "spark.pyspark.python": sys.executable,
    }


def prose(sentences: int, seed: int) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(sentences):
        words = [rng.choice(PROSE_VOCABULARY if j % 3 else PROSE_STOP_WORDS) for j in range(10)]
        out.append(" ".join(words).capitalize() + ".")
    return "\n".join(" ".join(out[i : i + 3]) for i in range(0, len(out), 3))


def write_corpus(directory: str) -> None:
    """Prose with near-duplicates (JSONL, plain and gzip), spam (the quality model's negatives), a malformed record,
    Parquet, a little code and a binary file: every reader and every stage has work, and ingest has something to
    quarantine."""
    import gzip

    curated = [{"id": f"c{i}", "text": prose(24, seed=i)} for i in range(40)]
    for i in range(6):  # near-duplicates for dedup: one sentence added
        curated.append({"id": f"near{i}", "text": curated[i]["text"] + " " + prose(1, seed=1000 + i)})
    records = [json.dumps(record) for record in curated]
    _write(f"{directory}/curated/a.jsonl", "\n".join(records[:25] + ['{"id": "broken", "text": "unter']) + "\n")
    _write(f"{directory}/curated/b.jsonl.gz", gzip.compress(("\n".join(records[25:]) + "\n").encode(), mtime=0))
    spam = [json.dumps({"text": f"BUY NOW cheap deals {i} click here\n" * 12}) for i in range(14)]
    _write(f"{directory}/spam/a.jsonl", "\n".join(spam) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"title": [f"t{i}" for i in range(8)], "body": [prose(18, seed=500 + i) for i in range(8)]})
    os.makedirs(f"{directory}/papers", exist_ok=True)
    pq.write_table(table, f"{directory}/papers/part-0.parquet")
    stdlib = sysconfig.get_paths()["stdlib"]
    for name in STDLIB_MODULES:
        with open(os.path.join(stdlib, name), "rb") as handle:
            _write(f"{directory}/repo/{name}", handle.read())
    _write(f"{directory}/repo/blob.py", bytes(range(256)) * 4)  # binary: quarantined


def _write(path: str, data: str | bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def upload_tree(store: Storage, local: str, uri: str) -> int:
    count = 0
    for folder, _, names in os.walk(local):
        for name in sorted(names):
            path = os.path.join(folder, name)
            store.upload(path, storage.join(uri, os.path.relpath(path, local)))
            count += 1
    return count


def write_config(
    path: str, root: str, corpus: str, master: str, mlflow_db: str, mix_path: str, conf: dict | None = None
) -> str:
    """A pipeline config: lakehouse under `root`, sources under `corpus` (both local paths or URIs)."""
    config = {
        "lakehouse": {"root": root},
        "spark": {"master": master, "shuffle_partitions": 4, "driver_memory": "1g", "conf": conf or {}},
        "mlflow": {"tracking_uri": f"sqlite:///{mlflow_db}", "experiment": "cluster-proof"},
        "sources": [
            {"name": "curated", "format": "jsonl", "paths": [f"{corpus}/curated"], "id_field": "id"},
            {"name": "spam", "format": "jsonl", "paths": [f"{corpus}/spam/*.jsonl"]},
            {"name": "repo", "format": "code", "paths": [f"{corpus}/repo"]},
            {"name": "papers", "format": "parquet", "paths": [f"{corpus}/papers"], "text_field": "body"},
        ],
        # Small byte ranges: the plain JSONL file is read by several tasks, each seeking into the object.
        "ingest": {"split_bytes": 4096},
        "filter": {
            "quality": {
                "positive_sources": ["curated"],
                "negative_sources": ["spam"],
                "epochs": 10,
                "buckets": SMALL_QUALITY_MODEL_BUCKETS,
            }
        },
        "mds": {"mix": mix_path},
        "train": TRAIN,
    }
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle)
    if not os.path.exists(mix_path):
        with open(mix_path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(MIX, handle)
    return path


def start_dataprep(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`python -m dataprep <args>` in its own process: its own Spark driver, as a user or a scheduler runs it."""
    environment = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYSPARK_GATEWAY_PORT")}
    environment.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "dataprep", *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 900) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def finishing(process: subprocess.Popen) -> Callable[[], tuple[int, str]]:
    """Starts reading `process`'s output now, so that a full pipe never stalls it while the caller does something
    else; the call returned waits for its exit code and output (as `finish`)."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(finish, process)
    pool.shutdown(wait=False)
    return future.result


def run_dataprep(args: list[str], env: dict[str, str], timeout: float = 900) -> tuple[int, str, float]:
    """Exit code, output and seconds."""
    started = time.monotonic()
    code, output = finish(start_dataprep(args, env), timeout)
    return code, output, time.monotonic() - started


def failure(output: str) -> str:
    """The lines of a failed run worth reading: Python's traceback and exception lines, not the JVM frames."""
    lines = [line for line in output.splitlines() if not line.lstrip().startswith(("at ", "... "))]
    return "\n".join(lines[-80:])


def stage_seconds(output: str) -> dict[str, float]:
    """Each stage's wall seconds, from the summary line it prints (`<stage> run <id>: ... (12.3 s: ...)`)."""
    import re

    seconds = {}
    for match in re.finditer(r"^(\w+) run [0-9a-f]+\b[^\n]*?(\d+(?:\.\d+)?) s\b", output, flags=re.MULTILINE):
        seconds[match.group(1)] = float(match.group(2))
    return seconds


@dataclass
class ScenarioRun:
    """What `run_everywhere` did: configs, each pipeline run's wall and per-stage seconds, when the worker died."""

    local_config: str
    cluster_config: str
    killed_config: str
    seconds: dict[str, float] = field(default_factory=dict)  # local, cluster, killed, train: process wall time
    stage_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    killed_at: float = 0.0
    verify_output: str = ""


class ScenarioFailed(AssertionError):
    """A command of the scenario exited non-zero; the message holds the lines of its output worth reading."""


def run_everywhere(
    work: str, cluster, s3_endpoint: str, env: dict[str, str], local_alongside: bool = False, plain_run: bool = True
) -> ScenarioRun:
    """The pipeline in local mode on local paths, on `cluster` over the bucket `lake` (corpus uploaded under
    `s3://lake/corpus`), and on the cluster again with worker 0 SIGKILLed in the middle of the filter stage; then
    two training steps and `dataprep verify` on the cluster run's output, from the bucket. The cluster configs spell
    the bucket both ways (s3a:// and s3://), as users do. `local_alongside`: the local run goes on while the cluster
    runs (the test's choice: its timings mean nothing then, a benchmark's do). Without `plain_run` (the test) only
    the run with a killed worker goes on the cluster, and training and `verify` read its output: it proves all the
    plain run would, and more; the benchmark times both."""
    mix, conf = f"{work}/mix.yaml", cluster_conf(s3_endpoint)
    run = ScenarioRun(
        write_config(f"{work}/local.yaml", f"{work}/local", f"{work}/corpus", "local[2]", f"{work}/local.db", mix),
        write_config(f"{work}/cluster.yaml", "s3a://lake/cluster", "s3://lake/corpus", cluster.master_url,
                     f"{work}/cluster.db", mix, conf),
        write_config(f"{work}/killed.yaml", "s3://lake/killed", "s3a://lake/corpus", cluster.master_url,
                     f"{work}/killed.db", mix, conf),
    )  # fmt: skip
    local = finishing(start_dataprep(["run", "--config", run.local_config], env)) if local_alongside else None
    runs = [("local", run.local_config)] if not local else []
    for name, config in runs + ([("cluster", run.cluster_config)] if plain_run else []):
        output = _succeed(["run", "--config", config], env, run, name)
        run.stage_seconds[name] = stage_seconds(output)
    if local:
        code, output = local()
        if code != 0:
            raise ScenarioFailed(f"the local run exited {code}:\n{failure(output)}")
    started = time.monotonic()
    process = start_dataprep(["run", "--config", run.killed_config], env)
    head = []
    for line in process.stdout:
        head.append(line)
        if line.startswith("ingest run "):  # ingest's summary: the filter stage starts now
            break
    time.sleep(8)  # its first Spark jobs are running by then (the test checks the kill fell inside the stage)
    run.killed_at = time.time()
    cluster.kill_worker(0)
    code, output = finish(process)
    run.seconds["killed"] = time.monotonic() - started
    if code != 0:
        raise ScenarioFailed(f"the run with a killed worker failed:\n{failure(''.join(head) + output)}")
    trained, output = (
        (run.cluster_config, "s3a://lake/cluster") if plain_run else (run.killed_config, "s3a://lake/killed")
    )
    _succeed(["train", "--config", trained, "--max-steps", "2"], env, run, "train")
    run.verify_output = _succeed(["verify", f"{output}/{STAGE}", "--config", trained], env, run, "verify")
    return run


def _succeed(args: list[str], env: dict[str, str], run: ScenarioRun, name: str) -> str:
    code, output, seconds = run_dataprep(args, env)
    if code != 0:
        raise ScenarioFailed(f"`dataprep {' '.join(args)}` exited {code}:\n{failure(output)}")
    run.seconds[name] = seconds
    return output


def delta_storage_options(endpoint: str | None) -> dict[str, str]:
    if endpoint is None:
        return {}
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }


def table_rows(root: str, endpoint: str | None = None) -> dict[str, list]:
    """Every Delta table's rows, sorted, read by delta-rs (not Spark), without the columns that record when or by
    which run a row was written."""
    import pyarrow as pa
    from deltalake import DeltaTable

    contents = {}
    for name in TABLES:
        uri = storage.join(root, *name.split("."))
        uri = "s3://" + uri.split("://", 1)[1] if storage.scheme_of(uri) in storage.S3_SCHEMES else uri
        arrow = pa.table(DeltaTable(uri, storage_options=delta_storage_options(endpoint)).scan())  # with DVs
        columns = [
            field.name
            for field in arrow.schema
            if field.name not in RUN_REFERENCES and not str(field.type).startswith("timestamp")
        ]
        rows = [tuple(_plain(row[c]) for c in columns) for row in arrow.select(columns).to_pylist()]
        contents[name] = sorted(rows, key=repr)
    return contents


def _plain(value):
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):  # a map, as pyarrow gives it
            return tuple(sorted((k, _plain(v)) for k, v in value))
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _plain(v)) for k, v in value.items()))
    if isinstance(value, float):
        return round(value, 9)
    return value


def mds_digests(store: Storage, directory: str) -> dict[str, str]:
    """sha256 of every file of an MDS stage directory: shards, index.json, manifest.json."""
    return {
        storage.relative(entry.uri, directory): hashlib.sha256(store.read_bytes(entry.uri)).hexdigest()
        for entry in store.list_files(directory)
    }
