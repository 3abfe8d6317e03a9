"""The Databricks Asset Bundle (jobs/databricks.yml) and the spark-submit entry point.

The Databricks CLI is a Go binary we cannot run in CI, so the bundle is checked the way the CLI reads it: each target
merged over the top level, `${...}` references resolved, then every resource validated against the bundle JSON
schema (databricks-bundles' classes are generated from it and reject unknown fields and wrong enum values), the
top-level and target keys against the schema's, and each target against Databricks' rules for its deployment mode.
Then what the tasks do: each one's command line parses with ours, every file it reads is deployed with the bundle,
and the config it reads resolves to its target's catalog, schema and volume.
"""

import copy
import itertools
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest
import yaml
from databricks.bundles.jobs import Job
from databricks.bundles.schemas import Schema
from databricks.bundles.volumes import Volume

from dataprep.cli import _parser, entry_point
from dataprep.config import load_config
from pipelines.mds.mixes import load_mix
from pipelines.stages import STAGE_NAMES

JOBS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jobs")
REPO = os.path.dirname(JOBS)
# The bundle runs every registered data stage, then training on the GPU cluster.
STAGES = [*STAGE_NAMES, "train"]
TARGETS = ("dev", "prod")
CLASSIC, SERVERLESS = "dataprep", "dataprep_serverless"
MAINTENANCE = "dataprep_maintenance"  # `dataprep maintain`, weekly

# Who deploys each target, and the --var values the README's recipe passes (prod deploys as its service principal).
SERVICE_PRINCIPAL = "6f1c2a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
DEPLOYER = {"dev": "someone@example.com", "prod": SERVICE_PRINCIPAL}
CLI_VARIABLES = {"dev": {}, "prod": {"service_principal": SERVICE_PRINCIPAL}}

# Keys the bundle JSON schema allows (`databricks bundle schema`; its root, config.Target, config.Workspace, ...).
# https://docs.databricks.com/dev-tools/bundles/reference.html
ROOT_KEYS = {
    "artifacts", "bundle", "environments", "experimental", "include", "permissions", "presets", "python",
    "resources", "run_as", "scripts", "sync", "targets", "variables", "workspace",
}  # fmt: skip
TARGET_KEYS = {
    "artifacts", "bundle", "cluster_id", "compute_id", "default", "git", "mode", "permissions", "presets",
    "resources", "run_as", "sync", "variables", "workspace",
}  # fmt: skip
SECTION_KEYS = {
    "bundle": {"cluster_id", "compute_id", "databricks_cli_version", "deployment", "engine", "git", "name", "uuid"},
    "workspace": {
        "account_id", "artifact_path", "auth_type", "azure_client_id", "azure_environment", "azure_login_app_id",
        "azure_tenant_id", "azure_use_msi", "azure_workspace_resource_id", "client_id", "file_path",
        "google_service_account", "host", "profile", "resource_path", "root_path", "state_path", "workspace_id",
    },
    "sync": {"exclude", "include", "paths"},
    "run_as": {"group_name", "service_principal_name", "user_name"},
}  # fmt: skip
VARIABLE_KEYS = {"default", "description", "lookup", "type"}
ARTIFACT_KEYS = {"build", "dynamic_version", "executable", "files", "path", "type"}
# Top-level permissions apply to every resource of the bundle: https://docs.databricks.com/dev-tools/bundles/permissions.html
BUNDLE_PERMISSION_LEVELS = {"CAN_VIEW", "CAN_RUN", "CAN_MANAGE"}
RESOURCE_CLASSES = {"jobs": Job, "schemas": Schema, "volumes": Volume}


