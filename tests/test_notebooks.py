"""Every notebook in notebooks/ (Databricks source format) runs cell by cell against a demo lakehouse."""

import glob
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.py")))
HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"


def cells(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    assert source.startswith(HEADER + "\n"), f"{path} is not in Databricks source format"
    chunks = [chunk.strip("\n") for chunk in source[len(HEADER) :].split(SEPARATOR)]
    # Markdown cells are all `# MAGIC` lines: comments to Python, kept out to keep the count honest.
    return [c for c in chunks if c and not all(line.startswith("# MAGIC") for line in c.splitlines())]


def test_there_are_the_four_notebooks_the_users_need():
    names = [os.path.basename(path) for path in NOTEBOOKS]
    assert names == ["01_explore_corpus.py", "02_threshold_what_if.py", "03_duplicate_clusters.py", "04_mixture.py"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_every_cell_runs_locally(path, demo_run, spark, monkeypatch, capsys):
    monkeypatch.setenv("DATAPREP_LAKEHOUSE", demo_run.lakehouse)
    namespace = {"__name__": "__main__", "spark": spark}
    code_cells = cells(path)
    assert len(code_cells) >= 2
    for number, cell in enumerate(code_cells):
        try:
            exec(compile(cell, f"{os.path.basename(path)} cell {number}", "exec"), namespace)
        except Exception as error:
            pytest.fail(f"{os.path.basename(path)} cell {number} failed: {error!r}")
    assert capsys.readouterr().out.strip()  # every notebook shows something
