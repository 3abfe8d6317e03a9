"""The shard layout computed in Spark tasks (pipelines/mds/layout.py) equals MDSWriter's sequential size rule
(format.group_into_shards), sample by sample, at any chunking."""

import itertools

import numpy as np
import pytest
from pyspark.sql import functions as F

from pipelines.mds import format as mds
from pipelines.mds.layout import document_shards, fixed_size_shard_counts, plan_layout
from pipelines.mds.mixes import Mix, Stage

HEADER = 8 + len(mds.ShardSettings().config_bytes())


def with_room(room: int | None) -> mds.ShardSettings:
    """Shard settings leaving `room` bytes for samples (None: no size limit)."""
    return mds.ShardSettings(size_limit=None if room is None else HEADER + room)


def rule(takes, settings) -> list[int]:
    return list(mds.group_into_shards([mds.record_size(int(t)) for t in takes], settings))


def shard_per_sample(counts: list[int]) -> list[int]:
    return np.repeat(np.arange(len(counts)), counts).tolist()


@pytest.mark.parametrize("room", [None, 10, 60, 424, 1_000, 4_000, 100_000])
def test_fixed_size_counts_follow_the_rule(room):
    settings = with_room(room)
    for full, seq_len, last in itertools.product([0, 1, 2, 7, 64], [1, 8, 100], [None, 1, 5, 100]):
        takes = [seq_len] * full + ([last] if last is not None else [])
        assert fixed_size_shard_counts(full, seq_len, last, settings) == rule(takes, settings), (full, seq_len, last)


@pytest.mark.parametrize("room", [None, 30, 2_000])
@pytest.mark.parametrize("remainder", ["drop", "pad", "keep"])
def test_fixed_size_shard_of_every_sample_is_the_rules(spark, room, remainder):
    mix = Mix("t", "int32", "concat", remainder, with_room(room), ())
    stage = Stage("s", tokens=0, seq_len=100, seed=0, components=())
    for total in [900, 4_130]:
        ordered = spark.createDataFrame([(0, total)], "position long, take long")
        layout = plan_layout(mix, stage, ordered)
        full, rest = divmod(total, 100)
        takes = [100] * full + ([100 if remainder == "pad" else rest] if rest and remainder != "drop" else [])
        assert layout.shard_counts == rule(takes, mix.shards), total
        numbered = spark.range(layout.samples).select(F.col("id").alias("sample"))
        shards = [row[0] for row in numbered.select(layout.shard_of).orderBy(F.col("sample")).collect()]
        assert shards == shard_per_sample(layout.shard_counts), total


def stream(spark, takes):
    rows = [(f"d{i:06}", int(take), i) for i, take in enumerate(takes)]
    return spark.createDataFrame(rows, "doc_id string, take long, position long")


@pytest.mark.parametrize(
    "name, takes, room",
    [
        ("varied", np.random.default_rng(1).integers(1, 400, 3_000), 5_000),
        ("equal sizes never resynchronise", np.full(2_000, 37), 1_000),
        ("heavy tail", np.random.default_rng(2).pareto(1.2, 2_000).astype(np.int64) * 40 + 1, 6_000),
        ("every sample overfills a shard", np.random.default_rng(3).integers(300, 400, 200), 1_000),
        ("one shard", np.random.default_rng(4).integers(1, 50, 500), None),
    ],
)
def test_document_packing_shards_are_the_rules_at_any_chunking(spark, name, takes, room):
    settings = with_room(room)
    expected = shard_per_sample(rule(takes, settings))
    ordered = stream(spark, takes)
    for chunks in (1, 7, 200):
        numbered = document_shards(ordered, settings, len(takes), chunks=chunks)
        got = [row["shard"] for row in numbered.orderBy("position").collect()]
        assert got == expected, (name, chunks)


def test_document_layout_counts_include_the_empty_first_shard(spark):
    takes = [500, 3, 4, 500, 2]  # the first sample overfills an empty shard: MDSWriter leaves shard 0 empty
    mix = Mix("t", "int32", "document", "drop", with_room(1_000), ())
    layout = plan_layout(mix, None, stream(spark, takes))
    assert layout.shard_counts == rule(takes, mix.shards) == [0, 1, 2, 1, 1]
    assert (layout.samples, layout.tokens_written) == (5, sum(takes))
