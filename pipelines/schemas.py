"""Declared schemas of the lakehouse tables. A stage writes exactly these columns; tests check them."""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


def _field(name: str, data_type, nullable: bool, comment: str) -> StructField:
    return StructField(name, data_type, nullable, metadata={"comment": comment})


BRONZE_DOCUMENTS = StructType(
    [
        _field("doc_id", StringType(), False, "sha256 of (source, locator, content), 32 hex chars"),
        _field("source", StringType(), False, "configured source name"),
        _field("kind", StringType(), False, "text or code"),
        _field("locator", StringType(), False, "where the document is inside its source; unique per source"),
        _field("text", StringType(), False, "the document as read, UTF-8, not normalised"),
        _field("n_chars", IntegerType(), False, "length of text in Unicode code points"),
        _field("n_bytes", LongType(), False, "length of text in UTF-8 bytes"),
        _field("language", StringType(), True, "code: language from the file name; text: from a language field"),
        _field("metadata", MapType(StringType(), StringType()), True, "other fields of the record, as strings"),
        _field("run_id", StringType(), False, "MLflow run id of the ingest that last wrote the row"),
        _field("ingested_at", TimestampType(), False, "start of that ingest run, UTC"),
    ]
)

BRONZE_QUARANTINE = StructType(
    [
        _field("source", StringType(), False, "configured source name"),
        _field("locator", StringType(), False, "where the bad record or file is"),
        _field("reason", StringType(), False, "stable reason code, e.g. malformed_json"),
        _field("detail", StringType(), True, "what exactly was wrong"),
        _field("raw_excerpt", StringType(), True, "head of the raw bytes, undecodable bytes escaped"),
        _field("run_id", StringType(), False, "MLflow run id of the ingest that found it"),
        _field("quarantined_at", TimestampType(), False, "start of that ingest run, UTC"),
    ]
)

SILVER_DOCUMENTS = StructType(
    [
        _field("doc_id", StringType(), False, "bronze doc_id"),
        _field("source", StringType(), False, "configured source name"),
        _field("kind", StringType(), False, "text or code"),
        _field("locator", StringType(), False, "bronze locator"),
        _field("text", StringType(), False, "normalised (NFC, controls removed, prose whitespace folded) and redacted"),
        _field("n_chars", LongType(), False, "length of text in code points"),
        _field("content_hash", StringType(), False, "sha256 of the normalised text before redaction, 32 hex"),
        _field("language", StringType(), True, "prose: fastText lid.176 label; code: language from ingest"),
        _field("language_score", DoubleType(), True, "lid.176 probability of the label (prose only)"),
        _field("signals", MapType(StringType(), DoubleType()), False, "quality signals by name, see filter/rules.py"),
        _field("pii_counts", MapType(StringType(), LongType()), False, "redactions by kind"),
        _field("signal_error", StringType(), True, "why signals could not be computed, if they could not"),
        _field("quality_score", DoubleType(), True, "fastText classifier P(high quality)"),
        _field("quality_model", StringType(), True, "MLflow run id of the model that gave quality_score"),
        _field("duplicate_of", StringType(), True, "doc_id kept for the same normalised content, if another"),
        _field("keep", BooleanType(), True, "the filter decision"),
        _field("drop_reasons", ArrayType(StringType()), True, "every rule that drops the document"),
        _field("run_id", StringType(), False, "MLflow run id of the filter run that computed the signals"),
        _field("processed_at", TimestampType(), False, "start of that run, UTC"),
    ]
)

SILVER_DEDUP = StructType(
    [
        _field("doc_id", StringType(), False, "silver doc_id of a document the filter kept"),
        _field("cluster_id", StringType(), False, "smallest doc_id of its near-duplicate cluster (itself if alone)"),
        _field("cluster_size", LongType(), False, "documents in the cluster"),
        _field("keep", BooleanType(), False, "the one document kept per cluster"),
    ]
)

SILVER_DEDUP_SIGNATURES = StructType(
    [
        _field("doc_id", StringType(), False, "silver doc_id, one row per row of silver.dedup"),
        _field("signature", ArrayType(LongType()), False, "MinHash values (32-bit, stored as long)"),
        _field("band_keys", ArrayType(LongType()), False, "64-bit LSH key of each band; empty without shingles"),
        _field("n_shingles", LongType(), False, "shingle positions of the document"),
        _field("short", BooleanType(), False, "fewer tokens than one shingle: its whole text is its one shingle"),
        _field("shingle_hashes", ArrayType(IntegerType()), False, "distinct 32-bit shingle hashes (verify: exact)"),
        _field("params", StringType(), False, "the settings the row was computed with; incremental runs need equal"),
    ]
)

GOLD_TOKENS = StructType(
    [
        _field("doc_id", StringType(), False, "silver doc_id of a document kept by the filter and by dedup"),
        _field("source", StringType(), False, "configured source name"),
        _field("kind", StringType(), False, "text or code"),
        _field("lang", StringType(), True, "prose: lid.176 label; code: its language"),
        _field("tokens", ArrayType(IntegerType()), False, "cl100k_base ids (encode_ordinary: specials stay text)"),
        _field("n_tokens", LongType(), False, "length of tokens"),
        _field("n_bytes", LongType(), False, "UTF-8 bytes of the text that was encoded"),
    ]
)

GOLD_TOKEN_STATS = StructType(
    [
        _field("source", StringType(), False, "configured source name"),
        _field("kind", StringType(), False, "text or code"),
        _field("lang", StringType(), True, "language"),
        _field("documents", LongType(), False, "documents in gold.tokens"),
        _field("tokens", LongType(), False, "their tokens"),
        _field("bytes", LongType(), False, "their UTF-8 bytes"),
        _field("bytes_per_token", DoubleType(), True, "bytes / tokens: how well cl100k compresses this slice"),
    ]
)
