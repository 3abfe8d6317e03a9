"""The demo corpus, found on any machine with Python: no download, nothing third-party committed.

- code: the standard library's source tree, read in place (binary files, test data in odd encodings and oversized
  files in it exercise the quarantine for real);
- prose: the pydoc topic pages (one text file each), and every standard module's docstring (JSONL, gzip).

The prose files are written deterministically (sorted, gzip without timestamps), so ids are the same on every run.
"""

from __future__ import annotations

import ast
import gzip
import os
import sysconfig
import warnings
from pydoc_data.topics import topics

from pipelines import storage
from pipelines.ingest.planning import SKIPPED_CODE_DIRECTORIES
from pipelines.storage import Storage


def python_stdlib() -> str:
    return sysconfig.get_paths()["stdlib"]


def build_demo_corpus(directory: str, store: Storage | None = None) -> dict[str, int]:
    """Writes the prose part of the corpus under `directory` (a storage URI: a local path or an object store);
    returns how many documents each part holds."""
    store = store or Storage()
    topics_dir = storage.join(directory, "pydoc_topics")
    docstrings_dir = storage.join(directory, "module_docstrings")
    for name, text in sorted(topics.items()):
        _write_if_changed(store, storage.join(topics_dir, f"{name}.txt"), text.encode("utf-8"))
    import orjson  # here, not at the top: the trainer's environment reads the demo config without orjson

    lines = [orjson.dumps({"module": module, "docstring": doc, "path": path}) for module, path, doc in _docstrings()]
    payload = b"".join(line + b"\n" for line in lines)
    _write_if_changed(store, storage.join(docstrings_dir, "stdlib.jsonl.gz"), gzip.compress(payload, mtime=0))
    return {"pydoc_topics": len(topics), "module_docstrings": len(lines)}


# The test suites' docstrings say little and cost most of the parsing time.
_NOT_PROSE = SKIPPED_CODE_DIRECTORIES | {"test", "tests", "idle_test"}


def _docstrings() -> list[tuple[str, str, str]]:
    root = python_stdlib()
    found = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d not in _NOT_PROSE)
        for name in sorted(names):
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            module = relative[:-3].replace(os.sep, ".").removesuffix(".__init__")
            doc = _module_docstring(path)
            if doc:
                found.append((module, relative, doc))
    return sorted(found)


def _module_docstring(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(handle.read())
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return None  # the test suite ships deliberately broken files
    return ast.get_docstring(tree)


def _write_if_changed(store: Storage, uri: str, data: bytes) -> None:
    # Rewriting identical bytes is harmless for ids, but leaving the file alone keeps reruns visibly idempotent.
    if store.size(uri) == len(data) and store.read_bytes(uri) == data:
        return
    store.write_bytes(uri, data)
