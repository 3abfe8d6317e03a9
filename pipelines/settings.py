"""The toolkit every config section is validated with, and the sections of the shared infrastructure.

Each package owns and parses its own section (`pipelines/<stage>/settings.py`, `trainer/settings.py`) with
`Section`; `dataprep/config.py` reads the YAML file and assembles them. Everything here is plain Python (no Spark,
no MLflow), so that any process can validate a config: the driver, a Spark task, the PyTorch environment.

Every error names the offending key path and value, and says what was expected, so a typo in a scheduled job fails
at start-up with a message a person can act on, not half-way through a Spark job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines import storage


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key, the value and what was expected."""


class Section:
    """A mapping being validated: `take` pops a key with its type checked; `reject_unknown` flags what is left."""

    def __init__(self, raw: Any, path: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(raw).__name__} {raw!r}")
        self.remaining = dict(raw)
        self.known: list[str] = []
        self.path = path

    def section(self, key: str) -> Section:
        return Section(self.take(key, dict, default={}), self.where(key))

    def where(self, key: str) -> str:
        """The key's path as error messages show it."""
        return key if self.path == "config" else f"{self.path}.{key}"

    def take(
        self,
        key: str,
        expected: type | tuple[type, ...],
        *,
        default: Any = None,
        required: bool = False,
        choices: tuple[str, ...] | None = None,
        minimum: int | None = None,
    ) -> Any:
        self.known.append(key)
        where = self.where(key)
        if key not in self.remaining or self.remaining[key] is None:
            self.remaining.pop(key, None)
            if required:
                raise ConfigError(f"{where}: required key is missing")
            return default
        value = self.remaining.pop(key)
        expected_types = expected if isinstance(expected, tuple) else (expected,)
        # bool is an int in Python; a YAML `true` where a number belongs is still a mistake.
        wrong_bool = isinstance(value, bool) and bool not in expected_types
        if wrong_bool or not isinstance(value, expected_types):
            names = " or ".join(t.__name__ for t in expected_types)
            raise ConfigError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")
        if choices is not None and value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{where}: {value!r} is below the minimum {minimum}")
        return value

    def take_number(self, key: str, default: float | None = None) -> float | None:
        """An int or float key, as a float (YAML writes `1` for 1.0)."""
        value = self.take(key, (int, float), default=default)
        return None if value is None else float(value)

    def reject_unknown(self) -> None:
        if self.remaining:
            unknown = ", ".join(repr(k) for k in self.remaining)
            raise ConfigError(f"{self.path}: unknown key(s) {unknown}; expected some of: {', '.join(self.known)}")


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, extra: Mapping[str, str] | None = None) -> str:
    """Replaces `${VAR}` and `${VAR:-default}`; an unset variable without a default is an error."""
    names = {**os.environ, **(extra or {})}

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in names and names[name] != "":
            return names[name]
        if default is not None:
            return default
        raise ConfigError(f"${{{name}}} is used in the config but the environment variable {name} is not set")

    return _ENV_REFERENCE.sub(replace, text)


def local_path(where: str, path: str) -> str:
    """A path on this machine (a config file such as a mix), made absolute; a URI is refused, naming the key."""
    if storage.scheme_of(path) not in (None, "file"):
        raise ConfigError(f"{where}: {path!r} is a URI; this file is read on the driver: give a local path")
    return storage_path(where, path)


def storage_path(where: str, path: str) -> str:
    """A path data is read from or written to (pipelines/storage.py): a local path made absolute (against the
    working directory, as spark-submit and most CLIs resolve them), or an object store URI; a scheme the storage
    layer cannot serve is refused here, naming the key, before anything runs."""
    try:
        return storage.normalized(path)
    except storage.UnsupportedPath as error:
        raise ConfigError(f"{where}: {error}") from None


# ---------------------------------------------------------------------------------------------------------------
# The shared infrastructure's sections: where tables live, the embedded Spark session, the MLflow store.


# Delta's own default for how long files a table no longer references are kept (`delta.deletedFileRetentionDuration`,
# 7 days): a reader or writer that started from an older version may still need them, and VACUUM refuses less.
DELTA_RETENTION_HOURS = 168


@dataclass(frozen=True)
class MaintainConfig:
    """`dataprep maintain` (pipelines/maintain.py): how much history VACUUM keeps."""

    # VACUUM deletes the files that no table version of the last `retain_hours` needs; time travel reaches this far.
    retain_hours: int = DELTA_RETENTION_HOURS
    # Below Delta's safety default only when said so: a VACUUM that deletes files a running job still reads breaks it.
    allow_short_retention: bool = False


