"""What a Spark task of the MDS stage runs: assemble samples from token pieces and write whole shards.

Rows arrive sorted by (shard, sample, start): each row is a piece of one sample (a slice of one document's tokens +
EOS). A shard is assembled in the task's memory (at most the shard size limit) when its last piece has been seen and
stored with one whole-object write, then a sidecar with its index entry is written to the stage's progress
directory. The sidecar is what lets a retried or speculative attempt of the task, and a rerun after a crash, skip
the shard instead of uploading it again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from pipelines import storage
from pipelines.mds.format import ShardSettings, encode_sample, write_shard
from pipelines.storage import Storage

ENTRY_SCHEMA = pa.schema([("shard", pa.int64()), ("entry", pa.string())])


def sidecar_path(progress: str, shard: int) -> str:
    return storage.join(progress, f"shard.{shard:05}.entry.json")


def write_partition(
    batches: Iterator[pa.RecordBatch],
    directory: str,
    progress: str,
    store: Storage,
    settings: ShardSettings,
    expected_samples: dict[int, int],
    pad_sample: int | None,
    pad_length: int,
    pad_id: int,
) -> Iterator[pa.RecordBatch]:
    """mapInArrow over (shard, sample, start, tokens) sorted by the first three -> (shard, index entry JSON).

    `pad_sample` is the one sample (the stage's last, partial one under `remainder: pad`) that is filled up to
    `pad_length` with `pad_id`."""
    dtype = settings.token_dtype
    shard, sample, pieces, records = None, None, [], []

    def close_sample() -> None:
        tokens = np.concatenate(pieces)
        if sample == pad_sample and len(tokens) < pad_length:
            tokens = np.concatenate([tokens, np.full(pad_length - len(tokens), pad_id, dtype=tokens.dtype)])
        records.append(encode_sample(tokens, dtype))

    def close_shard() -> pa.RecordBatch:
        if len(records) != expected_samples[shard]:
            raise RuntimeError(f"shard {shard}: assembled {len(records)} samples, expected {expected_samples[shard]}")
        sidecar = sidecar_path(progress, shard)
        if store.exists(sidecar):  # another attempt of this task stored the shard already
            text = store.read_text(sidecar)
        else:
            text = json.dumps(write_shard(directory, shard, records, settings, store), sort_keys=True)
            store.write_text(sidecar, text)
        return pa.RecordBatch.from_pydict({"shard": [shard], "entry": [text]}, schema=ENTRY_SCHEMA)

    for batch in batches:
        shards = batch.column("shard").to_numpy()
        samples = batch.column("sample").to_numpy()
        column = batch.column("tokens")
        offsets, values = column.offsets.to_numpy(), column.values.to_numpy(zero_copy_only=False)
        for row in range(batch.num_rows):
            row_shard, row_sample = int(shards[row]), int(samples[row])
            if row_sample != sample and pieces:
                close_sample()
                pieces = []
            if row_shard != shard and shard is not None:
                yield close_shard()
                records = []
            shard, sample = row_shard, row_sample
            pieces.append(values[offsets[row] : offsets[row + 1]])
    if pieces:
        close_sample()
    if shard is not None:
        yield close_shard()
