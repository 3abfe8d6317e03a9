"""MosaicML Streaming's MDS v2 format for token samples, written and read without the `streaming` package.

A shard file (little-endian): uint32 sample count N; uint32 offsets[N+1] from the start of the file; the shard's
config as sorted-key JSON; then the samples. A sample of our single variable-size column `tokens`
(`ndarray:int32` or `ndarray:uint32`, llm-foundry's encoding) is: uint32 size of the column data, then the data:
one byte (ndim << 2 | shape-dtype code), the length as the smallest unsigned integer that holds it, the values.
`index.json` lists every shard with its sample count, raw (and zstd) basename, size and hex digests.

A shard is closed before a sample that would push it past `size_limit`, counted as MDSWriter counts it (8 bytes +
the config, then each sample's bytes + 4 for its offset), so for the same samples and settings our files equal
`streaming.MDSWriter`'s byte for byte (tests/test_mds_format.py proves it against streaming 0.13).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import zstandard

from pipelines import storage
from pipelines.storage import DEFAULT_STORAGE, Storage

INDEX = "index.json"
COLUMN = "tokens"
TOKEN_DTYPES = {"int32": (np.dtype("<i4"), 33), "uint32": (np.dtype("<u4"), 32)}  # dtype, MDS ndarray code
_SHAPE_CODES = [(np.uint8, 0), (np.uint16, 1), (np.uint32, 2), (np.uint64, 3)]
DEFAULT_SIZE_LIMIT = 1 << 26  # MDSWriter's default, 64 MiB


class MdsError(ValueError):
    """A shard or index that is not valid MDS for token samples."""


@dataclass(frozen=True)
class ShardSettings:
    token_dtype: str = "int32"
    compression: str | None = None  # None, "zstd" or "zstd:<level>"
    hashes: tuple[str, ...] = ("sha1",)  # hashlib names, sorted as MDSWriter requires
    size_limit: int | None = DEFAULT_SIZE_LIMIT

    def __post_init__(self) -> None:
        if self.token_dtype not in TOKEN_DTYPES:
            raise MdsError(f"token_dtype must be one of {sorted(TOKEN_DTYPES)}, got {self.token_dtype!r}")
        if self.compression is not None and not (
            self.compression == "zstd" or (self.compression.startswith("zstd:") and self.compression[5:].isdigit())
        ):
            raise MdsError(f"compression must be null, 'zstd' or 'zstd:<level>', got {self.compression!r}")
        unknown = [name for name in self.hashes if name not in hashlib.algorithms_guaranteed]
        if list(self.hashes) != sorted(set(self.hashes)) or unknown:
            raise MdsError(f"hashes must be distinct hashlib names in sorted order, got {list(self.hashes)}")
        if self.size_limit is not None and not 0 < self.size_limit < 1 << 32:
            raise MdsError(f"size_limit must be between 1 and 2^32 - 1 bytes, got {self.size_limit}")

    def config(self) -> dict:
        """The per-shard config MDSWriter writes (in each shard and, with counts and files, in index.json)."""
        return {
            "column_encodings": [f"ndarray:{self.token_dtype}"],
            "column_names": [COLUMN],
            "column_sizes": [None],
            "compression": self.compression,
            "format": "mds",
            "hashes": list(self.hashes),
            "size_limit": self.size_limit,
            "version": 2,
        }

    def config_bytes(self) -> bytes:
        return json.dumps(self.config(), sort_keys=True).encode("utf-8")

    @property
    def zstd_level(self) -> int:
        return int(self.compression.split(":")[1]) if self.compression and ":" in self.compression else 3


def _shape_type(length: int) -> tuple[type, int]:
    """The smallest unsigned type that holds the length, and its MDS code."""
    return next((t, c) for t, c in _SHAPE_CODES if length <= np.iinfo(t).max)


def record_size(length: int) -> int:
    """Bytes of the record `encode_sample` writes for `length` 4-byte tokens (shard boundaries need it up front)."""
    return int(record_sizes(np.array([length]))[0])


def record_sizes(lengths: np.ndarray) -> np.ndarray:
    """`record_size` of each length (int64), for the whole chunk of a stream at once."""
    lengths = np.asarray(lengths, dtype=np.int64)
    shape_bytes = np.full(lengths.shape, np.dtype(_SHAPE_CODES[-1][0]).itemsize, dtype=np.int64)
    for shape_type, _ in reversed(_SHAPE_CODES[:-1]):  # the smallest type that holds the length wins
        shape_bytes[lengths <= np.iinfo(shape_type).max] = np.dtype(shape_type).itemsize
    return 4 + 1 + shape_bytes + 4 * lengths


def encode_sample(tokens: np.ndarray, token_dtype: str) -> bytes:
    """One sample record: the column's size, then its `ndarray:<dtype>` encoding."""
    dtype, _ = TOKEN_DTYPES[token_dtype]
    if tokens.ndim != 1 or len(tokens) == 0:
        raise MdsError("a token sample must be a non-empty 1-D array")
    shape_type, shape_code = _shape_type(len(tokens))
    shape = np.array([len(tokens)], dtype=np.dtype(shape_type).newbyteorder("<")).tobytes()
    data = bytes([(1 << 2) | shape_code]) + shape + np.ascontiguousarray(tokens, dtype=dtype).tobytes()
    return struct.pack("<I", len(data)) + data


