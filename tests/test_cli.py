"""The command line, the spark-submit entry point and the demo: thin shells over the same stage functions."""

import glob
import json
import os
import shutil
import subprocess
import sys

import mlflow
import pytest
import yaml
from conftest import with_small_quality_model

from dataprep.cli import EXIT_BAD_INPUT, demo_config, main
from dataprep.demo import build_demo_corpus
from pipelines import run_report
from pipelines.lakehouse import Lakehouse
from pipelines.maintain import run_maintain
from pipelines.stages import STAGE_NAMES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_config(tmp_path, sources, **sections) -> str:
    path = tmp_path / "config.yaml"
    raw = {
        "lakehouse": {"root": str(tmp_path / "lakehouse")},
        "mlflow": {"tracking_uri": os.environ["DATAPREP_TEST_MLFLOW_URI"]},
        "sources": sources,
        **with_small_quality_model(sections),
    }
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_validate_prints_the_resolved_config(tmp_path, capsys):
    config = write_config(tmp_path, [{"name": "web", "format": "jsonl", "paths": "in/*.jsonl"}])
    assert main(["validate", "--config", config]) == 0
    assert '"max_doc_bytes": 33554432' in capsys.readouterr().out


def test_a_bad_config_exits_2_with_a_message_naming_the_key(tmp_path, capsys):
    config = write_config(tmp_path, [{"name": "web", "format": "csv", "paths": "x"}])
    assert main(["ingest", "--config", config]) == EXIT_BAD_INPUT
    assert "sources[0] (web).format: 'csv' is not one of" in capsys.readouterr().err


def test_a_missing_input_path_exits_2_before_reading_anything(tmp_path, capsys):
    config = write_config(tmp_path, [{"name": "web", "format": "jsonl", "paths": str(tmp_path / "absent.jsonl")}])
    assert main(["ingest", "--config", config]) == EXIT_BAD_INPUT
    assert "absent.jsonl' does not exist" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "lakehouse" / "bronze")


def test_a_stage_before_its_input_table_exists_exits_2_naming_the_stage_to_run(spark, tmp_path, capsys):
    config = write_config(tmp_path, [{"name": "web", "format": "jsonl", "paths": str(tmp_path)}])
    assert main(["dedup", "--config", config]) == EXIT_BAD_INPUT
    assert "silver.documents does not exist yet: run the filter stage first" in capsys.readouterr().err


def test_a_pipeline_whose_mds_stage_has_no_mix_exits_2_before_any_stage_runs(tmp_path, capsys, write_lines):
    write_lines(str(tmp_path / "in" / "a.jsonl"), ['{"text": "one"}'])
    config = write_config(tmp_path, [{"name": "web", "format": "jsonl", "paths": str(tmp_path / "in")}])
    assert main(["run", "--config", config]) == EXIT_BAD_INPUT
    assert "mds.mix: no mix given" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "lakehouse" / "bronze")


