"""`dataprep verify DIR`: checks an MDS directory (ours or anyone's) end to end, without Spark.

Every shard file exists with the size and hash digests its index entry records; its header's sample count equals
the index's; every sample decodes; every token id is below the vocabulary size. With our manifest.json beside the
index, the token total is checked against it and the per-component tokens are reported.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import zstandard

from pipelines import storage
from pipelines.mds import format as mds
from pipelines.storage import DEFAULT_STORAGE, Storage
from pipelines.tokenize.tokenizer import VOCAB_SIZE


@dataclass
class Verification:
    directory: str
    shards: int = 0
    samples: int = 0
    tokens: int = 0
    problems: list[str] = field(default_factory=list)
    components: dict[str, int] = field(default_factory=dict)  # realised tokens per component, from the manifest

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"{self.directory}: {self.shards} shards, {self.samples} samples, {self.tokens} tokens"]
        lines += [f"  {name}: {tokens} tokens" for name, tokens in self.components.items()]
        lines += [f"  PROBLEM {problem}" for problem in self.problems[:50]]
        lines.append("ok" if self.ok else f"{len(self.problems)} problem(s)")
        return "\n".join(lines)


def verify(directory: str, vocab_size: int = VOCAB_SIZE, store: Storage = DEFAULT_STORAGE) -> Verification:
    """`directory` is a storage URI: a local path or an object store prefix."""
    result = Verification(directory)
    try:
        entries = mds.read_index(directory, store)
    except (OSError, ValueError, KeyError) as error:
        result.problems.append(f"index.json: {error}")
        return result
    for number, entry in enumerate(entries):
        result.shards += 1
        stored = mds.stored_file(entry)
        path = storage.join(directory, stored["basename"])
        if not store.exists(path):
            result.problems.append(f"shard {number}: {stored['basename']} is missing")
            continue
        payload = store.read_bytes(path)
        if len(payload) != stored["bytes"]:
            result.problems.append(f"{stored['basename']}: {len(payload)} bytes, index says {stored['bytes']}")
        for name, digest in stored.get("hashes", {}).items():
            if hashlib.new(name, payload).hexdigest() != digest:
                result.problems.append(f"{stored['basename']}: {name} digest differs from the index")
        try:
            raw = zstandard.ZstdDecompressor().decompress(payload) if entry.get("zip_data") else payload
            records = mds.shard_records(raw)
            dtype = entry["column_encodings"][entry["column_names"].index(mds.COLUMN)].split(":")[1]
            samples = [mds.decode_sample(record, dtype) for record in records]
        except (ValueError, KeyError, IndexError, zstandard.ZstdError) as error:
            result.problems.append(f"{stored['basename']}: cannot be decoded: {error}")
            continue
        if len(samples) != entry["samples"]:
            result.problems.append(f"{stored['basename']}: {len(samples)} samples, index says {entry['samples']}")
        result.samples += len(samples)
        for index, sample in enumerate(samples):
            result.tokens += len(sample)
            if len(sample) and (int(np.max(sample)) >= vocab_size or int(np.min(sample)) < 0):
                result.problems.append(f"{stored['basename']} sample {index}: token id outside [0, {vocab_size})")
    _check_manifest(directory, result, store)
    return result


def _check_manifest(directory: str, result: Verification, store: Storage) -> None:
    path = storage.join(directory, "manifest.json")
    if not store.exists(path):
        return
    manifest = json.loads(store.read_bytes(path))
    result.components = {c["name"]: c["realised"] for c in manifest["components"]}
    if manifest["tokens_written"] != result.tokens:
        result.problems.append(f"manifest says {manifest['tokens_written']} tokens, the shards hold {result.tokens}")
    if manifest["samples"] != result.samples:
        result.problems.append(f"manifest says {manifest['samples']} samples, the shards hold {result.samples}")
