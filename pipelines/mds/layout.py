"""Samples and shards of a curriculum stage, decided in Spark tasks: nothing per sample reaches the driver.

A stage's token stream (its occurrences in order, pipelines/mds/sampling.py) becomes samples, and consecutive
samples become shards by MDSWriter's size rule (format.group_into_shards): a shard is closed before a sample that
would overfill it. The rule is sequential, since where a shard ends depends on where it began, so it is computed in
one of two ways, both giving exactly the reference's shards:
- fixed-size samples (packing: concat): every sample but perhaps the last has `seq_len` tokens, so every shard but
  the first (empty when one sample overfills a shard) and the last holds the same number of samples; a sample's
  shard is arithmetic on its number (`Layout.shard_of`);
- one sample per occurrence (packing: document): record sizes vary. The samples are cut into chunks of
  consecutive positions; one task per chunk summarises what the rule does in it as a function of the fill of the
  shard open when the chunk starts (that fill decides only where the chunk's first boundary falls; from there on the
  chunk is cut the same way whatever came before). A summary is one row of at most one outcome per sample of one
  shard's worth (hundreds of KB). The driver walks the summaries in chunk order, one partition of them at a time,
  and gives each chunk its entering fill and shard number; a second pass numbers the samples in the tasks
  (`Layout.numbered`). The driver reads O(chunks x samples per shard) bytes and holds one partition's worth.
The driver holds the number of samples per shard: O(shards), which index.json lists anyway.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.mds import format as mds
from pipelines.mds.mixes import Mix, Stage

# Samples per chunk of a document-packed stream at most: a task holds two int64 arrays of this length.
CHUNK_SAMPLES = 1 << 20

_SUMMARY = "chunk long, total long, outcomes binary"
_NUMBERED = "doc_id string, take long, position long, shard long"


@dataclass
class Layout:
    samples: int
    shard_counts: list[int]  # samples per shard
    stream_end: int  # tokens of the stream that go into samples
    tokens_written: int
    remainder_dropped: int
    padding: int
    pad_sample: int | None
    shard_of: Column | None = None  # fixed-size samples: the shard of the sample numbered by column `sample`
    numbered: DataFrame | None = None  # packing: document — (doc_id, take, position, shard), one row per sample


def plan_layout(mix: Mix, stage: Stage, ordered: DataFrame) -> Layout:
    """The samples of the stream `ordered` (occurrences with `position` and `take`) and their shards."""
    if mix.packing == "document":
        return _document_layout(mix, ordered)
    total = int(ordered.agg(F.sum("take")).first()[0] or 0)
    full, rest = divmod(total, stage.seq_len)
    if mix.remainder == "drop" or not rest:
        return _fixed_layout(mix, full, stage.seq_len, None, full * stage.seq_len, full * stage.seq_len, rest, 0, None)
    if mix.remainder == "pad":
        tokens = (full + 1) * stage.seq_len
        return _fixed_layout(mix, full, stage.seq_len, stage.seq_len, total, tokens, 0, stage.seq_len - rest, full)
    return _fixed_layout(mix, full, stage.seq_len, rest, total, total, 0, 0, None)


def occurrence_spans(mix: Mix, stage: Stage, ordered: DataFrame, layout: Layout) -> DataFrame:
    """(doc_id, take, sample, shard, start, begin, end): each occurrence of the stream cut at sample boundaries;
    tokens [begin, end) of the occurrence (its tokens + EOS) start at `start` in the stream."""
    if mix.packing == "document":
        return layout.numbered.select(
            "doc_id", "take", "shard", F.col("position").alias("sample"), F.lit(0).cast("long").alias("start"),
            F.lit(0).cast("long").alias("begin"), F.col("take").alias("end"),
        )  # fmt: skip
    size, end = F.lit(stage.seq_len), F.lit(layout.stream_end)
    stop = F.least(F.col("offset") + F.col("take"), end)
    first, last = F.floor(F.col("offset") / size), F.floor((stop - 1) / size)
    exploded = ordered.where(F.col("offset") < end).select(
        "doc_id", "offset", "take", F.explode(F.sequence(first.cast("long"), last.cast("long"))).alias("sample")
    )
    start = F.greatest(F.col("offset"), F.col("sample") * size)
    finish = F.least(F.col("offset") + F.col("take"), (F.col("sample") + 1) * size, end)
    return exploded.select(
        "doc_id", "take", "sample", layout.shard_of.alias("shard"), start.alias("start"),
        (start - F.col("offset")).alias("begin"), (finish - F.col("offset")).alias("end"),
    )  # fmt: skip


def _fixed_layout(
    mix: Mix,
    full: int,
    seq_len: int,
    last: int | None,
    stream_end: int,
    written: int,
    dropped: int,
    padding: int,
    pad_sample: int | None,
) -> Layout:
    """`full` samples of `seq_len` tokens, then one of `last` tokens when `last` is given."""
    counts = fixed_size_shard_counts(full, seq_len, last, mix.shards)
    samples = full + (last is not None)
    return Layout(samples, counts, stream_end, written, dropped, padding, pad_sample,
                  shard_of=_fixed_shard_of(full, seq_len, counts, mix.shards))  # fmt: skip


def fixed_size_shard_counts(full: int, seq_len: int, last: int | None, settings: mds.ShardSettings) -> list[int]:
    """format.group_into_shards for `full` records of `seq_len` tokens (then one of `last`), in O(shards) steps."""
    capacity = mds.shard_capacity(settings)
    runs = [(mds.record_size(seq_len) + 4, full)] + ([(mds.record_size(last) + 4, 1)] if last is not None else [])
    counts, fill, count = [], 0, 0
    for size, remaining in runs:
        while remaining:
            if capacity is not None and fill + size > capacity:
                counts.append(count)
                fill, count = 0, 0
            fitting = remaining if capacity is None else min(remaining, max(1, (capacity - fill) // size))
            fill, count, remaining = fill + fitting * size, count + fitting, remaining - fitting
    return counts + [count] if count else counts


def _fixed_shard_of(full: int, seq_len: int, counts: list[int], settings: mds.ShardSettings) -> Column:
    """Shard of sample `sample`: the full samples fill shards of `per_shard` after a possible empty first shard;
    the last, shorter sample (if any) is in the last shard."""
    capacity = mds.shard_capacity(settings)
    size = mds.record_size(seq_len) + 4
    per_shard = max(1, full if capacity is None else capacity // size)
    first = 1 if counts and counts[0] == 0 else 0
    within_full = F.lit(first) + F.expr(f"sample div {per_shard}")  # integer division: exact at any size
    return F.when(F.col("sample") < full, within_full).otherwise(len(counts) - 1).cast("long")


def _document_layout(mix: Mix, ordered: DataFrame) -> Layout:
    totals = ordered.agg(F.count(F.lit(1)).alias("samples"), F.sum("take").alias("tokens")).first()
    samples, tokens = int(totals["samples"]), int(totals["tokens"] or 0)
    shards = document_shards(ordered, mix.shards, samples)
    counts_by_shard = dict(shards.groupBy("shard").count().collect())
    counts = [int(counts_by_shard.get(shard, 0)) for shard in range(max(counts_by_shard, default=-1) + 1)]
    return Layout(samples, counts, tokens, tokens, 0, 0, None, numbered=shards)


def document_shards(
    ordered: DataFrame, settings: mds.ShardSettings, samples: int, chunks: int | None = None
) -> DataFrame:
    """(doc_id, take, position, shard) for the `samples` occurrences of `ordered` (positions 0..samples-1), one
    sample each, shards by MDSWriter's rule. The result does not depend on `chunks` (default: one per shuffle
    partition, more when a chunk would exceed CHUNK_SAMPLES)."""
    partitions = int(ordered.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    chunks = max(1, chunks or max(partitions, math.ceil(samples / CHUNK_SAMPLES)))
    per_chunk = max(1, math.ceil(samples / chunks))
    rows = ordered.select("doc_id", "take", "position", F.expr(f"position div {per_chunk}").alias("chunk"))
    capacity = mds.shard_capacity(settings)
    if capacity is None:  # one shard holds everything
        return rows.select("doc_id", "take", "position", F.lit(0).cast("long").alias("shard"))
    rows = rows.localCheckpoint()  # read twice: summarised, then numbered
    summaries = rows.groupBy("chunk").applyInArrow(functools.partial(_summarise, capacity=capacity), _SUMMARY)
    # One row per chunk, visited in order with one partition on the driver at a time.
    entries = _walk(summaries.orderBy("chunk").toLocalIterator(), capacity)
    task = functools.partial(_number, capacity=capacity, entries=entries)
    return rows.groupBy("chunk").applyInArrow(task, _NUMBERED)


@dataclass
class _Chunk:
    """One chunk's samples in stream order, with what a fresh shard starting at each of them leads to."""

    takes: np.ndarray
    bounds: np.ndarray  # bounds[i] = bytes of samples 0..i-1 (record + offset each); bounds[-1] = the chunk's
    following: np.ndarray  # the first sample after i that a shard starting at i cannot hold (len: none in chunk)

    @classmethod
    def of(cls, table: pa.Table, capacity: int) -> _Chunk:
        table = table.sort_by("position")
        takes = table.column("take").to_numpy()
        bounds = np.concatenate([[0], np.cumsum(mds.record_sizes(takes) + 4)])
        count = len(takes)
        # A shard starting at i holds i..m-1, where m is the first sample with bounds[m + 1] - bounds[i] > capacity
        # (always at least i itself).
        overfull = np.searchsorted(bounds, bounds[:-1] + capacity, side="right") - 1
        return cls(takes, bounds, np.maximum(overfull, np.arange(count) + 1))

    def first_boundary(self, fill: int, capacity: int) -> int:
        """Where the shard open at the chunk's start (with `fill` bytes) is closed: before this sample (len: not
        in this chunk)."""
        return int(min(len(self.takes), max(0, np.searchsorted(self.bounds, capacity - fill, side="right") - 1)))

    def boundaries_from(self, start: int) -> list[int]:
        """The boundaries a shard starting at `start` leads to in the chunk, `start` first."""
        boundaries = [start]
        while self.following[boundaries[-1]] < len(self.takes):
            boundaries.append(int(self.following[boundaries[-1]]))
        return boundaries