@dataclass(frozen=True)
class LakehouseConfig:
    """Where the Delta tables live: a local directory, or Unity Catalog `catalog.schema` when `catalog` is set."""

    root: str
    catalog: str | None = None
    schema: str | None = None
    create_schema: bool = False  # CREATE SCHEMA IF NOT EXISTS before a stage runs (Unity Catalog)
    external_location: str | None = None  # Unity Catalog tables as external tables under this URI; None: managed
    maintain: MaintainConfig = field(default_factory=MaintainConfig)

    @property
    def uses_unity_catalog(self) -> bool:
        return self.catalog is not None


def parse_lakehouse(section: Section) -> LakehouseConfig:
    root = section.take("root", str, default="./lakehouse")
    catalog = section.take("catalog", str)
    schema = section.take("schema", str)
    create_schema = section.take("create_schema", bool, default=False)
    external_location = section.take("external_location", str)
    maintain = parse_maintain(section.section("maintain"))
    section.reject_unknown()
    if (catalog is None) != (schema is None):
        raise ConfigError(
            f"lakehouse: 'catalog' and 'schema' go together (Unity Catalog catalog.schema); got catalog={catalog!r}, "
            f"schema={schema!r}"
        )
    for key, value in (("catalog", catalog), ("schema", schema)):
        if value is not None and not _UNITY_CATALOG_NAME.fullmatch(value):
            raise ConfigError(
                f"lakehouse.{key}: {value!r} is not a Unity Catalog name (1 to 255 characters, none of them a period, "
                "space, slash or control character)"
            )
    if catalog is None and (create_schema or external_location):
        raise ConfigError("lakehouse: create_schema and external_location apply to Unity Catalog (set catalog/schema)")
    if external_location is not None:
        external_location = storage_path(section.where("external_location"), external_location)
    return LakehouseConfig(
        root=storage_path(section.where("root"), root),
        catalog=catalog,
        schema=schema,
        create_schema=create_schema,
        external_location=external_location,
        maintain=maintain,
    )


def parse_maintain(section: Section) -> MaintainConfig:
    maintain = MaintainConfig(
        retain_hours=section.take("retain_hours", int, default=DELTA_RETENTION_HOURS, minimum=0),
        allow_short_retention=section.take("allow_short_retention", bool, default=False),
    )
    section.reject_unknown()
    if maintain.retain_hours < DELTA_RETENTION_HOURS and not maintain.allow_short_retention:
        raise ConfigError(
            f"{section.where('retain_hours')}: {maintain.retain_hours} is below Delta's safety default of "
            f"{DELTA_RETENTION_HOURS} hours: VACUUM would delete files that a job still reading or writing an older "
            f"version of a table needs. Keep at least {DELTA_RETENTION_HOURS}, or set "
            f"{section.where('allow_short_retention')}: true when nothing runs while `dataprep maintain` does"
        )
    return maintain


# Unity Catalog's rule for catalog, schema and table names; any such name works once quoted (lakehouse.quote).
_UNITY_CATALOG_NAME = re.compile(r"[^.\s/\x00-\x1f\x7f]{1,255}")


@dataclass(frozen=True)
class SparkConfig:
    """Settings for the embedded local session; ignored when a session already exists (Databricks, spark-submit)."""

    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    ui_enabled: bool = False
    conf: Mapping[str, str] = field(default_factory=dict)
    remote: str | None = None  # a Spark Connect server (sc://host:port/;params); then nothing above applies


def parse_spark(section: Section) -> SparkConfig:
    spark = SparkConfig(
        master=section.take("master", str, default="local[*]"),
        driver_memory=section.take("driver_memory", str, default="4g"),
        shuffle_partitions=section.take("shuffle_partitions", int, default=8, minimum=1),
        ui_enabled=section.take("ui_enabled", bool, default=False),
        conf={str(k): str(v) for k, v in section.take("conf", dict, default={}).items()},
        remote=section.take("remote", str),
    )
    section.reject_unknown()
    if spark.remote is not None and not spark.remote.startswith("sc://"):
        raise ConfigError(f"spark.remote: {spark.remote!r} is not a Spark Connect address (sc://host:port)")
    if not re.fullmatch(r"\d+[kmgt]?", spark.driver_memory.lower()):
        raise ConfigError(f"spark.driver_memory: {spark.driver_memory!r} is not a JVM memory size such as '4g'")
    return spark


DEFAULT_EXPERIMENT = "dataprep"