def bundle() -> dict:
    with open(os.path.join(JOBS, "databricks.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)  # YAML anchors and aliases expand as in the CLI's loader


# ---------------------------------------------------------------------------------------------------------------
# The bundle as the CLI deploys a target: merged, with the mode's presets, every reference resolved.

# Lists the CLI merges by their key (merge_job_tasks.go, merge_job_clusters.go); other lists are concatenated.
_KEYED_LISTS = {"tasks": "task_key", "job_clusters": "job_cluster_key", "environments": "environment_key"}
_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.\[\]-]+)\}")


def merged(base: object, override: object, key: str | None = None) -> object:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for name, value in override.items():
            out[name] = merged(base[name], value, name) if name in base else value
        return out
    if isinstance(base, list) and isinstance(override, list):
        if key not in _KEYED_LISTS:
            return base + override
        by_key = {item[_KEYED_LISTS[key]]: item for item in base}
        for item in override:
            name = item[_KEYED_LISTS[key]]
            by_key[name] = merged(by_key[name], item) if name in by_key else item
        return list(by_key.values())
    return override


def deployed(target: str, spec: dict | None = None, variables: dict | None = None) -> dict:
    """The configuration `databricks bundle deploy -t <target>` deploys: the target merged over the top level,
    development mode's name prefixes, and every `${...}` reference resolved. A reference to nothing fails here, as it
    fails the CLI. `variables` are the --var values (default: the README's for this target)."""
    spec = copy.deepcopy(spec or bundle())
    declared = spec.pop("targets")[target] or {}
    config = _with_target(spec, declared, target)
    values = {name: definition.get("default") for name, definition in config.get("variables", {}).items()}
    for name, value in (declared.get("variables") or {}).items():
        values[name] = value.get("default") if isinstance(value, dict) else value
    values.update(CLI_VARIABLES[target] if variables is None else variables)
    config["var"] = values  # where ${var.NAME} looks (not a key of the bundle itself)
    _add_workspace_paths(config.setdefault("workspace", {}), DEPLOYER[target])
    if config["bundle"]["mode"] == "development":
        _prefix_names(config)
    return resolved(config, config)


def _with_target(spec: dict, declared: dict, target: str) -> dict:
    """The CLI's target override: its sections merged over the top level's; run_as replaced; mode and a compute
    override become bundle settings."""
    config = dict(spec)
    for section in ("bundle", "workspace", "artifacts", "resources", "sync", "presets", "permissions"):
        if section in declared:
            config[section] = merged(config.get(section, [] if section == "permissions" else {}), declared[section])
    if "run_as" in declared:
        config["run_as"] = declared["run_as"]
    config["bundle"] = {**config.get("bundle", {}), "target": target, "mode": declared.get("mode")}
    config["bundle"].update({key: declared[key] for key in ("cluster_id", "compute_id") if key in declared})
    return config


def _add_workspace_paths(workspace: dict, user: str) -> None:
    """The deploying identity, and the CLI's default paths under root_path (whose `~` is that identity's home)."""
    workspace["current_user"] = {"userName": user, "short_name": re.sub(r"\W", "_", user.split("@")[0])}
    root_path = workspace.setdefault("root_path", "~/.bundle/${bundle.name}/${bundle.target}")
    if root_path.startswith("~"):
        workspace["root_path"] = f"/Workspace/Users/{user}" + root_path[1:]
    for name, default in (("file_path", "files"), ("artifact_path", "artifacts"), ("state_path", "state")):
        workspace.setdefault(name, "${workspace.root_path}/" + default)


def _prefix_names(config: dict) -> None:
    """Development mode's prefixes, schemas included (deployment-modes.html; the CLI's apply_presets.go)."""
    short_name = config["workspace"]["current_user"]["short_name"]
    for schema in config.get("resources", {}).get("schemas", {}).values():
        schema["name"] = f"dev_{short_name}_{schema['name']}"
    for job in config.get("resources", {}).get("jobs", {}).values():
        job["name"] = f"[dev {short_name}] {job['name']}"


