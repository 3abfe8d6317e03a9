"""Reliability: a run killed inside every stage and restarted, on other parallelism, ends where an uninterrupted run
ends; two ingests at once lose and double nothing.

The pipeline runs in subprocesses (`python -m dataprep`), each with its own Spark driver, so that a SIGKILL is a
real crash: the failpoints of pipelines/faults.py kill the driver on entering a step, after what came before was
committed and before the rest of the stage was.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading

import pytest
import yaml
from conftest import with_small_quality_model
from pyspark.sql.types import TimestampType

from dataprep.cli import main
from dataprep.config import load_config
from pipelines import run_report

# Each entered once per run; the run before the last of them has committed everything up to it.
FAILPOINTS = ["ingest.merge_quarantine", "filter.decide", "dedup.decide", "tokenize.stats", "mds.publish"]
# Columns naming the MLflow run that wrote a row (or trained the quality model that scored it): provenance, not data.
RUN_REFERENCES = {"run_id", "quality_model"}
STDLIB_MODULES = ["bisect.py", "colorsys.py", "fnmatch.py", "glob.py", "heapq.py", "keyword.py", "shlex.py"]
MIX = {
    "name": "r",
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


@pytest.fixture
def corpus(tmp_path, prose, write_lines, write_file) -> list[dict]:
    """Writes under `tmp_path` prose with near-duplicates (one sentence changed), spam, a little code, and records to
    quarantine; returns its sources."""
    root = str(tmp_path)
    curated = [{"id": f"c{i}", "text": prose(24, seed=i)} for i in range(30)]
    for i in range(5):
        lines = curated[i]["text"].split("\n")
        lines[3] = prose(3, seed=1000 + i)
        curated.append({"id": f"near{i}", "text": "\n".join(lines)})
    records = [json.dumps(record) for record in curated] + ['{"id": "broken", "text": "unterminated']
    write_lines(f"{root}/curated/a.jsonl", records)
    write_lines(f"{root}/spam/a.jsonl", [json.dumps({"text": f"BUY NOW cheap deals {i} click here\n" * 12})
                                         for i in range(12)])  # fmt: skip
    stdlib = sysconfig.get_paths()["stdlib"]
    for name in STDLIB_MODULES:
        shutil.copy(os.path.join(stdlib, name), os.path.join(_mkdir(f"{root}/repo"), name))
    write_file(f"{root}/repo/blob.py", bytes(range(256)) * 4)  # binary: quarantined
    return [
        {"name": "curated", "format": "jsonl", "paths": [f"{root}/curated"], "id_field": "id"},
        {"name": "spam", "format": "jsonl", "paths": [f"{root}/spam"]},
        {"name": "repo", "format": "code", "paths": [f"{root}/repo"]},
    ]


def _mkdir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def write_config(root: str, name: str, sources: list[dict], master: str, partitions: int, **sections) -> str:
    if not os.path.exists(f"{root}/mix.yaml"):
        with open(f"{root}/mix.yaml", "w", encoding="utf-8") as handle:
            yaml.safe_dump(MIX, handle)
    config = {
        "lakehouse": {"root": f"{root}/{name}"},
        "spark": {"master": master, "shuffle_partitions": partitions, "driver_memory": "1g"},
        "sources": sources,
        "mds": {"mix": f"{root}/mix.yaml"},
        **with_small_quality_model(sections),
    }
    path = f"{root}/{name}.yaml"
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle)
    return path


def start_cli(args: list[str], failpoint: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m dataprep <args>` in its own process (its own Spark driver), MLflow as its config says."""
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    environment.update(env or {})
    if failpoint:
        environment["DATAPREP_FAILPOINT"] = failpoint
    command = [sys.executable, "-m", "dataprep", *args]
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(args: list[str], failpoint: str | None = None) -> tuple[int, str]:
    """Exit code (-9: killed) and the tail of its output."""
    process = start_cli(args, failpoint)
    stdout, stderr = process.communicate(timeout=600)
    return process.returncode, _failure(stdout + stderr)


def _failure(output: str) -> str:
    """The lines of a failed run worth reading: its Python traceback and the exception lines, not the JVM frames."""
    lines = [line for line in output.splitlines() if not line.lstrip().startswith(("at ", "... "))]
    return "\n".join(lines[-60:])


def lakehouse_contents(spark, root: str) -> dict[str, list[tuple]]:
    """Every Delta table's rows, sorted, without what records when or by which run they were written."""
    contents = {}
    for layer in ("bronze", "silver", "gold"):
        for name in sorted(os.listdir(os.path.join(root, layer))):
            frame = spark.read.format("delta").load(os.path.join(root, layer, name))
            columns = [f.name for f in frame.schema.fields
                       if f.name not in RUN_REFERENCES and not isinstance(f.dataType, TimestampType)]  # fmt: skip
            rows = [tuple(_plain(row[c]) for c in columns) for row in frame.select(*columns).collect()]
            contents[f"{layer}.{name}"] = sorted(rows, key=repr)
    return contents


def _plain(value):
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _plain(v)) for k, v in value.items()))
    if isinstance(value, float):
        return round(value, 9)
    return value


