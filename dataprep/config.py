"""The one validated configuration that drives every stage: the YAML file read, `${VAR}` / `${VAR:-default}`
references expanded from the environment, and each section parsed and validated by the package that owns it
(pipelines/settings.py for the infrastructure, pipelines/<stage>/settings.py, trainer/settings.py).

Relative local paths are resolved against the current working directory (as `spark-submit` and most CLIs do).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.dedup.settings import DedupConfig, parse_dedup
from pipelines.filter.settings import FilterConfig, parse_filter
from pipelines.ingest.settings import IngestConfig, SourceConfig, parse_ingest, parse_sources, source_named
from pipelines.mds.settings import MdsConfig, parse_mds
from pipelines.settings import (
    ConfigError,
    LakehouseConfig,
    MlflowConfig,
    Section,
    SparkConfig,
    expand_env,
    parse_lakehouse,
    parse_mlflow,
    parse_spark,
)
from pipelines.tokenize.settings import TokenizeConfig, parse_tokenize
from trainer.settings import TrainConfig, parse_train


@dataclass(frozen=True)
class PipelineConfig:
    lakehouse: LakehouseConfig
    spark: SparkConfig
    mlflow: MlflowConfig
    sources: tuple[SourceConfig, ...]
    ingest: IngestConfig
    filter: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    mds: MdsConfig = field(default_factory=MdsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def source(self, name: str) -> SourceConfig:
        return source_named(self.sources, name)

    def storage_paths(self) -> dict[str, str]:
        """Every path data is read from or written to, by the key that names it (for checks before a run)."""
        paths = {"lakehouse.root": self.lakehouse.root}
        for index, source in enumerate(self.sources):
            for number, path in enumerate(source.paths):
                paths[f"sources[{index}] ({source.name}).paths[{number}]"] = path
        if self.filter.language_model:
            paths["filter.language_model"] = self.filter.language_model
        paths["mds.output"] = self.mds.output
        paths["train.checkpoint_dir"] = self.train.checkpoint_dir
        return paths


def load_config(path: str | os.PathLike[str], variables: dict[str, str] | None = None) -> PipelineConfig:
    """Reads, expands and validates a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(expand_env(path.read_text(encoding="utf-8"), variables))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    return parse_config(raw)


def parse_config(raw: Any) -> PipelineConfig:
    """Validates an already-parsed mapping (what tests and notebooks build in code)."""
    top = Section(raw, "config")
    lakehouse = parse_lakehouse(top.section("lakehouse"))
    spark = parse_spark(top.section("spark"))
    mlflow = parse_mlflow(top.section("mlflow"), lakehouse)
    sources = parse_sources(top.take("sources", list, required=True), top.path)
    config = PipelineConfig(
        lakehouse=lakehouse,
        spark=spark,
        mlflow=mlflow,
        sources=sources,
        ingest=parse_ingest(top.section("ingest")),
        filter=parse_filter(top.section("filter"), [source.name for source in sources]),
        dedup=parse_dedup(top.section("dedup")),
        tokenize=parse_tokenize(top.section("tokenize")),
        mds=parse_mds(top.section("mds"), lakehouse),
        train=parse_train(top.section("train"), lakehouse),
    )
    top.reject_unknown()
    return config
