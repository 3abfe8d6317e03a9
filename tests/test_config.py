import os

import pytest

from dataprep.config import load_config, parse_config
from pipelines.settings import ConfigError, expand_env

SOURCE = {"name": "web", "format": "jsonl", "paths": ["/data/*.jsonl"]}


def test_minimal_config_gets_documented_defaults(tmp_path):
    config = parse_config({"lakehouse": {"root": str(tmp_path)}, "sources": [SOURCE]})
    assert config.lakehouse.root == str(tmp_path)
    assert config.mlflow.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert config.mlflow.artifact_location == f"{tmp_path}/mlflow-artifacts"
    assert config.spark.master == "local[*]"
    assert config.source("web").kind == "text"
    assert config.source("web").text_field == "text"


def test_code_sources_default_to_kind_code_and_a_1_mib_cap():
    config = parse_config({"sources": [{"name": "repo", "format": "code", "paths": "/src"}]})
    assert config.source("repo").kind == "code"
    assert config.source("repo").max_doc_bytes == 1024 * 1024
    assert config.source("repo").paths == ("/src",)


def test_relative_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_config({"lakehouse": {"root": "lh"}, "sources": [{**SOURCE, "paths": ["in/a.jsonl"]}]})
    assert config.lakehouse.root == os.path.join(str(tmp_path), "lh")
    assert config.source("web").paths == (os.path.join(str(tmp_path), "in/a.jsonl"),)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"sources": [SOURCE], "sorces": []}, "config: unknown key(s) 'sorces'"),
        ({"sources": []}, "at least one source"),
        ({}, "sources: required key is missing"),
        ({"sources": [{**SOURCE, "format": "csv"}]}, "sources[0] (web).format: 'csv' is not one of jsonl"),
        ({"sources": [{**SOURCE, "paths": 3}]}, "sources[0] (web).paths: expected list or str, got int 3"),
        ({"sources": [{**SOURCE, "max_doc_bytes": 0}]}, "max_doc_bytes: 0 is below the minimum 1"),
        ({"sources": [{**SOURCE, "max_doc_bytes": True}]}, "max_doc_bytes: expected int, got bool True"),
        ({"sources": [SOURCE, SOURCE]}, "names must be unique; repeated: ['web']"),
        ({"sources": [{**SOURCE, "name": "a b"}]}, "sources[0].name: 'a b' may hold only"),
        ({"sources": [SOURCE], "spark": {"driver_memory": "lots"}}, "spark.driver_memory: 'lots' is not a JVM"),
        ({"sources": [SOURCE], "lakehouse": {"catalog": "main"}}, "'catalog' and 'schema' go together"),
        ({"sources": [SOURCE], "mlflow": {"tracking_uri": "sqlite:///x.db"}}, "relative sqlite path"),
        ({"sources": [{**SOURCE, "format": "code", "id_field": "id"}]}, "id_field/language_field apply to jsonl"),
        ({"sources": [SOURCE], "ingest": {"split_bytes": "big"}}, "ingest.split_bytes: expected int, got str"),
        ({"sources": [{**SOURCE, "encoding": "latin-1"}]}, "sources[0] (web): unknown key(s) 'encoding'"),
        ({"sources": "web"}, "sources: expected list, got str"),
        ({"sources": [SOURCE], "filter": {"rules": [{"name": "nope", "max": 1}]}}, "'nope' is not a built-in rule"),
        ({"sources": [SOURCE], "filter": {"quality": {"positive_sources": ["web"]}}}, "go together"),
        (
            {"sources": [SOURCE], "filter": {"rules": [{"name": "mine", "signal": "gopher_wrods", "max": 1}]}},
            "filter.rules (mine): unknown signal 'gopher_wrods'; the signals are: c4_curly_brace, ",
        ),
        (
            {"sources": [SOURCE], "filter": {"rules": [{"name": "gopher_word_count", "kinds": ["code"]}]}},
            "filter.rules (gopher_word_count): applies to code documents, but 'gopher_words' is computed for text",
        ),
        (
            {"sources": [SOURCE], "filter": {"quality": {"positive_sources": ["web"], "negative_sources": ["x"]}}},
            "filter.quality: sources ['x'] are not configured",
        ),
        ({"sources": [SOURCE], "filter": {"langs": ["en"]}}, "filter: unknown key(s) 'langs'"),
        ({"sources": [SOURCE], "lakehouse": {"root": "s3://b/lh"}}, "lakehouse.root 's3://b/lh' is in an object"),
        ({"sources": [{**SOURCE, "paths": ["hdfs://nn/x/*.jsonl"]}]}, "(web).paths: 'hdfs://nn/x/*.jsonl': the hdfs:"),
        ({"sources": [SOURCE], "mds": {"output": "ftp://host/mds"}}, "mds.output: 'ftp://host/mds': the ftp: scheme"),
        ({"sources": [SOURCE], "mds": {"output": "s3a:///mds"}}, "mds.output: 's3a:///mds' names no bucket"),
        ({"sources": [SOURCE], "mds": {"mix": "s3://b/mix.yaml"}}, "mds.mix: 's3://b/mix.yaml' is a URI"),
        ({"sources": [SOURCE], "mlflow": {"artifact_location": "s3a://b/a"}}, "write s3://b/a"),
        (
            {"sources": [SOURCE], "mlflow": {"tracking_uri": "databricks", "experiment": "dataprep"}},
            "mlflow.experiment: 'dataprep' is not a workspace path, which a Databricks tracking server requires: "
            "write e.g. /Users/<you>/dataprep or /Shared/dataprep",
        ),
        ({"sources": [SOURCE], "mlflow": {"tracking_uri": "databricks-uc"}}, "is Unity Catalog's model registry"),
        (
            {"sources": [SOURCE], "filter": {"quality": {"model_uri": "dataprep_quality"}}},
            "filter.quality.model_uri: 'dataprep_quality' is not an MLflow model URI; write "
            "models:/dataprep_quality/<version>",
        ),
        (
            {"sources": [SOURCE], "filter": {"quality": {"model_uri": "models:/q/1", "registered_model": "q"}}},
            "no model is trained to register",
        ),
        ({"sources": [SOURCE], "train": {"checkpoint_dir": "gs:/b/ck"}}, "train.checkpoint_dir: 'gs:/b/ck' names no"),
        ({"sources": [SOURCE], "dedup": {"threshold": 1.5}}, "dedup.threshold: 1.5 must be between 0 and 1"),
        ({"sources": [SOURCE], "dedup": {"scheme": "affine64"}}, "dedup.scheme: 'affine64' is not one of"),
        ({"sources": [SOURCE], "dedup": {"keep_order": ["length desc"]}}, "dedup.keep_order: 'length desc'"),
        ({"sources": [SOURCE], "train": {"model": "huge"}}, "train.model: 'huge' is not one of tiny, moe_a, dbrx"),
        ({"sources": [SOURCE], "train": {"model_overrides": {"layers": 4}}}, "'layers' is not a model setting"),
        ({"sources": [SOURCE], "train": {"model_overrides": {"d_model": "64"}}}, "d_model: expected int, got str"),
        ({"sources": [SOURCE], "train": {"model_overrides": {"top_k": 9}}}, "top_k 9 must be between 1 and"),
        ({"sources": [SOURCE], "train": {"betas": [0.9]}}, "train.betas: expected two numbers"),
        ({"sources": [SOURCE], "train": {"precision": "fp16"}}, "train.precision: 'fp16' is not one of"),
        ({"sources": [SOURCE], "train": {"stage_tokens": {"broad": 0}}}, "train.stage_tokens.broad: expected a"),
        ({"sources": [SOURCE], "train": {"lr": "fast"}}, "train.lr: expected int or float, got str"),
    ],
)
def test_invalid_configs_name_the_key_and_the_value(raw, message):
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert message in str(error.value)