def _summarise(table: pa.Table, capacity: int) -> pa.Table:
    """A chunk's outcomes by entering fill, one row: its total bytes, and groups (low, high] of fill -> the fill
    of the shard open at its end and the number of shards closed in it (int64 arrays low, high, exit_fill, closed,
    as bytes). Fills so small that the chunk closes nothing are left to the driver: it knows `total`. Different
    first boundaries rarely lead to the same end when samples are small next to a shard, so the groups number up
    to the samples of one shard's worth (a few hundred KB per chunk)."""
    chunk = int(table.column("chunk")[0].as_py())
    state = _Chunk.of(table, capacity)
    count, bounds = len(state.takes), state.bounds
    # The last start each sample's chain of shards reaches, and how many boundaries it crosses, by pointer
    # doubling (log2(count) vectorised rounds instead of a walk per sample).
    last_start = np.where(state.following < count, state.following, np.arange(count))
    crossed = (state.following < count).astype(np.int64)
    for _ in range(max(1, int(count).bit_length())):
        crossed = crossed + crossed[last_start]
        last_start = last_start[last_start]
    # Entering with fill f, the first boundary is before the first m with f + bounds[m + 1] > capacity.
    candidates = min(count, state.first_boundary(0, capacity) + 1)
    exit_fill = bounds[-1] - bounds[last_start[:candidates]]
    closed = 1 + crossed[:candidates]
    change = np.flatnonzero((np.diff(exit_fill) != 0) | (np.diff(closed) != 0)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [candidates]])  # groups of first boundaries [start, end) with equal outcomes
    low = capacity - bounds[ends]  # the last boundary m = end - 1 needs f > capacity - bounds[m + 1]
    high = np.where(starts == 0, np.iinfo(np.int64).max, capacity - bounds[starts])  # over capacity: closes at once
    outcomes = np.stack([low, high, exit_fill[starts], closed[starts]]).astype(np.int64)
    return pa.table({"chunk": [chunk], "total": [int(bounds[-1])], "outcomes": [outcomes.tobytes()]})