def resolved(value: object, config: dict) -> object:
    if isinstance(value, dict):
        return {key: resolved(item, config) for key, item in value.items()}
    if isinstance(value, list):
        return [resolved(item, config) for item in value]
    if not isinstance(value, str):
        return value
    for _ in range(10):  # a reference may resolve to another (a variable whose default names workspace.file_path)
        expanded = _REFERENCE.sub(lambda match: str(_lookup(config, match.group(1))), value)
        if expanded == value:
            return expanded
        value = expanded
    raise AssertionError(f"{value!r}: references do not resolve")


def _lookup(config: dict, path: str) -> object:
    node: object = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise AssertionError(f"${{{path}}} refers to nothing the bundle defines")
        node = node[part]
    return node


def wheel_tasks(config: dict, job_key: str) -> dict[str, dict]:
    return {task["task_key"]: task for task in config["resources"]["jobs"][job_key]["tasks"]}


# ---------------------------------------------------------------------------------------------------------------
# Databricks' rules for deployment modes, as documented
# (https://docs.databricks.com/dev-tools/bundles/deployment-modes.html) and enforced by the CLI
# (github.com/databricks/cli: bundle/config/mutator/resourcemutator/validate_target_mode.go, run_as.go,
# override_compute.go; bundle/config/validate/validate_volume_path.go).


def production_rule_violations(spec: dict, target: str, variables: dict | None = None) -> list[str]:
    """What the CLI refuses, or Databricks advises against, for a `mode: production` target: one sentence each."""
    declared = spec["targets"][target]
    config = deployed(target, spec, variables)
    problems = []
    root_path = (declared.get("workspace") or {}).get("root_path")
    if not root_path:
        problems.append("workspace.root_path: a production target sets it itself, so that one copy is deployed")
    elif root_path.startswith("~") or "workspace.current_user" in root_path:
        problems.append(f"workspace.root_path {root_path!r} changes with who deploys: one copy must be deployed")
    for key in ("root_path", "file_path", "state_path"):
        if config["workspace"][key].startswith("/Volumes/"):
            problems.append(f"workspace.{key}: /Volumes is only for artifact_path")
    run_as = config.get("run_as") or {}
    identities = [run_as[key] for key in SECTION_KEYS["run_as"] if run_as.get(key)]
    if len(identities) != 1:
        problems.append(f"run_as: exactly one non-empty identity is required, got {run_as!r}")
    elif not run_as.get("service_principal_name"):
        problems.append("run_as: production runs as a service principal, not as a person (Databricks' advice)")
    permissions = config.get("permissions") or []
    if not permissions:
        problems.append("permissions: a production target says who may view, run and manage what it deploys")
    for entry in permissions:
        principals = [entry[key] for key in ("user_name", "group_name", "service_principal_name") if entry.get(key)]
        if len(principals) != 1 or entry.get("level") not in BUNDLE_PERMISSION_LEVELS:
            problems.append(f"permissions: {entry!r} needs one principal and a level of {BUNDLE_PERMISSION_LEVELS}")
    if config["bundle"].get("cluster_id") or config["bundle"].get("compute_id"):
        problems.append("cluster_id/compute_id: production keeps the compute the bundle defines")
    for key, pipeline in config.get("resources", {}).get("pipelines", {}).items():
        if pipeline.get("development"):
            problems.append(f"resources.pipelines.{key}: development: true in production")
    return problems


def development_rule_violations(spec: dict, target: str) -> list[str]:
    """What the CLI refuses for a `mode: development` target: a copy that is not its developer's own."""
    config = deployed(target, spec)
    user = config["workspace"]["current_user"]
    problems = []
    if (config.get("presets") or {}).get("trigger_pause_status") == "UNPAUSED":
        problems.append("presets.trigger_pause_status: development cannot unpause every trigger")
    for key in ("root_path", "file_path", "artifact_path", "state_path"):
        path = config["workspace"][key]
        if user["userName"] not in path and user["short_name"] not in path:
            problems.append(f"workspace.{key} {path!r}: a development copy lives under its developer's name")
    return problems