def test_ingest_command_runs_the_stage_and_prints_a_reconciled_summary(spark, tmp_path, capsys, write_lines):
    write_lines(str(tmp_path / "in" / "a.jsonl"), ['{"text": "one"}', "not json"])
    config = write_config(tmp_path, [{"name": "web", "format": "jsonl", "paths": str(tmp_path / "in")}])
    assert main(["ingest", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "quarantined malformed_json: 1" in out
    assert " ok" in out


def test_the_console_script_run_by_its_path_with_a_bare_path_uses_its_own_python_for_workers(tmp_path, write_lines):
    # As cron runs it: no environment activated, so the first python3 on PATH is the system's, without the project.
    write_lines(str(tmp_path / "in" / "a.jsonl"), ['{"text": "scheduled"}'])
    config = write_config(tmp_path, [{"name": "web", "format": "jsonl", "paths": str(tmp_path / "in")}])
    script = os.path.join(os.path.dirname(sys.executable), "dataprep")
    environment = {key: os.environ[key] for key in ("HOME", "DATAPREP_DELTA_JARS")} | {"PATH": "/usr/bin:/bin"}
    result = subprocess.run([script, "ingest", "--config", config], capture_output=True, text=True, timeout=300,
                            env=environment)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "web" in result.stdout and " ok" in result.stdout


def test_spark_submit_runs_the_job_entry_point(tmp_path, write_lines):
    write_lines(str(tmp_path / "in" / "a.jsonl"), ['{"text": "submitted"}'])
    config = write_config(
        tmp_path, [{"name": "web", "format": "jsonl", "paths": str(tmp_path / "in")}], spark={"master": "local[9]"}
    )
    jars = ",".join(sorted(glob.glob(os.path.join(os.environ["DATAPREP_DELTA_JARS"], "*.jar"))))
    spark_submit = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    command = [spark_submit, "--master", "local[1]", "--jars", jars, "--conf", "spark.ui.enabled=false"]
    result = subprocess.run(
        [*command, os.path.join(REPO, "jobs", "dataprep_job.py"), "ingest", "--config", config],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "web" in result.stdout and " ok" in result.stdout
    # spark-submit's master won over the config's local[9]: the session factory left the launcher's choices alone.
    assert "local[9]" not in result.stderr


def test_demo_corpus_is_written_deterministically(tmp_path):
    first = build_demo_corpus(str(tmp_path / "a"))
    second = build_demo_corpus(str(tmp_path / "b"))
    assert first == second and first["pydoc_topics"] > 50 and first["module_docstrings"] > 500
    for name in ("module_docstrings/stdlib.jsonl.gz", "pydoc_topics/if.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_demo_end_to_end_reconciles_and_its_rerun_adds_nothing(demo_run, spark, tmp_path, capsys):
    lakehouse, first = demo_run.lakehouse, demo_run.output  # the demo trained 12 steps
    config = demo_config(lakehouse)
    documents = Lakehouse(spark, config.lakehouse).table("bronze.documents")
    assert documents.read().count() > 2000
    assert "python_stdlib" in first and "quarantined binary" in first
    tokens = Lakehouse(spark, config.lakehouse).table("gold.tokens")
    assert tokens.read().count() > 1000
    stages = [os.path.join(config.mds.output, "demo", stage) for stage in ("broad", "anneal")]
    for stage in stages:
        assert main(["verify", stage]) == 0
    assert "stage broad [written]" in first and "stage anneal [written]" in first and "SHORT" not in first
    with open(os.path.join(stages[0], "manifest.json")) as handle:
        prose = {c["name"]: c for c in json.load(handle)["components"]}["prose"]
    assert prose["realised"] == prose["requested"] and prose["full_epochs"] >= 1  # scarce prose, upsampled

    # `dataprep maintain` between the runs, as the weekly job does: its commits (OPTIMIZE, VACUUM, layout) move the
    # tables' versions but no row, so the rerun still finds everything up to date: no shard written again, no
    # change feed read, no token statistics recomputed.
    silver = Lakehouse(spark, config.lakehouse).table("silver.documents")
    before = [table.version() for table in (documents, silver, tokens)]
    run_maintain(spark, config.lakehouse, config.mlflow)
    assert all(table.version() > version for table, version in zip((documents, silver, tokens), before, strict=True))
    count, version, tokens_version = documents.read().count(), documents.version(), tokens.version()
    silver_rows_version = silver.data_version()  # the rerun's filter records its progress: an upkeep commit

    assert main(["demo", "--lakehouse", lakehouse, "--train-steps", "12"]) == 0
    second = capsys.readouterr().out
    assert (documents.read().count(), documents.version()) == (count, version)
    assert "(0 rows written)" in second and tokens.version() == tokens_version
    assert silver.data_version() == silver_rows_version < silver.version()
    assert "stage broad [up to date]" in second and "stage anneal [up to date]" in second
    assert "read nothing of bronze.documents" in second and "read nothing of silver.documents" in second, second
    # The full dedup rerun decided every document again but wrote no decision, none having changed: tokenize found
    # none in silver.dedup's change feed to examine.
    assert "examined 0 documents" in second, second

    assert main(["report", "--lakehouse", lakehouse]) == 0
    report = capsys.readouterr().out
    for stage in STAGE_NAMES:
        assert f"  {stage}: FINISHED, reconciles=true" in report
    assert "  train: FINISHED" in report
    assert main(["report", "--lakehouse", lakehouse, "--compare"]) == 0
    comparison = capsys.readouterr().out
    assert "settings: unchanged" in comparison and "  filter: " in comparison
    latest = run_report.find(config.mlflow, None)
    expected = {
        "filter": ["plots/quality_score.png", "plots/length.png", "plots/drops_by_rule.png", "summary.md"],
        "dedup": ["plots/cluster_sizes.png", "summary.md"],
        "tokenize": ["plots/tokens_by_source.png", "summary.md"],
        "mds": ["plots/tokens_broad.png", "plots/tokens_anneal.png", "summary.md"],
    }
    client = mlflow.MlflowClient()
    for stage, artifacts in expected.items():
        run_id = latest.stages[stage].info.run_id
        listed = {a.path for a in client.list_artifacts(run_id)} | {
            a.path for a in client.list_artifacts(run_id, "plots")
        }
        assert set(artifacts) <= listed, (stage, listed)
    # training: the first demo trained 12 steps (loss falling) into a checkpoint; the rerun found it up to date
    trained, rerun = sorted(
        client.search_runs([latest.run.info.experiment_id], "tags.`dataprep.stage` = 'train'"),
        key=lambda run: run.info.start_time,
    )
    assert trained.data.tags["dataprep.up_to_date"] == "False" and rerun.data.tags["dataprep.up_to_date"] == "True"
    with open(client.download_artifacts(trained.info.run_id, "losses.json", str(tmp_path))) as handle:
        losses = json.load(handle)["losses"]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    assert trained.data.tags["dataprep.checkpoint"].endswith("step-00000012.pt")
    assert os.path.isfile(trained.data.tags["dataprep.checkpoint"])
    assert rerun.data.tags["mlflow.parentRunId"] == latest.run.info.run_id
    inputs = [d.dataset.name for d in client.get_run(latest.stages["tokenize"].info.run_id).inputs.dataset_inputs]
    assert any(name.startswith("silver.dedup@v") for name in inputs), inputs

    copy = shutil.copytree(stages[0], tmp_path / "broad")  # the notebooks read the demo's own shards
    shard = sorted(name for name in os.listdir(copy) if name.startswith("shard."))[0]
    with open(os.path.join(copy, shard), "r+b") as handle:
        handle.seek(100)
        handle.write(b"corrupted")
    assert main(["verify", str(copy)]) == 3
    assert "digest differs" in capsys.readouterr().out


def test_train_without_pytorch_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    # this environment has no torch; without the PyTorch environment's interpreter there is nowhere to train
    monkeypatch.delenv("DATAPREP_TORCH_PYTHON", raising=False)
    assert main(["train", "--demo-lakehouse", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "training needs PyTorch" in capsys.readouterr().err


def test_train_before_the_mix_was_written_is_bad_input(tmp_path, capfd):
    assert os.environ.get("DATAPREP_TORCH_PYTHON"), "run the suite with scripts/test.sh (it builds the torch env)"
    assert main(["train", "--demo-lakehouse", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "run `dataprep mds` for mix 'demo' first" in capfd.readouterr().err


def test_unity_catalog_tables_are_named_catalog_schema_layer_name():
    from pipelines.settings import LakehouseConfig

    table = Lakehouse(None, LakehouseConfig(root="/unused", catalog="main", schema="llm")).table("bronze.documents")
    assert (table.full_name, table.path) == ("main.llm.bronze_documents", None)
    assert table.sql_name == "`main`.`llm`.`bronze_documents`"


def test_var_fills_config_variables_before_the_environment(tmp_path, monkeypatch, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("lakehouse:\n  root: ${ROOT}/lake\nsources:\n  - {name: a, format: jsonl, paths: [${ROOT}]}\n")
    monkeypatch.setenv("ROOT", "/from/environment")
    assert main(["validate", "--config", str(config), "--var", "ROOT=/from/var"]) == 0
    assert json.loads(capsys.readouterr().out)["lakehouse"]["root"] == "/from/var/lake"
    with pytest.raises(SystemExit) as exit_:
        main(["validate", "--config", str(config), "--var", "ROOT"])
    assert exit_.value.code == 2 and "'ROOT' is not NAME=VALUE" in capsys.readouterr().err