@dataclass(frozen=True)
class MlflowConfig:
    """Where runs are logged, and where models are registered.

    `experiment` is None only with a Databricks tracking server: it then means `/Users/<user>/dataprep` for the
    user the run authenticates as, which only a request to the workspace can tell (pipelines/tracking.py)."""

    tracking_uri: str
    experiment: str | None = DEFAULT_EXPERIMENT
    artifact_location: str | None = None
    registry_uri: str | None = None  # None: MLflow's default (Unity Catalog for a Databricks tracking server)


def is_databricks_uri(uri: str) -> bool:
    """`databricks` or `databricks://<profile>`: a Databricks workspace's tracking server."""
    return uri == "databricks" or uri.startswith("databricks://")


def on_databricks_runtime() -> bool:
    """True in a process of a Databricks cluster or serverless environment (variables the runtime sets; MLflow's
    databricks_utils reads the same two)."""
    return "DATABRICKS_RUNTIME_VERSION" in os.environ or "DATABRICKS_ENV_VERSION" in os.environ


def parse_mlflow(section: Section, lakehouse: LakehouseConfig) -> MlflowConfig:
    remote_root = storage.is_remote(lakehouse.root)
    # On a cluster the runs go to the workspace's own server: an sqlite file on the driver would die with the
    # cluster, and the GPU task of the same job, on another cluster, would never see it.
    if on_databricks_runtime():
        default_uri = "databricks"
    else:
        default_uri = None if remote_root else "sqlite:///" + os.path.join(lakehouse.root, "mlflow.db")
    tracking_uri = section.take("tracking_uri", str, default=default_uri)
    experiment = section.take("experiment", str)
    artifact_location = section.take("artifact_location", str)
    registry_uri = section.take("registry_uri", str)
    section.reject_unknown()
    if tracking_uri is None:
        # An sqlite file cannot live in a bucket: where runs go has to be said, not guessed.
        raise ConfigError(
            f"mlflow.tracking_uri: lakehouse.root {lakehouse.root!r} is in an object store, where MLflow's sqlite "
            "store cannot live; set it to an MLflow server, `databricks`, or sqlite:////absolute/local/path.db"
        )
    if tracking_uri.startswith("databricks-uc"):
        raise ConfigError(
            f"mlflow.tracking_uri: {tracking_uri!r} is Unity Catalog's model registry, not a tracking server; write "
            "tracking_uri: databricks (whose default registry it is) or registry_uri: databricks-uc"
        )
    if on_databricks_runtime() and tracking_uri.startswith("sqlite:"):
        raise ConfigError(
            f"mlflow.tracking_uri: {tracking_uri!r} is an sqlite file on this Databricks cluster, which is lost when "
            "the cluster stops and unseen by the job's other clusters; use `databricks` (or leave it unset)"
        )
    experiment = _experiment(tracking_uri, experiment)
    if tracking_uri.startswith("sqlite:///") and not tracking_uri.startswith("sqlite:////"):
        raise ConfigError(
            f"mlflow.tracking_uri: {tracking_uri!r} is a relative sqlite path; use sqlite:////absolute/path.db "
            "so every process (driver, workers, CI) opens the same store"
        )
    if artifact_location is not None and storage.scheme_of(artifact_location) in ("s3a", "s3n"):
        raise ConfigError(
            f"mlflow.artifact_location: {artifact_location!r}: MLflow's artifact stores know s3://, not the Hadoop "
            "spelling; write s3://" + artifact_location.split("://", 1)[1]
        )
    if artifact_location is None and tracking_uri.startswith("sqlite:"):
        # Beside the lakehouse when it is local; beside the sqlite file when the lakehouse is in a bucket.
        home = os.path.dirname(tracking_uri.removeprefix("sqlite:///")) if remote_root else lakehouse.root
        artifact_location = os.path.join(home, "mlflow-artifacts")
    return MlflowConfig(tracking_uri, experiment, artifact_location, registry_uri)


def _experiment(tracking_uri: str, experiment: str | None) -> str | None:
    """The configured experiment, checked; None for the current user's default on a Databricks server."""
    if not is_databricks_uri(tracking_uri):
        return experiment or DEFAULT_EXPERIMENT
    # A Databricks workspace names experiments by their path in the workspace tree and rejects a bare name.
    if experiment is not None and not experiment.startswith("/"):
        raise ConfigError(
            f"mlflow.experiment: {experiment!r} is not a workspace path, which a Databricks tracking server requires: "
            f"write e.g. /Users/<you>/{experiment} or /Shared/{experiment}, or leave it unset for "
            f"/Users/<current user>/{DEFAULT_EXPERIMENT}"
        )
    return experiment
