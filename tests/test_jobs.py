"""The Databricks Asset Bundle and the spark-submit entry point: structure, and every task's command parses."""

import itertools
import os
import re
import sys
from importlib import metadata

import pytest
import yaml

from dataprep.cli import _parser, entry_point
from pipelines.stages import STAGE_NAMES

JOBS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jobs")
# The bundle runs every registered data stage, then training on the GPU cluster.
STAGES = [*STAGE_NAMES, "train"]


def bundle() -> dict:
    with open(os.path.join(JOBS, "databricks.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def substituted(value: str, variables: dict) -> str:
    return re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m.group(1)]["default"]), value)


def test_bundle_is_a_scheduled_chain_of_stages_with_dev_and_prod_targets():
    spec = bundle()
    job = spec["resources"]["jobs"]["dataprep"]
    tasks = {task["task_key"]: task for task in job["tasks"]}
    assert list(tasks) == STAGES
    for previous, stage in itertools.pairwise(STAGES):
        assert tasks[stage]["depends_on"] == [{"task_key": previous}]
    assert job["schedule"]["quartz_cron_expression"] and job["schedule"]["pause_status"] == "PAUSED"
    assert spec["targets"]["dev"]["default"] and spec["targets"]["dev"]["mode"] == "development"
    assert spec["targets"]["prod"]["resources"]["jobs"]["dataprep"]["schedule"]["pause_status"] == "UNPAUSED"
    cluster_keys = {c["job_cluster_key"] for c in job["job_clusters"]}
    assert all(task["job_cluster_key"] in cluster_keys for task in tasks.values())
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    assert clusters["spark"]["spark_version"].endswith("scala2.13")  # the Spark 4 line we pin
    # training runs on one GPU node of the ML runtime (PyTorch included), the data stages on the Spark cluster
    assert "gpu-ml" in clusters["gpu"]["spark_version"] and clusters["gpu"]["num_workers"] == 0
    assert tasks["train"]["job_cluster_key"] == "gpu" and {t["job_cluster_key"] for t in tasks.values()} == set(
        clusters
    )
    artifact = spec["artifacts"]["dataprep_wheel"]
    assert os.path.exists(os.path.join(JOBS, artifact["path"], "setup.py"))


def test_every_task_runs_an_existing_entry_point_that_accepts_its_parameters():
    spec = bundle()
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    for task in spec["resources"]["jobs"]["dataprep"]["tasks"]:
        wheel_task = task["python_wheel_task"]
        assert wheel_task["package_name"] == metadata.metadata("dataprep")["Name"]
        assert scripts[wheel_task["entry_point"]] == "dataprep.cli:entry_point"
        parameters = [substituted(p, spec["variables"]) for p in wheel_task["parameters"]]
        assert "${" not in " ".join(parameters)
        args = _parser().parse_args(parameters)  # argparse exits on anything it does not accept
        assert callable(args.handler) and args.config == spec["variables"]["config"]["default"]
        assert task["libraries"] == [{"whl": "../dist/*.whl"}]


def test_the_wheel_entry_point_fails_the_process_on_bad_input_whatever_its_caller_does_with_return_values(
    tmp_path, monkeypatch
):
    # A Databricks wheel task calls the entry point and ignores its return value: only the exit status fails it.
    monkeypatch.setattr(sys, "argv", ["dataprep", "validate", "--config", str(tmp_path / "absent.yaml")])
    with pytest.raises(SystemExit) as exit_:
        entry_point()
    assert exit_.value.code == 2


def test_spark_submit_entry_point_forwards_to_the_command_line():
    with open(os.path.join(JOBS, "dataprep_job.py"), encoding="utf-8") as handle:
        source = handle.read()
    assert "from dataprep.cli import main" in source and "sys.exit(main(sys.argv[1:]))" in source


def test_every_package_directory_ships_in_the_wheel():
    # find_packages (setup.py) skips directories without __init__.py: the bundle's wheel would miss them.
    repo = os.path.dirname(JOBS)
    for package in ("dataprep", "pipelines", "trainer"):
        for directory, _, files in os.walk(os.path.join(repo, package)):
            if any(name.endswith(".py") for name in files) and "__pycache__" not in directory:
                assert "__init__.py" in files, f"{directory} has modules but no __init__.py"
