"""Every table of the lakehouse, declared once: its name, columns (Arrow type, nullability, comment) and purpose.

A stage writes exactly these columns. The Spark schema (with the comments Delta stores) and the conforming cast are
derived from the declaration; Spark tasks build their Arrow batches from the same declaration. This module imports
only pyarrow (pyspark lazily, for the derived Spark forms), so a Python worker that only needs a schema stays light.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool
    comment: str


@dataclass(frozen=True)
class TableSpec:
    name: str  # layer.name, e.g. "bronze.documents"
    description: str  # the table's comment
    columns: tuple[Column, ...]
    # Delta liquid clustering keys (CLUSTER BY, at most 4): the columns later stages find rows by. OPTIMIZE lays the
    # files out by them, so that each file holds a narrow range of keys and a MERGE or lookup on them reads and
    # rewrites few files. Empty: no clustering.
    clustering: tuple[str, ...] = ()
    # Delta's change data feed on: a later stage reads only what changed since it last caught up (pipelines/changes.py)
    # instead of the whole table. Inserts cost nothing extra; an update or delete also writes the changed rows' images.
    change_feed: bool = False

    def __post_init__(self) -> None:
        unknown = [name for name in self.clustering if name not in self.column_names]
        if unknown or len(self.clustering) > 4:
            raise ValueError(f"{self.name}: clustering {self.clustering} must be at most 4 of its columns")

    @property
    def layer(self) -> str:
        return self.name.partition(".")[0]

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def arrow_schema(self, names: Iterable[str] | None = None) -> pa.Schema:
        """The Arrow schema of every column, or of the named ones in the table's order."""
        return pa.schema([pa.field(c.name, c.type, c.nullable) for c in self._select(names)])

    def spark_schema(self, names: Iterable[str] | None = None) -> StructType:
        """The Spark schema (column comments in the field metadata, where Delta reads them)."""
        columns = self._select(names)
        return spark_schema(self.arrow_schema(names), {c.name: c.comment for c in columns})

    def conform(self, frame: DataFrame) -> DataFrame:
        """The table's columns, in order and cast to their declared types (what a write must hand Delta)."""
        from pyspark.sql import functions as F

        fields = self.spark_schema().fields  # with their comments: a table written by overwrite stores them too
        return frame.select(*[F.col(f.name).cast(f.dataType).alias(f.name, metadata=f.metadata) for f in fields])

    def _select(self, names: Iterable[str] | None) -> list[Column]:
        if names is None:
            return list(self.columns)
        wanted = set(names)
        unknown = wanted - set(self.column_names)
        if unknown:
            raise KeyError(f"{self.name} has no column(s) {sorted(unknown)}")
        return [c for c in self.columns if c.name in wanted]