def test_file_uris_are_local_paths(tmp_path):
    config = parse_config({"lakehouse": {"root": f"file://{tmp_path}/lh"}, "sources": [SOURCE]})
    assert config.lakehouse.root == f"{tmp_path}/lh"
    assert config.mds.output == f"{tmp_path}/lh/mds"


def test_object_store_uris_are_kept_and_defaults_follow_the_root(tmp_path):
    raw = {
        "lakehouse": {"root": "s3a://bucket/lh/"},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "sources": [{**SOURCE, "paths": ["s3://bucket/raw/*.jsonl"]}],
    }
    config = parse_config(raw)
    assert config.lakehouse.root == "s3a://bucket/lh"
    assert config.sources[0].paths == ("s3://bucket/raw/*.jsonl",)
    assert config.mds.output == "s3a://bucket/lh/mds"
    assert config.train.checkpoint_dir == "s3a://bucket/lh/checkpoints"
    # MLflow's artifacts stay beside its local store: MLflow cannot write s3a://.
    assert config.mlflow.artifact_location == f"{tmp_path}/mlflow-artifacts"


def test_a_databricks_tracking_server_takes_workspace_paths_and_defaults_to_the_users_home():
    for uri in ("databricks", "databricks://prod"):
        config = parse_config({"sources": [SOURCE], "mlflow": {"tracking_uri": uri}})
        assert (config.mlflow.tracking_uri, config.mlflow.experiment) == (uri, None)  # /Users/<user>/dataprep
        assert config.mlflow.artifact_location is None  # the workspace keeps the artifacts
    for path in ("/Users/ada@example.com/dataprep", "/Shared/dataprep", "/Workspace/Shared/llm/dataprep"):
        config = parse_config({"sources": [SOURCE], "mlflow": {"tracking_uri": "databricks", "experiment": path}})
        assert config.mlflow.experiment == path