RULES = {"production": production_rule_violations, "development": development_rule_violations}


# ---------------------------------------------------------------------------------------------------------------
# The bundle's structure.


def test_every_key_is_one_the_bundle_schema_allows():
    spec = bundle()
    assert set(spec) <= ROOT_KEYS, set(spec) - ROOT_KEYS
    sections = [(name, spec[name]) for name in SECTION_KEYS if name in spec]
    for target_name, target in spec["targets"].items():
        assert set(target) <= TARGET_KEYS, f"targets.{target_name}: {set(target) - TARGET_KEYS}"
        assert target.get("mode") in (None, "development", "production")
        sections += [(name, target[name]) for name in SECTION_KEYS if name in target]
        assert set(target.get("variables", {})) <= set(spec["variables"]), "a target sets a variable never declared"
    for name, section in sections:
        assert set(section) <= SECTION_KEYS[name], f"{name}: {set(section) - SECTION_KEYS[name]}"
    for name, variable in spec["variables"].items():
        assert set(variable) <= VARIABLE_KEYS and variable.get("description"), f"variables.{name}"
    for name, artifact in spec["artifacts"].items():
        assert set(artifact) <= ARTIFACT_KEYS, f"artifacts.{name}"
    assert set(spec["resources"]) <= set(RESOURCE_CLASSES), "a resource kind these tests do not validate"


@pytest.mark.parametrize("target", TARGETS)
def test_every_resource_validates_against_the_bundle_schema(target):
    config = deployed(target)
    for kind, resources in config["resources"].items():
        for key, resource in resources.items():
            try:
                RESOURCE_CLASSES[kind].from_dict(copy.deepcopy(resource))
            except (ValueError, TypeError) as error:
                pytest.fail(f"resources.{kind}.{key} ({target}): {error}")


def test_the_schema_check_rejects_what_the_bundle_schema_does_not_know():
    spec = bundle()
    spec["resources"]["jobs"][CLASSIC]["tasks"][0]["python_wheel_task"]["entry"] = "dataprep"
    with pytest.raises(ValueError, match="Unexpected field 'entry'"):
        Job.from_dict(deployed("dev", spec)["resources"]["jobs"][CLASSIC])
    spec = bundle()
    spec["resources"]["volumes"]["lakehouse"]["volume_type"] = "MANAGE"
    with pytest.raises(ValueError, match="MANAGE"):
        Volume.from_dict(deployed("dev", spec)["resources"]["volumes"]["lakehouse"])


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_follows_the_rules_of_its_deployment_mode(target):
    spec = bundle()
    mode = spec["targets"][target]["mode"]
    assert RULES[mode](spec, target) == []


@pytest.mark.parametrize(
    ("breakage", "complaint"),
    [
        (lambda prod: prod["workspace"].pop("root_path"), "workspace.root_path: a production target sets it"),
        (lambda prod: prod["workspace"].update(root_path="~/.bundle/dataprep/prod"), "changes with who deploys"),
        (lambda prod: prod.pop("run_as"), "run_as: exactly one"),
        (lambda prod: prod.update(run_as={"user_name": "someone@example.com"}), "service principal"),
        (lambda prod: prod.pop("permissions"), "permissions: a production target"),
        (lambda prod: prod.update(permissions=[{"group_name": "users", "level": "IS_OWNER"}]), "one principal"),
        (lambda prod: prod.update(cluster_id="0101-123456-abcdefgh"), "cluster_id/compute_id"),
    ],
)
def test_the_production_rules_catch_a_target_databricks_refuses_or_advises_against(breakage, complaint):
    spec = bundle()
    breakage(spec["targets"]["prod"])
    assert any(complaint in problem for problem in production_rule_violations(spec, "prod"))


