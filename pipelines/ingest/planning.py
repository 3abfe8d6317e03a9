"""Turns each source's paths into work units, on the driver, before any data is read.

Only file names and sizes are looked at here; the bytes are read by Spark tasks. A unit is one file, or one byte
range of a large plain JSONL file, or a file that is already known to be bad (a symlink leaving the root), which a
task turns into a quarantine row so the run's accounting sees it.

Paths are storage URIs (pipelines/storage.py): local paths, Databricks' FUSE mounts, object stores. An object
store is listed a page of keys (with their sizes) per request, never a request per file.
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass, field

from pipelines import storage
from pipelines.ingest.settings import IngestConfig, SourceConfig
from pipelines.storage import Entry, Storage

# Directories that hold dependencies, build output or VCS data, never a project's own source.
SKIPPED_CODE_DIRECTORIES = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".bzr",
        "node_modules",
        "bower_components",
        "jspm_packages",
        "vendor",
        "vendors",
        "third_party",
        "third-party",
        "thirdparty",
        "external",
        "site-packages",
        "dist-packages",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        ".eggs",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".gradle",
        ".idea",
        ".vscode",
        "build",
        "dist",
        "target",
        "out",
        "_build",
        ".next",
        ".nuxt",
        "Pods",
        "Carthage",
        ".terraform",
        "coverage",
        "htmlcov",
        ".cache",
    }
)

COMPRESSION_SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}


class MissingInputError(FileNotFoundError):
    """A configured path does not exist or matches no file: the run stops before reading anything."""


@dataclass(frozen=True)
class WorkUnit:
    source: str
    path: str  # absolute path of the file
    relative_path: str  # path relative to the source's base directory: what locators are made of
    size: int
    start: int = 0  # byte range [start, end) of a split plain-text file; end = -1 for the whole file
    end: int = -1
    compression: str | None = None
    repository: str | None = None  # code: the checkout this file belongs to
    repository_path: str | None = None  # code: path inside that checkout
    preflight_reason: str | None = None  # set when the file is known to be bad before it is read
    preflight_detail: str | None = None

    def as_row(self) -> dict:
        return asdict(self)


@dataclass
class SourcePlan:
    source: SourceConfig
    units: list[WorkUnit] = field(default_factory=list)
    skipped_directories: int = 0

    @property
    def input_bytes(self) -> int:
        return sum(unit.size for unit in self.units if unit.end < 0) + sum(
            unit.end - unit.start for unit in self.units if unit.end >= 0
        )


def plan_source(source: SourceConfig, ingest: IngestConfig, store: Storage) -> SourcePlan:
    """Lists the source's files (sorted, so the plan is the same on every run) and splits them into units."""
    plan = SourcePlan(source)
    base = _source_base(source.paths, store)
    seen: set[str] = set()
    for entry in source.paths:
        if source.format == "code":
            candidates = _walk_code_root(entry, base, plan, store)
        else:
            candidates = _files_of(entry, base, plan, store)
        for unit in candidates:
            if unit.path in seen:  # two globs naming the same file: read it once
                continue
            seen.add(unit.path)
            plan.units.extend(_split(unit, source, ingest))
    return plan


def _source_base(paths: tuple[str, ...], store: Storage) -> str:
    """The deepest directory above every path, so relative paths (and locators) never collide between entries."""
    bases = []
    for path in paths:
        prefix = storage.non_glob_prefix(path) if storage.has_glob(path) else path
        bases.append(prefix if store.is_directory(prefix) else storage.parent(prefix))
    return storage.common_directory(bases)


def _files_of(entry: str, base: str, plan: SourcePlan, store: Storage) -> list[WorkUnit]:
    hidden = (".", "_")  # Hadoop/Spark bookkeeping (_SUCCESS, .crc, _temporary/) in data directories
    if storage.has_glob(entry):
        matches = store.glob(entry)
        if not matches:
            raise MissingInputError(f"source {plan.source.name!r}: {entry!r} matches no file")
        return [_file_unit(match, base, plan) for match in matches]
    if store.is_directory(entry):

        def keep(name: str) -> bool:
            if name == ".git" or name.startswith(hidden):
                plan.skipped_directories += 1
                return False
            return True

        files = [e for e in store.walk(entry, keep, root=base) if not storage.basename(e.uri).startswith(hidden)]
        if not files:
            raise MissingInputError(f"source {plan.source.name!r}: directory {entry!r} holds no files")
        return [_file_unit(file, base, plan) for file in files]
    found = store.entry(entry, root=base)
    if found is not None:
        return [_file_unit(found, base, plan)]
    raise MissingInputError(f"source {plan.source.name!r}: path {entry!r} does not exist")


def _walk_code_root(root: str, base: str, plan: SourcePlan, store: Storage) -> list[WorkUnit]:
    if not store.is_directory(root):
        raise MissingInputError(f"source {plan.source.name!r}: code root {root!r} is not a directory")
    repository = storage.basename(root)

    def keep(name: str) -> bool:
        if name in SKIPPED_CODE_DIRECTORIES:
            plan.skipped_directories += 1
            return False
        return True

    units = []
    for entry in store.walk(root, keep, root=root):
        unit = _file_unit(entry, base, plan)
        repository_path = _escaped(storage.relative(entry.uri, root))
        units.append(WorkUnit(**{**unit.as_row(), "repository": repository, "repository_path": repository_path}))
    return units


def _file_unit(entry: Entry, base: str, plan: SourcePlan) -> WorkUnit:
    path, relative = entry.uri, storage.relative(entry.uri, base)
    if _undecodable(path):
        # A name that is not UTF-8 (Python keeps its bytes as surrogates) cannot be stored as a Delta string: the
        # file is quarantined under its name with those bytes escaped (\xe9), which is also what the locator says.
        shown = _escaped(relative)
        return WorkUnit(source=plan.source.name, path=_escaped(path), relative_path=shown, size=0, compression=None,
                        preflight_reason="undecodable_file_name",
                        preflight_detail=f"file name is not UTF-8: {shown!r}")  # fmt: skip
    reason, detail = entry.problem or (None, None)
    compression = None
    if plan.source.format == "jsonl":
        compression = COMPRESSION_SUFFIXES.get(posixpath.splitext(storage.basename(path))[1].lower())
    return WorkUnit(
        source=plan.source.name,
        path=path,
        relative_path=relative,
        size=entry.size,
        compression=compression,
        preflight_reason=reason,
        preflight_detail=detail,
    )


def _undecodable(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _escaped(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _split(unit: WorkUnit, source: SourceConfig, ingest: IngestConfig) -> list[WorkUnit]:
    """Plain JSONL files larger than split_bytes become byte ranges; every other file is one unit."""
    splittable = source.format == "jsonl" and unit.compression is None and unit.preflight_reason is None
    if not splittable or unit.size <= ingest.split_bytes:
        return [unit]
    row = unit.as_row()
    return [
        WorkUnit(**{**row, "start": start, "end": min(start + ingest.split_bytes, unit.size)})
        for start in range(0, unit.size, ingest.split_bytes)
    ]
