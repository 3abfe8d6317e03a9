"""What a Spark task of the dedup stage runs: shingle, sign and band a batch of documents (no MLflow, no Delta)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from pipelines.dedup.lsh import band_keys
from pipelines.dedup.minhash import MinHasher, Shingling

SIGNATURE_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("signature", pa.list_(pa.int64())),
        ("band_keys", pa.list_(pa.int64())),
        ("n_shingles", pa.int64()),
        ("short", pa.bool_()),
        ("shingle_hashes", pa.list_(pa.int64())),
    ]
)


def signature_partition(
    batches: Iterator[pa.RecordBatch],
    shingling: Shingling,
    hasher: MinHasher,
    bands: int,
    rows: int,
    keep_shingle_hashes: bool = False,
) -> Iterator[pa.RecordBatch]:
    """mapInArrow function over (doc_id, text): signatures and their band keys, and (for exact verification) the
    sorted 32-bit hashes of each document's shingles.

    A document without any word has no shingle and an empty band list: it can match nothing, and stays a cluster of
    its own (it is never dropped silently).
    """
    for batch in batches:
        texts = batch.column("text").to_pylist()
        shingled = [shingling.shingles(text) for text in texts]
        signatures = hasher.signatures([shingles for shingles, _ in shingled])
        keys = band_keys(signatures, bands, rows)
        has_shingles = [bool(shingles) for shingles, _ in shingled]
        yield pa.RecordBatch.from_pydict(
            {
                "doc_id": batch.column("doc_id").to_pylist(),
                "signature": signatures.astype("int64").tolist(),
                "band_keys": [k.tolist() if present else [] for k, present in zip(keys, has_shingles, strict=True)],
                "n_shingles": [len(shingles) for shingles, _ in shingled],
                "short": [short for _, short in shingled],
                "shingle_hashes": [
                    sorted(set(hasher.shingle_hashes(shingles).tolist())) if keep_shingle_hashes else []
                    for shingles, _ in shingled
                ],
            },
            schema=SIGNATURE_SCHEMA,
        )