@pytest.mark.parametrize("variable, value", [("DATABRICKS_RUNTIME_VERSION", "17.3"), ("DATABRICKS_ENV_VERSION", "4")])
def test_on_databricks_runs_go_to_the_workspace_never_to_an_sqlite_file(tmp_path, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)  # a classic cluster; serverless
    for root in (str(tmp_path), "s3://bucket/lh", "/Volumes/main/dataprep/lakehouse"):
        config = parse_config({"sources": [SOURCE], "lakehouse": {"root": root}})
        assert (config.mlflow.tracking_uri, config.mlflow.experiment) == ("databricks", None)
    with pytest.raises(ConfigError, match="is an sqlite file on this Databricks cluster, which is lost when"):
        parse_config({"sources": [SOURCE], "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}})


def test_quality_model_can_be_registered_or_taken_from_the_registry():
    quality = parse_config({"sources": [SOURCE], "filter": {"quality": {"registered_model": "main.llm.quality"}}})
    assert quality.filter.quality.registered_model == "main.llm.quality"
    for uri in ("models:/main.llm.quality/3", "models:/main.llm.quality@champion", "runs:/0123abcd/quality_model"):
        config = parse_config({"sources": [SOURCE], "filter": {"quality": {"model_uri": uri}}})
        assert config.filter.quality.model_uri == uri


def test_unity_catalog_names_are_accepted():
    config = parse_config({"sources": [SOURCE], "lakehouse": {"catalog": "main", "schema": "llm_data"}})
    assert config.lakehouse.uses_unity_catalog


def test_environment_references_are_expanded(monkeypatch):
    monkeypatch.setenv("CORPUS", "/mnt/corpus")
    assert expand_env("${CORPUS}/a ${MISSING:-/default}") == "/mnt/corpus/a /default"
    with pytest.raises(ConfigError, match="environment variable NOT_SET_ANYWHERE is not set"):
        expand_env("${NOT_SET_ANYWHERE}")


def test_load_config_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_train_settings_default_and_resolve(tmp_path):
    config = parse_config({"sources": [SOURCE], "lakehouse": {"root": str(tmp_path)},
                           "train": {"model_overrides": {"n_layers": 4, "rope_theta": 500000}}})  # fmt: skip
    train = config.train
    assert (train.model, train.batch_tokens, train.micro_batch_tokens, train.betas) == (
        "tiny",
        65536,
        None,
        (0.9, 0.95),
    )
    assert train.checkpoint_dir == os.path.join(str(tmp_path), "checkpoints")
    assert dict(train.model_overrides) == {"n_layers": 4, "rope_theta": 500000}


def test_packaged_demo_config_is_valid(tmp_path):
    from dataprep.cli import demo_config

    config = demo_config(str(tmp_path))
    assert [s.name for s in config.sources] == ["python_stdlib", "pydoc_topics", "module_docstrings"]
    assert config.lakehouse.root == str(tmp_path)


def test_a_driver_local_path_is_refused_when_executors_run_elsewhere(tmp_path):
    from dataprep.runner import unshared_paths_problem

    raw = {
        "lakehouse": {"root": "s3a://bucket/lh"},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "sources": [{**SOURCE, "paths": [f"{tmp_path}/web"]}],
    }
    config = parse_config(raw)
    unshared_paths_problem(config, "local[4]")  # one machine: its paths are every executor's
    with pytest.raises(ConfigError, match=r"sources\[0\] \(web\).paths\[0\]: '.*/web' is a path on this machine"):
        unshared_paths_problem(config, "spark://head:7077")
    shared = parse_config({**raw, "sources": [{**SOURCE, "paths": ["/Volumes/main/raw/web", "s3://b/x"]}]})
    unshared_paths_problem(shared, "spark://head:7077")
