"""What a Spark task of the dedup stage runs: shingle, sign and band a batch of documents (no MLflow, no Delta)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from pipelines.arrow import list_array
from pipelines.dedup.lsh import band_keys
from pipelines.dedup.minhash import MinHasher, Shingling
from pipelines.tables import SILVER_DEDUP_SIGNATURES

# The columns of silver.dedup_signatures a task computes (all but `params`); shingle hashes are 32-bit values stored
# two's-complement.
SIGNATURE_COLUMNS = ("doc_id", "signature", "band_keys", "n_shingles", "short", "shingle_hashes")
SIGNATURE_SCHEMA = SILVER_DEDUP_SIGNATURES.arrow_schema(SIGNATURE_COLUMNS)


def signature_partition(
    batches: Iterator[pa.RecordBatch],
    shingling: Shingling,
    hasher: MinHasher,
    bands: int,
    rows: int,
    keep_shingle_hashes: bool = False,
) -> Iterator[pa.RecordBatch]:
    """mapInArrow function over (doc_id, text): signatures and their band keys, shingle counts (positions, not
    distinct shingles) and, for exact verification, the sorted distinct 32-bit hashes of each document's shingles.

    A document without any word has no shingle and an empty band list: it can match nothing, and stays a cluster of
    its own (it is never dropped silently).
    """
    for batch in batches:
        shingles = shingling.hash_batch(batch.column("text").to_pylist())
        signatures = hasher.signatures(shingles)
        keys = band_keys(signatures, bands, rows)
        has_shingles = shingles.counts > 0
        if keep_shingle_hashes:
            distinct = [np.unique(hashes) for hashes in shingles.per_document()]
            hash_counts = np.fromiter(map(len, distinct), dtype=np.int64, count=len(distinct))
            hash_values = np.concatenate(distinct) if distinct else np.zeros(0, dtype=np.uint64)
        else:
            hash_counts, hash_values = np.zeros(batch.num_rows, dtype=np.int64), np.zeros(0, dtype=np.uint64)
        yield pa.RecordBatch.from_arrays(
            [
                batch.column("doc_id"),
                list_array(signatures.astype(np.int64).ravel(), np.full(batch.num_rows, hasher.num_perm)),
                list_array(keys[has_shingles].ravel(), np.where(has_shingles, bands, 0)),
                pa.array(shingles.counts, pa.int64()),
                pa.array(shingles.short, pa.bool_()),
                list_array(hash_values.astype(np.uint32).view(np.int32), hash_counts),
            ],
            schema=SIGNATURE_SCHEMA,
        )
