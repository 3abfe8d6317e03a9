"""What a Spark task of the dedup stage runs: shingle, sign and band a batch of documents, or give the distinct
shingle hashes that exact verification compares (no MLflow, no Delta)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from pipelines.arrow import list_array
from pipelines.dedup.lsh import band_keys
from pipelines.dedup.minhash import MinHasher, Shingling
from pipelines.tables import SILVER_DEDUP_SIGNATURES

# The columns of silver.dedup_signatures a task computes (all but `params`).
SIGNATURE_COLUMNS = ("doc_id", "signature", "band_keys", "n_shingles", "short")
SIGNATURE_SCHEMA = SILVER_DEDUP_SIGNATURES.arrow_schema(SIGNATURE_COLUMNS)
# What `shingle_hash_partition` returns: 32-bit hashes stored two's-complement (Spark has no unsigned int).
SHINGLE_HASH_SCHEMA = pa.schema(
    [pa.field("doc_id", pa.string(), False), pa.field("shingle_hashes", pa.list_(pa.int32()), False)]
)


def signature_partition(
    batches: Iterator[pa.RecordBatch],
    shingling: Shingling,
    hasher: MinHasher,
    bands: int,
    rows: int,
) -> Iterator[pa.RecordBatch]:
    """mapInArrow function over (doc_id, text): signatures and their band keys, and shingle counts (positions, not
    distinct shingles).

    A document without any word has no shingle and an empty band list: it can match nothing, and stays a cluster of
    its own (it is never dropped silently).
    """
    for batch in batches:
        shingles = shingling.hash_batch(batch.column("text").to_pylist())
        signatures = hasher.signatures(shingles)
        keys = band_keys(signatures, bands, rows)
        has_shingles = shingles.counts > 0
        yield pa.RecordBatch.from_arrays(
            [
                batch.column("doc_id"),
                list_array(signatures.astype(np.int64).ravel(), np.full(batch.num_rows, hasher.num_perm)),
                list_array(keys[has_shingles].ravel(), np.where(has_shingles, bands, 0)),
                pa.array(shingles.counts, pa.int64()),
                pa.array(shingles.short, pa.bool_()),
            ],
            schema=SIGNATURE_SCHEMA,
        )


def shingle_hash_partition(batches: Iterator[pa.RecordBatch], shingling: Shingling) -> Iterator[pa.RecordBatch]:
    """mapInArrow function over (doc_id, text): the sorted distinct 32-bit hashes of each document's shingles, the
    sets whose exact Jaccard `verify: exact` compares. The stage computes them only for the documents of candidate
    pairs, from their text in silver.documents, rather than storing every document's set in the index."""
    for batch in batches:
        shingles = shingling.hash_batch(batch.column("text").to_pylist())
        distinct = [np.unique(hashes) for hashes in shingles.per_document()]
        counts = np.fromiter(map(len, distinct), dtype=np.int64, count=len(distinct))
        values = np.concatenate(distinct) if distinct else np.zeros(0, dtype=np.uint64)
        yield pa.RecordBatch.from_arrays(
            [batch.column("doc_id"), list_array(values.astype(np.uint32).view(np.int32), counts)],
            schema=SHINGLE_HASH_SCHEMA,
        )
