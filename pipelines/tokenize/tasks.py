"""What a Spark task of the tokenize stage runs: encode a batch of documents (no MLflow, no Delta)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.arrow import list_array
from pipelines.tables import GOLD_TOKENS
from pipelines.tokenize.tokenizer import encode_document, encoding

TOKENS_SCHEMA = GOLD_TOKENS.arrow_schema()


def tokenize_partition(batches: Iterator[pa.RecordBatch], chunk_chars: int) -> Iterator[pa.RecordBatch]:
    """mapInArrow function over (doc_id, source, kind, lang, text) -> rows of gold.tokens."""
    for batch in batches:
        encoded = encode_texts(batch.column("text").to_pylist(), chunk_chars)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        flat = np.concatenate(encoded) if encoded else np.zeros(0, dtype=np.int32)
        yield pa.RecordBatch.from_arrays(
            [
                batch.column("doc_id"),
                batch.column("source"),
                batch.column("kind"),
                batch.column("lang"),
                list_array(flat, lengths),
                pa.array(lengths),
                pc.binary_length(batch.column("text")).cast(pa.int64()),
            ],
            schema=TOKENS_SCHEMA,
        )


def encode_texts(texts: list[str], chunk_chars: int) -> list[np.ndarray]:
    """encode_ordinary of every text as int32 arrays: tiktoken's numpy encoder with no special token allowed (the
    same tokens as encode_ordinary, without building a Python list per document), the very long texts in pieces."""
    encoding_ = encoding()
    return [
        encoding_.encode_to_numpy(text, disallowed_special=()).view(np.int32)
        if len(text) <= chunk_chars
        else np.array(encode_document(text, chunk_chars), dtype=np.int32)
        for text in texts
    ]
