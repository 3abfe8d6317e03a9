"""What a Spark task runs: read its work units and hand the records to Spark as Arrow batches.

Kept apart from the stage so that a Python worker imports only what reading needs (not MLflow or Delta).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pyarrow as pa

from pipelines.identity import document_id
from pipelines.ingest.planning import WorkUnit
from pipelines.ingest.readers import Document, Record, read_unit
from pipelines.ingest.settings import IngestConfig, SourceConfig
from pipelines.storage import Storage

ARROW_RECORD_SCHEMA = pa.schema(
    [
        pa.field("is_document", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("locator", pa.string(), nullable=False),
        ("doc_id", pa.string()),
        ("text", pa.large_string()),
        ("n_chars", pa.int64()),
        ("n_bytes", pa.int64()),
        ("language", pa.string()),
        ("metadata", pa.map_(pa.string(), pa.string())),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw_excerpt", pa.string()),
        pa.field("origin", pa.string(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
    ]
)
_BATCH_ROWS = 1000
_BATCH_BYTES = 32 * 1024 * 1024


def read_partition(
    batches: Iterator[pa.RecordBatch], sources: Mapping[str, SourceConfig], ingest: IngestConfig, store: Storage
) -> Iterator[pa.RecordBatch]:
    """The mapInArrow function: each input row is a work unit; the output rows follow ARROW_RECORD_SCHEMA."""
    for batch in batches:
        for row in batch.to_pylist():
            unit = WorkUnit(**row)
            source = sources[unit.source]
            yield from record_batches(read_unit(unit, source, ingest, store), unit, source)


def record_batches(records: Iterator[Record], unit: WorkUnit, source: SourceConfig) -> Iterator[pa.RecordBatch]:
    """Arrow batches of at most _BATCH_ROWS rows or about _BATCH_BYTES of text, whichever comes first."""
    columns: dict[str, list] = {name: [] for name in ARROW_RECORD_SCHEMA.names}
    size = 0
    for record in records:
        _append(columns, record, unit, source)
        size += len(record.encoded) if isinstance(record, Document) else len(record.excerpt)
        if len(columns["locator"]) >= _BATCH_ROWS or size >= _BATCH_BYTES:
            yield pa.RecordBatch.from_pydict(columns, schema=ARROW_RECORD_SCHEMA)
            columns = {name: [] for name in ARROW_RECORD_SCHEMA.names}
            size = 0
    if columns["locator"]:
        yield pa.RecordBatch.from_pydict(columns, schema=ARROW_RECORD_SCHEMA)


def _append(columns: dict[str, list], record: Record, unit: WorkUnit, source: SourceConfig) -> None:
    is_document = isinstance(record, Document)
    values = {
        "is_document": "y" if is_document else "n",
        "source": source.name,
        "kind": source.kind,
        "locator": record.locator,
        "origin": unit.relative_path,
        "offset": record.offset,
    }
    if is_document:
        values.update(
            doc_id=document_id(source.name, record.locator, record.encoded),
            text=record.text,
            n_chars=len(record.text),
            n_bytes=len(record.encoded),
            language=record.language,
            metadata=list(record.metadata.items()),
        )
    else:
        values.update(
            reason=record.reason,
            detail=record.detail,
            raw_excerpt=record.excerpt.decode("utf-8", "backslashreplace").replace("\x00", "\\x00"),
        )
    for name, column in columns.items():
        column.append(values.get(name))
