"""The ingest stage's config: the `sources:` list (what to read) and the `ingest:` section (how to read it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipelines.settings import ConfigError, Section, storage_path

SOURCE_FORMATS = ("jsonl", "parquet", "text", "code")
DOCUMENT_KINDS = ("text", "code")
MIB = 1024 * 1024


@dataclass(frozen=True)
class SourceConfig:
    """One named input: a format, one or more paths or globs, and how to read a document out of it."""

    name: str
    format: str
    paths: tuple[str, ...]
    kind: str
    text_field: str = "text"
    id_field: str | None = None
    language_field: str | None = None
    metadata_fields: tuple[str, ...] | None = None
    max_doc_bytes: int = 32 * MIB


@dataclass(frozen=True)
class IngestConfig:
    # Plain JSONL files larger than this are read by several tasks, each a byte range (Hadoop's line-split rule).
    split_bytes: int = 64 * MIB
    # A compressed stream that inflates beyond ratio x its size (and beyond the floor) is a bomb: quarantined.
    max_inflation_ratio: int = 200
    inflation_floor_bytes: int = 64 * MIB
    excerpt_bytes: int = 1024


def parse_sources(items: list[Any], parent: str) -> tuple[SourceConfig, ...]:
    if not items:
        raise ConfigError(f"{parent}.sources: at least one source is required")
    sources = [_parse_source(Section(item, f"sources[{index}]"), index) for index, item in enumerate(items)]
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"sources: names must be unique; repeated: {duplicates}")
    return tuple(sources)


def _parse_source(section: Section, index: int) -> SourceConfig:
    name = section.take("name", str, required=True)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"{section.path}.name: {name!r} may hold only letters, digits, '_', '-' and '.'")
    section.path = f"sources[{index}] ({name})"
    source_format = section.take("format", str, required=True, choices=SOURCE_FORMATS)
    paths = section.take("paths", (list, str), required=True)
    paths = [paths] if isinstance(paths, str) else paths
    if not paths or not all(isinstance(p, str) and p for p in paths):
        raise ConfigError(f"{section.path}.paths: expected a path or a list of paths, got {paths!r}")
    default_kind = "code" if source_format == "code" else "text"
    metadata_fields = section.take("metadata_fields", list)
    source = SourceConfig(
        name=name,
        format=source_format,
        paths=tuple(storage_path(section.where("paths"), p) for p in paths),
        kind=section.take("kind", str, default=default_kind, choices=DOCUMENT_KINDS),
        text_field=section.take("text_field", str, default="text"),
        id_field=section.take("id_field", str),
        language_field=section.take("language_field", str),
        metadata_fields=None if metadata_fields is None else tuple(str(f) for f in metadata_fields),
        max_doc_bytes=section.take(
            "max_doc_bytes", int, default=MIB if source_format == "code" else 32 * MIB, minimum=1
        ),
    )
    section.reject_unknown()
    if source_format in ("text", "code") and (source.id_field or source.language_field):
        raise ConfigError(
            f"{section.path}: id_field/language_field apply to jsonl and parquet sources, not {source_format!r}"
        )
    return source


def source_named(sources: tuple[SourceConfig, ...], name: str) -> SourceConfig:
    for source in sources:
        if source.name == name:
            return source
    raise ConfigError(f"sources: no source named {name!r}; configured: {[s.name for s in sources]}")


def parse_ingest(section: Section) -> IngestConfig:
    defaults = IngestConfig()
    ingest = IngestConfig(
        split_bytes=section.take("split_bytes", int, default=defaults.split_bytes, minimum=1024),
        max_inflation_ratio=section.take("max_inflation_ratio", int, default=defaults.max_inflation_ratio, minimum=2),
        inflation_floor_bytes=section.take(
            "inflation_floor_bytes", int, default=defaults.inflation_floor_bytes, minimum=1
        ),
        excerpt_bytes=section.take("excerpt_bytes", int, default=defaults.excerpt_bytes, minimum=16),
    )
    section.reject_unknown()
    return ingest
