"""Curriculum mixtures (mixes/*.yaml): ordered stages, each a token budget split over weighted components.

    name: dbrx_like
    seq_len: 2048                # defaults for every stage
    seed: 17
    token_dtype: int32           # or uint32
    packing: concat              # concat: documents joined with EOS into seq_len samples; document: one per sample
    remainder: drop              # the last, partial sample of a stage: drop | pad (with <|pad|>) | keep (shorter)
    shards: {compression: zstd, hashes: [sha1], size_limit: 67108864}
    stages:
      - name: broad
        tokens: 1_000_000_000
        components:
          - {name: web, where: "source = 'web' AND lang = 'en'", weight: 6, max_epochs: 1}
          - {name: code, source: code, weight: 3, max_epochs: 2}

A component selects documents of gold.tokens by `source`, or by a Spark SQL predicate (`where`) over the columns
listed in SELECTABLE_COLUMNS; its share of the stage budget is weight / sum of weights, and `max_epochs` caps how
many times its documents may be repeated to reach it (upsampling limit). Tokens are counted as they will be
trained on: a document's tokens plus its EOS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.mds.format import MdsError, ShardSettings
from pipelines.settings import ConfigError, Section, expand_env

PACKINGS = ("concat", "document")
REMAINDERS = ("drop", "pad", "keep")
# Columns a `where` predicate may use: gold.tokens joined with silver.documents.
SELECTABLE_COLUMNS = (
    "doc_id", "source", "kind", "lang", "n_tokens", "n_bytes",
    "quality_score", "language_score", "n_chars", "signals",
)  # fmt: skip
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Component:
    name: str
    predicate: str  # Spark SQL over SELECTABLE_COLUMNS (a `source:` component becomes "source = '<name>'")
    weight: float
    max_epochs: float


@dataclass(frozen=True)
class Stage:
    name: str
    tokens: int
    seq_len: int
    seed: int
    components: tuple[Component, ...]

    def targets(self) -> dict[str, int]:
        """Requested tokens per component: the budget split by weight, rounded so that they sum to the budget
        exactly (largest remainders first, ties by component order)."""
        total = sum(c.weight for c in self.components)
        shares = [self.tokens * c.weight / total for c in self.components]
        floors = [int(share) for share in shares]
        order = sorted(range(len(shares)), key=lambda i: (floors[i] - shares[i], i))
        for i in order[: self.tokens - sum(floors)]:
            floors[i] += 1
        return {c.name: n for c, n in zip(self.components, floors, strict=True)}


@dataclass(frozen=True)
class Mix:
    name: str
    token_dtype: str
    packing: str
    remainder: str
    shards: ShardSettings
    stages: tuple[Stage, ...]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"mix {self.name}: no stage {name!r}; stages: {[s.name for s in self.stages]}")


def load_mix(path: str | Path) -> Mix:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"mix file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(expand_env(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    return parse_mix(raw, str(path))


def parse_mix(raw: Any, where: str = "mix") -> Mix:
    top = Section(raw, where)
    name = _name(top, "name")
    seq_len = top.take("seq_len", int, default=2048, minimum=2)
    seed = top.take("seed", int, default=0)
    token_dtype = top.take("token_dtype", str, default="int32", choices=("int32", "uint32"))
    packing = top.take("packing", str, default="concat", choices=PACKINGS)
    remainder = top.take("remainder", str, default="drop", choices=REMAINDERS)
    shards = _shards(top.section("shards"), token_dtype)
    stages_raw = top.take("stages", list, required=True)
    top.reject_unknown()
    if not stages_raw:
        raise ConfigError(f"{where}.stages: a mix needs at least one stage")
    stages = tuple(_stage(item, f"{where}.stages[{i}]", seq_len, seed) for i, item in enumerate(stages_raw))
    _unique([s.name for s in stages], f"{where}.stages")
    return Mix(name, token_dtype, packing, remainder, shards, stages)


def _stage(raw: Any, where: str, seq_len: int, seed: int) -> Stage:
    section = Section(raw, where)
    stage = Stage(
        name=_name(section, "name"),
        tokens=section.take("tokens", int, required=True, minimum=1),
        seq_len=section.take("seq_len", int, default=seq_len, minimum=2),
        seed=section.take("seed", int, default=seed),
        components=tuple(
            _component(item, f"{where}.components[{i}]")
            for i, item in enumerate(section.take("components", list, required=True))
        ),
    )
    section.reject_unknown()
    if not stage.components:
        raise ConfigError(f"{where}.components: a stage needs at least one component")
    _unique([c.name for c in stage.components], f"{where}.components")
    return stage


def _component(raw: Any, where: str) -> Component:
    section = Section(raw, where)
    name = _name(section, "name")
    source = section.take("source", str)
    predicate = section.take("where", str)
    weight = float(section.take("weight", (int, float), required=True))
    max_epochs = float(section.take("max_epochs", (int, float), default=1))
    section.reject_unknown()
    if (source is None) == (predicate is None):
        raise ConfigError(f"{where}: give exactly one of 'source' or 'where'")
    if weight <= 0:
        raise ConfigError(f"{where}.weight: {weight} must be positive")
    if max_epochs <= 0:
        raise ConfigError(f"{where}.max_epochs: {max_epochs} must be positive")
    if source is not None:
        predicate = "source = '" + source.replace("'", "\\'") + "'"
    return Component(name, predicate, weight, max_epochs)


def _shards(section: Section, token_dtype: str) -> ShardSettings:
    try:
        settings = ShardSettings(
            token_dtype=token_dtype,
            compression=section.take("compression", str),
            hashes=tuple(section.take("hashes", list, default=["sha1"])),
            size_limit=section.take("size_limit", int, default=1 << 26),
        )
    except MdsError as error:
        raise ConfigError(f"{section.path}: {error}") from error
    section.reject_unknown()
    return settings


def _name(section: Section, key: str) -> str:
    value = section.take(key, str, required=True)
    if not _NAME.match(value):
        raise ConfigError(f"{section.path}.{key}: {value!r} must be letters, digits, '_', '.' or '-' (it names files)")
    return value


def _unique(names: list[str], where: str) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: names must be unique, repeated: {duplicates}")