def spark_schema(schema: pa.Schema, comments: dict[str, str] | None = None) -> StructType:
    """The Spark form of an Arrow schema (what a `mapInArrow` task declares it returns)."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    comments = comments or {}
    return StructType(
        [
            StructField(
                f.name, from_arrow_type(f.type), f.nullable, {"comment": comments[f.name]} if f.name in comments else {}
            )
            for f in schema
        ]
    )


def _table(
    name: str,
    description: str,
    *columns: tuple[str, pa.DataType, bool, str],
    clustering: tuple[str, ...] = (),
    change_feed: bool = False,
) -> TableSpec:
    return TableSpec(name, description, tuple(Column(*column) for column in columns), clustering, change_feed)


STRING, TEXT, INT, LONG, DOUBLE, BOOL = pa.string(), pa.large_string(), pa.int32(), pa.int64(), pa.float64(), pa.bool_()
TIMESTAMP = pa.timestamp("us")
STRING_MAP = pa.map_(pa.string(), pa.string())

BRONZE_DOCUMENTS = _table(
    "bronze.documents",
    "Raw documents, one row per (source, locator)",
    ("doc_id", STRING, False, "sha256 of (source, locator, content), 32 hex chars"),
    ("source", STRING, False, "configured source name"),
    ("kind", STRING, False, "text or code"),
    ("locator", STRING, False, "where the document is inside its source; unique per source"),
    ("text", TEXT, False, "the document as read, UTF-8, not normalised"),
    ("n_chars", INT, False, "length of text in Unicode code points"),
    ("n_bytes", LONG, False, "length of text in UTF-8 bytes"),
    ("language", STRING, True, "code: language from the file name; text: from a language field"),
    ("metadata", STRING_MAP, True, "other fields of the record, as strings"),
    ("run_id", STRING, False, "MLflow run id of the ingest that last wrote the row"),
    ("ingested_at", TIMESTAMP, False, "start of that ingest run, UTC"),
    # Ingest MERGEs on (source, locator), its only selective access: a run over one source's new files touches that
    # source's files only. The filter reads what ingest changed from the change data feed, not the whole table.
    clustering=("source", "locator"),
    change_feed=True,
)

BRONZE_QUARANTINE = _table(
    "bronze.quarantine",
    "Records and files that could not be ingested, with a reason",
    ("source", STRING, False, "configured source name"),
    ("locator", STRING, False, "where the bad record or file is"),
    ("reason", STRING, False, "stable reason code, e.g. malformed_json"),
    ("detail", STRING, True, "what exactly was wrong"),
    ("raw_excerpt", STRING, True, "head of the raw bytes, undecodable bytes escaped"),
    ("run_id", STRING, False, "MLflow run id of the ingest that found it"),
    ("quarantined_at", TIMESTAMP, False, "start of that ingest run, UTC"),
    # Read by people auditing a source's rejections by reason; ingest's insert-only MERGE leads with the same keys.
    clustering=("source", "reason"),
)

SILVER_DOCUMENTS = _table(
    "silver.documents",
    "Normalised, redacted documents with quality signals and decisions",
    ("doc_id", STRING, False, "bronze doc_id"),
    ("source", STRING, False, "configured source name"),
    ("kind", STRING, False, "text or code"),
    ("locator", STRING, False, "bronze locator"),
    ("text", TEXT, False, "normalised (NFC, controls removed, prose whitespace folded) and redacted"),
    ("n_chars", LONG, False, "length of text in code points"),
    ("content_hash", STRING, False, "sha256 of the normalised text before redaction, 32 hex"),
    ("language", STRING, True, "prose: fastText lid.176 label; code: language from ingest"),
    ("language_score", DOUBLE, True, "lid.176 probability of the label (prose only)"),
    ("signals", pa.map_(pa.string(), pa.float64()), False, "quality signals by name, see filter/signals.py"),
    ("pii_counts", pa.map_(pa.string(), pa.int64()), False, "redactions by kind"),
    ("signal_error", STRING, True, "why signals could not be computed, if they could not"),
    ("quality_score", DOUBLE, True, "fastText classifier P(high quality)"),
    ("quality_model", STRING, True, "MLflow run id of the model that gave quality_score"),
    ("duplicate_of", STRING, True, "doc_id kept for the same normalised content, if another"),
    ("keep", BOOL, True, "the filter decision"),
    ("drop_reasons", pa.list_(pa.string()), True, "every rule that drops the document"),
    ("run_id", STRING, False, "MLflow run id of the filter run that computed the signals"),
    ("processed_at", TIMESTAMP, False, "start of that run, UTC"),
    # Last: a table made before signals were versioned gains it at the end (Table.create_if_missing adds it).
    (
        "signal_versions",
        pa.map_(pa.string(), pa.int32()),
        True,
        "family -> version of the signals",
    ),
    # Every MERGE into it (stale rows, signals, decisions) and every join from dedup, tokenize and MDS is on doc_id.
    # Tokenize reads which documents the filter decided anew from the change data feed, not the whole table.
    clustering=("doc_id",),
    change_feed=True,
)

SILVER_DEDUP = _table(
    "silver.dedup",
    "Near-duplicate decisions of the documents the filter kept: kept, or removed as the duplicate of a kept one",
    ("doc_id", STRING, False, "silver doc_id of a document the filter kept"),
    # Clusters are connected components of the verified edges (A~B~C puts A and C together below the threshold):
    # duplicate families for analysis, not the unit of the keep decision, so one may hold several kept documents.
    ("cluster_id", STRING, False, "smallest doc_id of its near-duplicate family (itself if alone)"),
    ("cluster_size", LONG, False, "documents in the family"),
    ("keep", BOOL, False, "kept: no kept document is a verified near-duplicate of it"),
    # Nullable and last: a table written before it gains it as nulls (Table.create_if_missing); an incremental run
    # over such a table runs in full instead (pipelines/dedup/incremental.py).
    ("duplicate_of", STRING, True, "removed: the best-ranked kept document joined to it by a verified edge"),
    # Dedup MERGEs on doc_id, a full run too; tokenize reads which decisions changed from the change data feed.
    clustering=("doc_id",),
    change_feed=True,
)

SILVER_DEDUP_SIGNATURES = _table(
    "silver.dedup_signatures",
    "MinHash signatures and LSH band keys of the documents in silver.dedup, reused by incremental runs",
    ("doc_id", STRING, False, "silver doc_id, one row per row of silver.dedup"),
    ("signature", pa.list_(pa.int64()), False, "MinHash values (32-bit, stored as long)"),
    ("band_keys", pa.list_(pa.int64()), False, "64-bit LSH key of each band; empty without shingles"),
    ("n_shingles", LONG, False, "shingle positions of the document"),
    ("short", BOOL, False, "fewer tokens than one shingle: its whole text is its one shingle"),
    ("params", STRING, False, "the settings the row was computed with; incremental runs need equal"),
    # Incremental dedup MERGEs new signatures in on doc_id (band keys are arrays: not a clustering key).
    clustering=("doc_id",),
)

GOLD_TOKENS = _table(
    "gold.tokens",
    "cl100k_base tokens of the documents kept by the filter and dedup",
    ("doc_id", STRING, False, "silver doc_id of a document kept by the filter and by dedup"),
    ("source", STRING, False, "configured source name"),
    ("kind", STRING, False, "text or code"),
    ("lang", STRING, True, "prose: lid.176 label; code: its language"),
    ("tokens", pa.list_(pa.int32()), False, "cl100k_base ids (encode_ordinary: specials stay text)"),
    ("n_tokens", LONG, False, "length of tokens"),
    ("n_bytes", LONG, False, "UTF-8 bytes of the text that was encoded"),
    # Tokenize deletes the rows of documents no longer kept by a MERGE on doc_id, and finds new ones by doc_id.
    clustering=("doc_id",),
)

GOLD_TOKEN_STATS = _table(
    "gold.token_stats",
    "Documents, tokens and bytes per token by source, kind and language",
    ("source", STRING, False, "configured source name"),
    ("kind", STRING, False, "text or code"),
    ("lang", STRING, True, "language"),
    ("documents", LONG, False, "documents in gold.tokens"),
    ("tokens", LONG, False, "their tokens"),
    ("bytes", LONG, False, "their UTF-8 bytes"),
    ("bytes_per_token", DOUBLE, True, "bytes / tokens: how well cl100k compresses this slice"),
    # No clustering: a few rows per (source, kind, lang), rewritten whole by every tokenize run.
)

TABLES: tuple[TableSpec, ...] = (
    BRONZE_DOCUMENTS,
    BRONZE_QUARANTINE,
    SILVER_DOCUMENTS,
    SILVER_DEDUP,
    SILVER_DEDUP_SIGNATURES,
    GOLD_TOKENS,
    GOLD_TOKEN_STATS,
)


def table_spec(name: str) -> TableSpec:
    for spec in TABLES:
        if spec.name == name:
            return spec
    raise KeyError(f"no table {name!r}; tables: {', '.join(spec.name for spec in TABLES)}")