def _walk(summaries: Iterable, capacity: int) -> dict[int, tuple[int, int]]:
    """Chunk -> (fill of the open shard, its number) where the chunk starts, walking the chunks' summaries in
    chunk order."""
    entries, fill, shard, previous = {}, 0, 0, -1  # the stream starts with shard 0 open and empty
    for summary in summaries:
        chunk = int(summary["chunk"])
        if chunk <= previous:
            raise RuntimeError(f"MDS layout: chunk summaries out of order ({chunk} after {previous})")
        entries[chunk], previous = (fill, shard), chunk
        if fill + int(summary["total"]) <= capacity:  # the open shard takes the whole chunk
            fill += int(summary["total"])
            continue
        low, high, exit_fill, closed = np.frombuffer(summary["outcomes"], dtype=np.int64).reshape(4, -1)
        group = int(np.argmax(low < fill))  # lows fall group by group: the first below the fill
        if not low[group] < fill <= high[group]:
            raise RuntimeError(f"MDS layout: chunk {chunk} has no outcome for an entering fill of {fill} bytes")
        fill, shard = int(exit_fill[group]), shard + int(closed[group])
    return entries


def _number(table: pa.Table, capacity: int, entries: dict[int, tuple[int, int]]) -> pa.Table:
    """The chunk's samples with their shard, from the fill and number of the shard open where it starts."""
    fill, shard = entries[int(table.column("chunk")[0].as_py())]
    table = table.sort_by("position")
    state = _Chunk.of(table, capacity)
    first = state.first_boundary(fill, capacity)
    boundaries = state.boundaries_from(first) if first < len(state.takes) else []
    shards = shard + np.searchsorted(np.array(boundaries, dtype=np.int64), np.arange(len(state.takes)), "right")
    return pa.table({
        "doc_id": table.column("doc_id"), "take": table.column("take"), "position": table.column("position"),
        "shard": shards.astype(np.int64),
    })  # fmt: skip