def mds_files(directory: str) -> dict[str, str]:
    """sha256 of every file a reader uses (shards, index.json); the manifest minus the Delta versions it read."""
    digests = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as handle:
            data = handle.read()
        if name == "manifest.json":
            manifest = json.loads(data)
            manifest.pop("delta_versions"), manifest.pop("key")  # which commits were read, not what was written
            data = json.dumps(manifest, sort_keys=True).encode()
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def test_a_run_killed_in_every_stage_and_restarted_on_other_parallelism_ends_as_an_uninterrupted_run(
    spark, tmp_path, corpus
):
    root = str(tmp_path)
    quality = {"quality": {"positive_sources": ["curated"], "negative_sources": ["spam"], "epochs": 10}}
    crashed = write_config(root, "crashed", corpus, "local[1]", 5, filter=quality)
    reference = write_config(root, "reference", corpus, "local[2]", 2, filter=quality)
    stage_dir = f"{root}/crashed/mds/r/main"
    exits: dict[str, tuple[int, str]] = {}
    staging_after_mds_crash: list[list[str]] = []

    def crash_in_every_stage_then_finish() -> None:
        # Each run resumes at the stage the previous one was killed in (`run --from`), reruns it to the end, then
        # is killed inside the next stage.
        resume_at = "ingest"
        for failpoint in FAILPOINTS:
            exits[failpoint] = run_cli(["run", "--config", crashed, "--from", resume_at], failpoint)
            resume_at = failpoint.split(".")[0]
        # killed inside the MDS stage: the shards were written, but a reader finds no index.json (the stage is not
        # complete), and the progress directory records the shards stored
        staging_after_mds_crash.append(os.listdir(os.path.dirname(stage_dir)) + os.listdir(stage_dir))
        exits["final"] = run_cli(["run", "--config", crashed, "--from", resume_at])

    # The crashing runs (their own processes) and the uninterrupted reference (in this one, local[2] and 2 shuffle
    # partitions) are independent: they run side by side.
    crashing = threading.Thread(target=crash_in_every_stage_then_finish)
    crashing.start()
    assert main(["run", "--config", reference]) == 0
    crashing.join()
    for failpoint in FAILPOINTS:
        assert exits[failpoint][0] == -9, (failpoint, exits[failpoint][1])
    assert exits["final"][0] == 0, exits["final"][1]
    (listing,) = staging_after_mds_crash
    assert "index.json" not in listing and any(name.startswith(".main.progress-") for name in listing), listing

    expected, got = lakehouse_contents(spark, f"{root}/reference"), lakehouse_contents(spark, f"{root}/crashed")
    assert sorted(got) == sorted(expected)
    for table, rows in expected.items():
        assert got[table] == rows, table
        assert len(rows) > 0, table
    documents = expected["bronze.documents"]
    assert len(documents) == len(set(documents))  # no row twice
    assert mds_files(stage_dir) == mds_files(f"{root}/reference/mds/r/main")
    assert not [name for name in os.listdir(f"{root}/crashed/mds/r") if name.startswith(".")]  # staging cleaned
    # the last run's report says where it resumed, and shows only the stage it ran
    last = run_report.find(load_config(crashed).mlflow, None)
    assert list(last.stages) == ["mds"] and ", from mds)" in run_report.summary(last).splitlines()[0]


@pytest.mark.parametrize("mode", ["classic", "connect"])
def test_two_ingests_into_the_same_tables_at_once_lose_and_double_nothing(
    request, mode, spark, tmp_path, write_lines, prose
):
    # Under Spark Connect both runs are clients of one server; Delta's conflicts reach them as generic errors with
    # Delta's error class, which must be retried as a classic session's are.
    env = {"SPARK_REMOTE": request.getfixturevalue("spark_connect")} if mode == "connect" else {}
    root = str(tmp_path)
    sources = []
    for name in ("a", "b", "c"):
        write_lines(f"{root}/{name}/part.jsonl", [json.dumps({"text": prose(6, seed=i)}) for i in range(40)]
                    + ["not json"])  # fmt: skip
        sources.append({"name": name, "format": "jsonl", "paths": [f"{root}/{name}"]})
    config = write_config(root, "shared", sources, "local[1]", 2)
    # both share source b: one of them finds the other's rows (or conflicts with its commit) and must not double them
    commands = [["ingest", "--config", config, "--source", "a", "--source", "b"],
                ["ingest", "--config", config, "--source", "b", "--source", "c"]]  # fmt: skip
    running = [start_cli(command, env=env) for command in commands]
    for process in running:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, _failure(stdout + stderr)
    documents = spark.read.format("delta").load(f"{root}/shared/bronze/documents").collect()
    keys = [(row.source, row.locator) for row in documents]
    assert len(keys) == len(set(keys)) == 120
    assert {row.source for row in documents} == {"a", "b", "c"}
    quarantine = spark.read.format("delta").load(f"{root}/shared/bronze/quarantine").collect()
    assert sorted((row.source, row.reason) for row in quarantine) == [(s, "malformed_json") for s in "abc"]
