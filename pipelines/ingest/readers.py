"""Reading one work unit into documents and rejections. Pure Python: runs inside Spark tasks, testable without Spark.

Every record read ends as exactly one `Document` or one `Rejected` (with a reason code and a human detail), so a
stage can reconcile: read = documents + rejected. Memory stays bounded whatever the input: lines and files are read
with a cap, compressed streams are watched for inflation, and nothing holds more than one document at a time.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from pipelines.ingest.languages import detect_language
from pipelines.ingest.planning import WorkUnit
from pipelines.ingest.settings import IngestConfig, SourceConfig
from pipelines.storage import Storage

_SKIP_CHUNK = 1024 * 1024
# Small decompression steps: when a stream turns out truncated, at most this much decoded data is lost with it.
_DECOMPRESS_CHUNK = 64 * 1024
_BINARY_SNIFF_BYTES = 8000  # what git looks at to call a file binary


@dataclass(slots=True)
class Document:
    locator: str
    text: str
    encoded: bytes  # text as UTF-8: hashed for the doc_id and measured for n_bytes
    offset: int  # where it started in its file (byte offset, or row index for Parquet)
    language: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Rejected:
    locator: str
    reason: str  # a stable code, counted in reports: malformed_json, invalid_utf8, ...
    detail: str  # what exactly was wrong, for a person
    excerpt: bytes
    offset: int


Record = Document | Rejected


class InflationLimitExceeded(Exception):
    """A compressed stream grew past the configured ratio: treated as a decompression bomb."""


def read_unit(unit: WorkUnit, source: SourceConfig, ingest: IngestConfig, store: Storage) -> Iterator[Record]:
    if unit.preflight_reason is not None:
        yield Rejected(unit.relative_path, unit.preflight_reason, unit.preflight_detail or "", b"", 0)
        return
    try:
        with store.open_read(unit.path) as handle:
            yield from READERS[source.format](unit, handle, source, ingest)
    except OSError as error:  # vanished or unreadable between planning and reading
        yield Rejected(unit.relative_path, "unreadable_file", str(error), b"", unit.start)


# ---------------------------------------------------------------------------------------------------------------
# JSONL


def _read_jsonl(unit: WorkUnit, raw: BinaryIO, source: SourceConfig, ingest: IngestConfig) -> Iterator[Record]:
    # A JSON line may escape every character (\\uXXXX), so the line cap is looser than the document cap.
    max_line_bytes = 6 * source.max_doc_bytes + 1024
    offset = unit.start
    stream = _decompressed(raw, unit, ingest)
    try:
        for offset, line, too_long in _lines(stream, unit.start, unit.end, max_line_bytes):
            locator = f"{unit.relative_path}@{offset}"
            if too_long:
                detail = f"line longer than {max_line_bytes} bytes (max_doc_bytes={source.max_doc_bytes})"
                yield Rejected(locator, "too_large", detail, line[: ingest.excerpt_bytes], offset)
            else:
                yield _document_from_json_line(line, locator, offset, source, ingest)
    except InflationLimitExceeded as error:
        yield Rejected(f"{unit.relative_path}@{offset}", "decompression_bomb", str(error), b"", offset)
    except (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError) as error:
        # Everything before the damage was read; the rest of the stream is one quarantine row.
        detail = f"{type(error).__name__}: {error}"
        yield Rejected(f"{unit.relative_path}@{offset}", "corrupt_compressed_stream", detail, b"", offset)


def _decompressed(raw: io.BufferedIOBase, unit: WorkUnit, ingest: IngestConfig) -> io.BufferedIOBase:
    if unit.compression is None:
        return raw
    limit = max(ingest.inflation_floor_bytes, ingest.max_inflation_ratio * max(unit.size, 1))
    if unit.compression == "gzip":
        chunks = _gzip_chunks(raw)
    else:
        chunks = _zstd_chunks(raw)
    return io.BufferedReader(_InflatingStream(chunks, limit, unit.size), buffer_size=_SKIP_CHUNK)


def _gzip_chunks(raw: io.BufferedIOBase) -> Iterator[bytes]:
    # GzipFile raises EOFError on a truncated member and BadGzipFile/zlib.error on damage; both pass through.
    with gzip.GzipFile(fileobj=raw, mode="rb") as inflated:
        while chunk := inflated.read(_DECOMPRESS_CHUNK):
            yield chunk


def _zstd_chunks(raw: io.BufferedIOBase) -> Iterator[bytes]:
    """Decompresses every frame in turn; a file that ends inside a frame raises, unlike zstd's stream reader."""
    frame = zstandard.ZstdDecompressor().decompressobj()
    in_frame = False
    while compressed := raw.read(_DECOMPRESS_CHUNK // 8):
        while compressed:
            in_frame = True
            output = frame.decompress(compressed)
            if output:
                yield output
            compressed = b""
            if frame.eof:
                compressed, in_frame = frame.unused_data, False
                frame = zstandard.ZstdDecompressor().decompressobj()
    if in_frame:
        raise EOFError("compressed file ended inside a zstd frame (truncated)")


class _InflatingStream(io.RawIOBase):
    """A readable stream over decompressed chunks that stops one inflating past its limit (a decompression bomb)."""

    def __init__(self, chunks: Iterator[bytes], limit: int, compressed_size: int) -> None:
        self.chunks, self.limit, self.compressed_size = chunks, limit, compressed_size
        self.pending, self.produced = memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.pending:
            self.pending = memoryview(next(self.chunks, b""))
            self.produced += len(self.pending)
            if self.produced > self.limit:
                raise InflationLimitExceeded(
                    f"{self.compressed_size} compressed bytes inflated past {self.limit} bytes; raise "
                    "ingest.max_inflation_ratio if this file is genuine"
                )
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


def _lines(stream: io.BufferedIOBase, start: int, end: int, max_line_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """Yields (offset, line, too_long) for every line that starts in [start, end) (Hadoop's split rule).

    A line over the cap is not held in memory: its head is kept as the excerpt and the rest is skipped.
    """
    position = start
    if start > 0:
        stream.seek(start - 1)
        position = start - 1 + _skip_rest_of_line(stream)
    while end < 0 or position < end:
        line = stream.readline(max_line_bytes + 1)
        if not line:
            return
        offset = position
        position += len(line)
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            position += _skip_rest_of_line(stream)
            yield offset, line[:4096], True
        else:
            yield offset, line, False


def _skip_rest_of_line(stream: io.BufferedIOBase) -> int:
    skipped = 0
    while True:
        chunk = stream.readline(_SKIP_CHUNK)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def _document_from_json_line(
    line: bytes, locator: str, offset: int, source: SourceConfig, ingest: IngestConfig
) -> Record:
    excerpt = line[: ingest.excerpt_bytes]
    body = line.strip()
    if not body:
        return Rejected(locator, "empty_record", "blank line", excerpt, offset)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        return Rejected(locator, "invalid_utf8", str(error), excerpt, offset)
    try:
        record = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        return Rejected(locator, "malformed_json", str(error), excerpt, offset)
    if not isinstance(record, dict):
        return Rejected(locator, "not_an_object", f"a JSON {type(record).__name__}, not an object", excerpt, offset)
    return _document_from_fields(record, locator, offset, source, excerpt)


def _document_from_fields(
    record: dict[str, Any], locator: str, offset: int, source: SourceConfig, excerpt: bytes
) -> Record:
    """Shared by JSONL and Parquet: pick the text, id and language fields; the rest becomes metadata."""
    found, text = _field(record, source.text_field)
    if not found or text is None:
        return Rejected(locator, "missing_text", f"no value at text field {source.text_field!r}", excerpt, offset)
    if not isinstance(text, str):
        detail = f"text field {source.text_field!r} holds {type(text).__name__}, not a string"
        return Rejected(locator, "wrong_text_type", detail, excerpt, offset)
    if source.id_field:
        found, identifier = _field(record, source.id_field)
        if not found or not isinstance(identifier, (str, int)) or isinstance(identifier, bool) or identifier == "":
            detail = f"id field {source.id_field!r} is missing or not a string/integer: {identifier!r}"
            return Rejected(locator, "invalid_id", detail[:500], excerpt, offset)
        locator = f"id={identifier}"
    language = None
    if source.language_field:
        found, value = _field(record, source.language_field)
        language = value if isinstance(value, str) and value else None
    checked = _checked_text(text, locator, offset, source, excerpt)
    if isinstance(checked, Rejected):
        return checked
    taken = {source.text_field, source.id_field, source.language_field}
    names = source.metadata_fields if source.metadata_fields is not None else [k for k in record if k not in taken]
    checked.metadata = {name: _metadata_value(record[name]) for name in names if record.get(name) is not None}
    checked.language = language
    return checked


def _field(record: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    """`meta.title` reaches into nested objects; a literal key containing a dot is tried first."""
    if dotted in record:
        return True, record[dotted]
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _metadata_value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value, default=str).decode("utf-8")
        except (TypeError, orjson.JSONEncodeError):
            text = repr(value)
    # Lone surrogates (from JSON escapes) cannot be stored as UTF-8: keep them visible instead of failing the task.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _checked_text(text: str, locator: str, offset: int, source: SourceConfig, excerpt: bytes) -> Document | Rejected:
    """The checks every document passes, whatever its format."""
    # orjson and Arrow both refuse unpaired surrogates, so every text that gets here encodes.
    encoded = text.encode("utf-8")
    if "\x00" in text:
        return Rejected(locator, "nul_byte", f"NUL character at index {text.index(chr(0))}", excerpt, offset)
    if not text.strip():
        return Rejected(locator, "empty_text", "text is empty or only whitespace", excerpt, offset)
    if len(encoded) > source.max_doc_bytes:
        detail = f"{len(encoded)} bytes > max_doc_bytes={source.max_doc_bytes}"
        return Rejected(locator, "too_large", detail, excerpt, offset)
    return Document(locator, text, encoded, offset)


# ---------------------------------------------------------------------------------------------------------------
# Parquet


def _read_parquet(unit: WorkUnit, handle: BinaryIO, source: SourceConfig, ingest: IngestConfig) -> Iterator[Record]:
    try:
        parquet = pq.ParquetFile(handle)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as error:
        yield Rejected(unit.relative_path, "unreadable_parquet", f"{type(error).__name__}: {error}", b"", 0)
        return
    problem = _parquet_schema_problem(schema, source)
    if problem:
        yield Rejected(unit.relative_path, "schema_mismatch", problem, b"", 0)
        return
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=1024, columns=_parquet_columns(schema, source)):
            for record in batch.to_pylist():
                locator = f"{unit.relative_path}#{row}"
                yield _document_from_fields(record, locator, row, source, _excerpt_of(record, source))
                row += 1
    except (pa.ArrowException, OSError) as error:
        detail = f"failed after {row} rows: {type(error).__name__}: {error}"
        yield Rejected(f"{unit.relative_path}#{row}", "unreadable_parquet", detail, b"", row)


def _parquet_schema_problem(schema: pa.Schema, source: SourceConfig) -> str | None:
    top = source.text_field.split(".")[0]
    if top not in schema.names:
        return f"no column {source.text_field!r}; columns are {schema.names}"
    column_type = schema.field(top).type
    if top == source.text_field and not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        return f"column {source.text_field!r} has type {column_type}, expected string"
    return None


def _parquet_columns(schema: pa.Schema, source: SourceConfig) -> list[str] | None:
    if source.metadata_fields is None:
        return None
    wanted = {source.text_field, source.id_field, source.language_field, *source.metadata_fields}
    return [name for name in schema.names if any(w and w.split(".")[0] == name for w in wanted)]


def _excerpt_of(record: dict[str, Any], source: SourceConfig) -> bytes:
    value = _field(record, source.text_field)[1]
    return str(value)[:256].encode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------------------------------------------
# Plain-text trees and code trees: one file, one document


def _read_text_file(unit: WorkUnit, handle: BinaryIO, source: SourceConfig, ingest: IngestConfig) -> Iterator[Record]:
    yield from _read_whole_file(unit, handle, source, ingest, is_code=False)


def _read_code_file(unit: WorkUnit, handle: BinaryIO, source: SourceConfig, ingest: IngestConfig) -> Iterator[Record]:
    yield from _read_whole_file(unit, handle, source, ingest, is_code=True)


def _read_whole_file(
    unit: WorkUnit, handle: BinaryIO, source: SourceConfig, ingest: IngestConfig, is_code: bool
) -> Iterator[Record]:
    locator = unit.relative_path
    data = handle.read(source.max_doc_bytes + 1)
    excerpt = data[: ingest.excerpt_bytes]
    if len(data) > source.max_doc_bytes:
        size = max(unit.size, len(data))
        yield Rejected(locator, "too_large", f"{size} bytes > max_doc_bytes={source.max_doc_bytes}", excerpt, 0)
        return
    if is_code and b"\x00" in data[:_BINARY_SNIFF_BYTES]:
        yield Rejected(locator, "binary", "NUL byte in the first 8000 bytes", excerpt, 0)
        return
    language = None
    if is_code:
        language = detect_language(unit.repository_path or locator, data[:256])
        if language is None:
            yield Rejected(locator, "unsupported_file_type", "no known language for this name or #! line", excerpt, 0)
            return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        yield Rejected(locator, "invalid_utf8", str(error), excerpt, 0)
        return
    checked = _checked_text(text, locator, 0, source, excerpt)
    if isinstance(checked, Document):
        checked.language = language
        checked.metadata = {"path": unit.repository_path or unit.relative_path, "size_bytes": str(unit.size)}
        if unit.repository:
            checked.metadata["repository"] = unit.repository
    yield checked


# One reader per source format (settings.SOURCE_FORMATS names the same formats; a test holds them equal).
READERS = {"jsonl": _read_jsonl, "parquet": _read_parquet, "text": _read_text_file, "code": _read_code_file}