def test_production_without_its_service_principal_fails_the_rules():
    # The variable's default is empty: `-t prod` without --var service_principal=<application ID> is invalid.
    problems = production_rule_violations(bundle(), "prod", variables={})
    assert any(problem.startswith("run_as: exactly one") for problem in problems)


@pytest.mark.parametrize("job_key", [CLASSIC, SERVERLESS])
def test_each_job_is_the_chain_of_stages_with_one_compute_per_task(job_key):
    job = bundle()["resources"]["jobs"][job_key]
    tasks = {task["task_key"]: task for task in job["tasks"]}
    assert list(tasks) == STAGES
    for previous, stage in itertools.pairwise(STAGES):
        assert tasks[stage]["depends_on"] == [{"task_key": previous}]
    compute_fields = ("job_cluster_key", "environment_key", "existing_cluster_id", "new_cluster")
    for task in tasks.values():  # the CLI's job_task_cluster_spec check, and no more than one
        assert sum(field in task for field in compute_fields) == 1, task["task_key"]
    clusters = {cluster["job_cluster_key"]: cluster["new_cluster"] for cluster in job.get("job_clusters", [])}
    environments = {env["environment_key"]: env["spec"] for env in job.get("environments", [])}
    assert {t["job_cluster_key"] for t in tasks.values() if "job_cluster_key" in t} == set(clusters)
    assert {t["environment_key"] for t in tasks.values() if "environment_key" in t} == set(environments)
    assert job["max_concurrent_runs"] == 1
    # Training: one GPU node of the ML runtime (PyTorch included), as the CLI's single-node check wants it.
    gpu = clusters[tasks["train"]["job_cluster_key"]]
    assert "gpu-ml" in gpu["spark_version"] and gpu["num_workers"] == 0
    assert gpu["spark_conf"]["spark.databricks.cluster.profile"] == "singleNode"
    assert gpu["spark_conf"]["spark.master"].startswith("local") and gpu["custom_tags"]["ResourceClass"] == "SingleNode"


def test_the_classic_job_runs_the_data_stages_on_a_spark_4_job_cluster_nightly():
    spec = bundle()
    job = spec["resources"]["jobs"][CLASSIC]
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    data_clusters = {task["job_cluster_key"] for task in job["tasks"] if task["task_key"] != "train"}
    assert data_clusters == {"spark"}
    assert clusters["spark"]["spark_version"].startswith("17.") and clusters["spark"]["spark_version"].endswith(
        "scala2.13"
    )  # DBR 17 = Spark 4.0, the line we pin
    assert job["schedule"]["quartz_cron_expression"] and job["schedule"]["pause_status"] == "PAUSED"
    assert spec["targets"]["dev"]["default"] and spec["targets"]["dev"]["mode"] == "development"
    assert deployed("prod")["resources"]["jobs"][CLASSIC]["schedule"]["pause_status"] == "UNPAUSED"
    artifact = spec["artifacts"]["dataprep_wheel"]
    assert os.path.exists(os.path.join(JOBS, artifact["path"], "setup.py"))


def test_the_serverless_job_runs_the_data_stages_in_an_environment_with_the_wheel_and_no_schedule():
    job = bundle()["resources"]["jobs"][SERVERLESS]
    environments = {env["environment_key"]: env["spec"] for env in job["environments"]}
    for task in job["tasks"]:
        if task["task_key"] == "train":
            continue
        spec = environments[task["environment_key"]]
        # Environment version 4 is the Spark 4.0 client (Databricks Connect 17); serverless tasks take their
        # libraries from the environment, never from `libraries`.
        assert spec["environment_version"] == "4" and "../dist/*.whl" in spec["dependencies"]
        assert "libraries" not in task
    assert "schedule" not in job and "trigger" not in job  # run instead of the classic job, never beside it


