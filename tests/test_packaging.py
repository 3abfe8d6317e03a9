"""What the wheel requires. On a Databricks runtime it must install without touching the runtime's own Spark and
Delta, so PySpark and delta-spark are only the `spark` extra; a local install gets them from the pins scripts/env.sh
installs (requirements/test.txt includes requirements/runtime.txt)."""

import os
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPARK = {"pyspark", "delta-spark"}


@pytest.fixture(scope="module")
def requirements(tmp_path_factory) -> dict[str, list[Requirement]]:
    """The requirements setup.py declares, by extra ("" for the unconditional ones), as `egg_info` writes them for
    the wheel's metadata (its requires.txt: one section per extra)."""
    base = tmp_path_factory.mktemp("egg")
    command = [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(base)]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    by_extra: dict[str, list[Requirement]] = {"": []}
    extra = ""
    with open(base / "dataprep.egg-info" / "requires.txt", encoding="utf-8") as handle:
        for line in filter(None, (line.strip() for line in handle)):
            if line.startswith("["):
                extra = line.strip("[]").partition(":")[0]
                by_extra.setdefault(extra, [])
            else:
                by_extra[extra].append(Requirement(line))
    return by_extra


def test_spark_and_delta_are_only_the_spark_extra(requirements):
    assert SPARK.isdisjoint(requirement.name for requirement in requirements[""])
    assert {requirement.name for requirement in requirements["spark"]} == SPARK
    assert all(SPARK.isdisjoint(r.name for r in listed) for extra, listed in requirements.items() if extra != "spark")


def test_the_local_install_pins_the_spark_extra_within_its_ranges(requirements):
    with open(os.path.join(REPO, "requirements", "runtime.txt"), encoding="utf-8") as handle:
        pins = dict(line.split("#")[0].strip().split("==") for line in handle if "==" in line.split("#")[0])
    for requirement in requirements["spark"]:
        assert requirement.name in pins, f"requirements/runtime.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pins[requirement.name]), (requirement, pins[requirement.name])
    with open(os.path.join(REPO, "requirements", "test.txt"), encoding="utf-8") as handle:
        assert "-r runtime.txt" in handle.read().splitlines()
