"""Turns each source's paths into work units, on the driver, before any data is read.

Only file names and sizes are looked at here; the bytes are read by Spark tasks. A unit is one file, or one byte
range of a large plain JSONL file, or a file that is already known to be bad (a symlink leaving the root), which a
task turns into a quarantine row so the run's accounting sees it.

Paths are local (including Databricks' `/Volumes/...` and `/dbfs/...` FUSE mounts, which every worker sees).
"""

from __future__ import annotations

import glob
import os
from dataclasses import asdict, dataclass, field

from pipelines.ingest.settings import IngestConfig, SourceConfig

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
_GLOB_CHARACTERS = set("*?[")


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


def plan_source(source: SourceConfig, ingest: IngestConfig) -> SourcePlan:
    """Lists the source's files (sorted, so the plan is the same on every run) and splits them into units."""
    plan = SourcePlan(source)
    base = _source_base(source.paths)
    seen: set[str] = set()
    for entry in source.paths:
        if source.format == "code":
            candidates = _walk_code_root(entry, base, plan)
        else:
            candidates = _files_of(entry, base, plan)
        for unit in candidates:
            if unit.path in seen:  # two globs naming the same file: read it once
                continue
            seen.add(unit.path)
            plan.units.extend(_split(unit, source, ingest))
    return plan


def _source_base(paths: tuple[str, ...]) -> str:
    """The deepest directory above every path, so relative paths (and locators) never collide between entries."""
    bases = []
    for path in paths:
        prefix = _non_glob_prefix(path) if _GLOB_CHARACTERS & set(path) else path
        bases.append(prefix if os.path.isdir(prefix) else os.path.dirname(prefix))
    return os.path.commonpath(bases)


def _non_glob_prefix(path: str) -> str:
    parts = path.split(os.sep)
    kept = []
    for part in parts:
        if _GLOB_CHARACTERS & set(part):
            break
        kept.append(part)
    return os.sep.join(kept) or os.sep


def _files_of(entry: str, base: str, plan: SourcePlan) -> list[WorkUnit]:
    if _GLOB_CHARACTERS & set(entry):
        matches = sorted(p for p in glob.glob(entry, recursive=True) if os.path.isfile(p))
        if not matches:
            raise MissingInputError(f"source {plan.source.name!r}: {entry!r} matches no file")
        return [_file_unit(p, base, plan) for p in matches]
    if os.path.isdir(entry):
        files = _walk_directory(entry, base, plan, skip=frozenset({".git"}))
        if not files:
            raise MissingInputError(f"source {plan.source.name!r}: directory {entry!r} holds no files")
        return [_file_unit(p, base, plan) for p in files]
    if os.path.isfile(entry):
        return [_file_unit(entry, base, plan)]
    raise MissingInputError(f"source {plan.source.name!r}: path {entry!r} does not exist")


def _walk_directory(root: str, base: str, plan: SourcePlan, skip: frozenset[str]) -> list[str]:
    """Files under root in sorted order; symlinked directories are never entered (no loops, no escapes)."""
    files = []
    for directory, subdirectories, names in os.walk(root, followlinks=False):
        kept = []
        for name in sorted(subdirectories):
            full = os.path.join(directory, name)
            if name in skip or (name.startswith((".", "_")) and plan.source.format != "code"):
                plan.skipped_directories += 1
            elif os.path.islink(full):
                files.append(full)  # becomes a quarantine unit: see _file_unit
            else:
                kept.append(name)
        subdirectories[:] = kept
        for name in sorted(names):
            # Hidden and underscore files are Hadoop/Spark bookkeeping (_SUCCESS, .crc) in data directories.
            if plan.source.format != "code" and name.startswith((".", "_")):
                continue
            files.append(os.path.join(directory, name))
    return sorted(files)


def _walk_code_root(root: str, base: str, plan: SourcePlan) -> list[WorkUnit]:
    if not os.path.isdir(root):
        raise MissingInputError(f"source {plan.source.name!r}: code root {root!r} is not a directory")
    repository = os.path.basename(os.path.normpath(root))
    units = []
    for path in _walk_directory(root, base, plan, skip=SKIPPED_CODE_DIRECTORIES):
        unit = _file_unit(path, base, plan, root=root)
        units.append(
            WorkUnit(
                **{**unit.as_row(), "repository": repository, "repository_path": _escaped(os.path.relpath(path, root))}
            )
        )
    return units


def _file_unit(path: str, base: str, plan: SourcePlan, root: str | None = None) -> WorkUnit:
    relative = os.path.relpath(path, base)
    root = os.path.realpath(root or base)
    reason, detail, size = None, None, 0
    if _undecodable(path):
        # A name that is not UTF-8 (Python keeps its bytes as surrogates) cannot be stored as a Delta string: the
        # file is quarantined under its name with those bytes escaped (\xe9), which is also what the locator says.
        shown = _escaped(relative)
        return WorkUnit(source=plan.source.name, path=_escaped(path), relative_path=shown, size=0, compression=None,
                        preflight_reason="undecodable_file_name",
                        preflight_detail=f"file name is not UTF-8: {shown!r}")  # fmt: skip
    if os.path.islink(path):
        target = os.path.realpath(path)
        if not os.path.exists(target):
            reason, detail = "broken_symlink", f"points to {os.readlink(path)!r}"
        elif os.path.isdir(target):
            reason, detail = "symlink_directory_not_followed", f"points to {os.readlink(path)!r}"
        elif os.path.commonpath([root, target]) != root:
            reason, detail = "symlink_outside_root", f"points to {target!r}, outside {root!r}"
    if reason is None:
        try:
            size = os.stat(path).st_size
        except OSError as error:
            reason, detail = "unreadable_file", str(error)
    compression = None
    if plan.source.format == "jsonl":
        compression = COMPRESSION_SUFFIXES.get(os.path.splitext(path)[1].lower())
    return WorkUnit(
        source=plan.source.name,
        path=path,
        relative_path=relative,
        size=size,
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