def test_the_maintenance_job_maintains_the_tables_weekly_on_the_pipelines_cluster():
    job = bundle()["resources"]["jobs"][MAINTENANCE]
    assert [task["task_key"] for task in job["tasks"]] == ["maintain"] and job["max_concurrent_runs"] == 1
    clusters = {cluster["job_cluster_key"]: cluster["new_cluster"] for cluster in job["job_clusters"]}
    pipeline = {c["job_cluster_key"]: c["new_cluster"] for c in bundle()["resources"]["jobs"][CLASSIC]["job_clusters"]}
    assert clusters[job["tasks"][0]["job_cluster_key"]] == pipeline["spark"]
    assert job["schedule"]["pause_status"] == "PAUSED"
    assert deployed("prod")["resources"]["jobs"][MAINTENANCE]["schedule"]["pause_status"] == "UNPAUSED"


# ---------------------------------------------------------------------------------------------------------------
# What the tasks run and read.


def _cli_accepts_config_variables() -> bool:
    try:
        _parser().parse_args(["ingest", "--config", "x.yaml", "--var", "NAME=value"])
    except SystemExit:
        return False
    return True


def _without_config_variables(parameters: list[str]) -> list[str]:
    kept, skip = [], False
    for parameter in parameters:
        if not skip and parameter != "--var":
            kept.append(parameter)
        skip = parameter == "--var"
    return kept


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("job_key", [CLASSIC, SERVERLESS, MAINTENANCE])
def test_every_task_runs_an_existing_entry_point_that_accepts_its_parameters(job_key, target):
    config = deployed(target)
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    needs_variables = []
    for task in wheel_tasks(config, job_key).values():
        wheel_task = task["python_wheel_task"]
        assert wheel_task["package_name"] == metadata.metadata("dataprep")["Name"]
        assert scripts[wheel_task["entry_point"]] == "dataprep.cli:entry_point"
        parameters = wheel_task["parameters"]
        assert parameters[0] == task["task_key"] and "${" not in " ".join(parameters)
        if "--var" in parameters and not _cli_accepts_config_variables():
            needs_variables.append(task["task_key"])
            parameters = _without_config_variables(parameters)  # the rest is checked now
        args = _parser().parse_args(parameters)  # argparse exits on anything it does not accept
        assert callable(args.handler) and args.config == config["var"]["config"]
        if "job_cluster_key" in task:
            assert task["libraries"] == [{"whl": "../dist/*.whl"}]
    if needs_variables:
        pytest.skip(f"{needs_variables}: `--var NAME=VALUE` (the config's variables) is not a dataprep option yet")


def _sync_root(config: dict) -> str:
    """The CLI's sync root: the innermost directory holding the bundle root and every sync path (sync_infer_root.go);
    ${workspace.file_path} is its copy in the workspace."""
    paths = [os.path.normpath(os.path.join(JOBS, path)) for path in config["sync"]["paths"]]
    return os.path.commonpath([JOBS, *paths])


@pytest.mark.parametrize("target", TARGETS)
def test_every_file_a_task_reads_is_deployed_with_the_bundle(target):
    config = deployed(target)
    file_path = config["workspace"]["file_path"] + "/"
    synced = [os.path.normpath(os.path.join(JOBS, path)) for path in config["sync"]["paths"]]
    assert not config["sync"].get("exclude"), "exclusions would have to be applied here"
    read = set()
    for job_key in config["resources"]["jobs"]:
        for task in wheel_tasks(config, job_key).values():
            read |= {p for p in task["python_wheel_task"]["parameters"] if p.startswith("/Workspace/")}
    assert read, "the tasks read no deployed file: the config is not passed"
    for path in sorted(read):
        assert path.startswith(file_path), f"{path} is outside what the bundle deploys ({file_path})"
        local = os.path.join(_sync_root(config), path[len(file_path) :])
        assert os.path.isfile(local), f"{path}: {local} does not exist"
        assert any(os.path.commonpath([local, root]) == root for root in synced), f"{local} is not synced"
        ignored = subprocess.run(["git", "check-ignore", "-q", local], cwd=REPO, check=False).returncode == 0
        assert not ignored, f"{local} is git-ignored: the CLI does not upload it"