def decode_sample(record: bytes, token_dtype: str) -> np.ndarray:
    dtype, _ = TOKEN_DTYPES[token_dtype]
    (size,) = struct.unpack_from("<I", record)
    data = record[4 : 4 + size]
    ndim, shape_code = data[0] >> 2, data[0] & 3
    if ndim != 1:
        raise MdsError(f"expected a 1-D token array, found {ndim} dimensions")
    shape_type = np.dtype(_SHAPE_CODES[shape_code][0]).newbyteorder("<")
    length = int(np.frombuffer(data, shape_type, 1, 1)[0])
    values = np.frombuffer(data, dtype, length, 1 + shape_type.itemsize)
    if 1 + shape_type.itemsize + length * dtype.itemsize != size:
        raise MdsError("sample size does not match its shape")
    return values


def encode_shard(records: list[bytes], config_bytes: bytes) -> bytes:
    """A whole raw shard from encoded sample records."""
    header = 4 + 4 * (len(records) + 1) + len(config_bytes)
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in records], dtype=np.int64)
    offsets = (offsets + header).astype("<u4")
    return struct.pack("<I", len(records)) + offsets.tobytes() + config_bytes + b"".join(records)


def shard_records(raw: bytes) -> list[bytes]:
    (count,) = struct.unpack_from("<I", raw)
    offsets = np.frombuffer(raw, "<u4", count + 1, 4)
    if len(raw) != int(offsets[-1]):
        raise MdsError(f"shard is {len(raw)} bytes but its offsets end at {int(offsets[-1])}")
    return [raw[int(a) : int(b)] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def shard_capacity(settings: ShardSettings) -> int | None:
    """Bytes a shard has for its samples, each counted as its record + its 4-byte offset (None: no limit):
    MDSWriter closes a shard before a sample that would take the shard past `size_limit`, its header included."""
    return None if settings.size_limit is None else settings.size_limit - 8 - len(settings.config_bytes())


def group_into_shards(sizes: Iterable[int], settings: ShardSettings) -> Iterator[int]:
    """How many consecutive samples (of these record sizes) each shard holds, by MDSWriter's rule: a shard is
    closed before a sample that would overfill it, even an empty one (so a first sample larger than the limit
    leaves an empty shard behind it). The reference the distributed layout (pipelines/mds/layout.py) is tested on."""
    capacity = shard_capacity(settings)
    fill, count = 0, 0
    for size in sizes:
        if capacity is not None and fill + size + 4 > capacity:
            yield count
            fill, count = 0, 0
        fill += size + 4
        count += 1
    if count:
        yield count


def shard_name(number: int, settings: ShardSettings) -> tuple[str, str | None]:
    raw = f"shard.{number:05}.mds"
    return raw, (f"{raw}.zstd" if settings.compression else None)


def write_shard(directory: str, number: int, records: list[bytes], settings: ShardSettings, store: Storage) -> dict:
    """Writes shard `number` under `directory` (a storage URI; whole or not at all) and returns its index.json
    entry."""
    name, payload, entry = encode_shard_file(number, records, settings)
    store.write_bytes(storage.join(directory, name), payload)
    return entry


def encode_shard_file(number: int, records: list[bytes], settings: ShardSettings) -> tuple[str, bytes, dict]:
    """Shard `number`'s file: its name, its bytes (compressed when the settings say so) and its index entry."""
    raw = encode_shard(records, settings.config_bytes())
    raw_name, zip_name = shard_name(number, settings)
    entry = {**settings.config(), "samples": len(records), "raw_data": _file_info(raw_name, raw, settings)}
    entry["zip_data"] = None
    payload, name = raw, raw_name
    if zip_name:
        # MDSWriter's `zstd.compress` runs zstd's multi-threaded mode (one worker per CPU), whose frames differ from
        # single-threaded mode once a shard spans several jobs; the output is the same for any number of workers >= 1.
        payload = zstandard.ZstdCompressor(level=settings.zstd_level, threads=1).compress(raw)
        entry["zip_data"] = _file_info(zip_name, payload, settings)
        name = zip_name
    return name, payload, entry


def stored_file(entry: dict) -> dict:
    """The part of an index entry describing the file as stored: `zip_data` when compressed, else `raw_data`."""
    return entry.get("zip_data") or entry["raw_data"]


def write_index(directory: str, entries: list[dict], store: Storage) -> None:
    text = json.dumps({"shards": entries, "version": 2}, sort_keys=True)
    store.write_text(storage.join(directory, INDEX), text)


def read_index(directory: str, store: Storage = DEFAULT_STORAGE) -> list[dict]:
    index = json.loads(store.read_bytes(storage.join(directory, INDEX)))
    if index.get("version") != 2:
        raise MdsError(f"{directory}/index.json: version {index.get('version')!r}, expected 2")
    return index["shards"]


def read_shard(directory: str, entry: dict, store: Storage = DEFAULT_STORAGE) -> bytes:
    """The raw shard bytes of an index entry (decompressed when the shard is stored compressed)."""
    payload = store.read_bytes(storage.join(directory, stored_file(entry)["basename"]))
    return zstandard.ZstdDecompressor().decompress(payload) if entry.get("zip_data") else payload


def iter_samples(directory: str, store: Storage = DEFAULT_STORAGE) -> Iterator[np.ndarray]:
    for entry in read_index(directory, store):
        dtype = entry["column_encodings"][0].split(":")[1]
        for record in shard_records(read_shard(directory, entry, store)):
            yield decode_sample(record, dtype)


def _file_info(basename: str, data: bytes, settings: ShardSettings) -> dict:
    return {
        "basename": basename,
        "bytes": len(data),
        "hashes": {name: hashlib.new(name, data).hexdigest() for name in settings.hashes},
    }


def write_samples(
    directory: str, samples: Iterable[np.ndarray], settings: ShardSettings, store: Storage = DEFAULT_STORAGE
) -> list[dict]:
    """Writes token samples into MDS shards + index.json in one process (what MDSWriter does); returns the entries.
    The Spark stage fixes the same shard boundaries up front and writes shards in parallel instead."""
    records = [encode_sample(np.asarray(sample), settings.token_dtype) for sample in samples]
    entries, start = [], 0
    for number, count in enumerate(group_into_shards([len(r) for r in records], settings)):
        entries.append(write_shard(directory, number, records[start : start + count], settings, store))
        start += count
    write_index(directory, entries, store)
    return entries