def _task_environment(job: dict, task: dict) -> dict[str, str]:
    """What the config's ${VAR}s expand from in this task: its job cluster's environment, and `--var NAME=VALUE`."""
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job.get("job_clusters", [])}
    variables = dict(clusters[task["job_cluster_key"]].get("spark_env_vars", {})) if "job_cluster_key" in task else {}
    parameters = task["python_wheel_task"]["parameters"]
    for flag, value in zip(parameters, parameters[1:], strict=False):
        if flag == "--var":
            name, _, variable = value.partition("=")
            variables[name] = variable
    return variables


def _local(config: dict, workspace_path: str) -> str:
    return os.path.join(_sync_root(config), workspace_path[len(config["workspace"]["file_path"]) + 1 :])


@pytest.mark.parametrize("target", TARGETS)
def test_every_task_reads_a_config_that_resolves_to_its_targets_schema_and_volume(target, monkeypatch):
    for name in ("DATAPREP_CATALOG", "DATAPREP_SCHEMA", "DATAPREP_LAKEHOUSE"):
        monkeypatch.delenv(name, raising=False)
    config = deployed(target)
    schema = config["resources"]["schemas"]["dataprep"]
    volume = config["resources"]["volumes"]["lakehouse"]
    assert (volume["catalog_name"], volume["schema_name"]) == (schema["catalog_name"], schema["name"])
    volume_root = f"/Volumes/{volume['catalog_name']}/{volume['schema_name']}/{volume['name']}"
    for job_key, job in config["resources"]["jobs"].items():
        for task in job["tasks"]:
            where = f"{job_key}.{task['task_key']} ({target})"
            pipeline = load_config(_local(config, config["var"]["config"]), _task_environment(job, task))
            lakehouse = pipeline.lakehouse
            assert (lakehouse.catalog, lakehouse.schema) == (schema["catalog_name"], schema["name"]), where
            assert lakehouse.root == volume_root, where
            # The GPU task reads the MDS stages the mds task wrote, and checkpoints beside them, in the volume.
            assert pipeline.mds.output.startswith(volume_root + "/") and pipeline.train.checkpoint_dir.startswith(
                volume_root + "/"
            ), where
            assert all(path.startswith(volume_root + "/inputs/") for s in pipeline.sources for path in s.paths)
            assert pipeline.mlflow.tracking_uri == "databricks", where


def test_dev_and_prod_write_to_different_schemas():
    schemas = {target: deployed(target)["resources"]["schemas"]["dataprep"]["name"] for target in TARGETS}
    assert schemas == {"dev": "dev_someone_dataprep", "prod": "dataprep"}


def test_the_deployed_mix_draws_only_on_sources_the_config_declares(monkeypatch):
    config = deployed("dev")
    monkeypatch.setenv("DATAPREP_CATALOG", "main")
    monkeypatch.setenv("DATAPREP_SCHEMA", "dataprep")
    pipeline = load_config(_local(config, config["var"]["config"]))
    mix = load_mix(_local(config, config["var"]["mix"]))
    predicates = [component.predicate for stage in mix.stages for component in stage.components]
    named = {name for predicate in predicates for name in re.findall(r"source\s*=\s*'([^']+)'", predicate)}
    assert named <= {source.name for source in pipeline.sources}
    if any("kind = 'code'" in predicate for predicate in predicates):
        assert any(source.kind == "code" for source in pipeline.sources)


# ---------------------------------------------------------------------------------------------------------------
# The processes the tasks start.


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
    for package in ("dataprep", "pipelines", "trainer"):
        for directory, _, files in os.walk(os.path.join(REPO, package)):
            if any(name.endswith(".py") for name in files) and "__pycache__" not in directory:
                assert "__init__.py" in files, f"{directory} has modules but no __init__.py"
