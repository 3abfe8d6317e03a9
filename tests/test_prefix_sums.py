"""The distributed running total (pipelines/prefix_sums.py) equals a sequential one at any partition count, and its
plans hold no window over an unpartitioned (single-task) exchange."""

import random

import pytest

from pipelines.prefix_sums import with_running_totals


@pytest.fixture
def shuffle_partitions(spark):
    before = spark.conf.get("spark.sql.shuffle.partitions")
    yield lambda n: spark.conf.set("spark.sql.shuffle.partitions", str(n))
    spark.conf.set("spark.sql.shuffle.partitions", before)


@pytest.mark.parametrize("partitions", [1, 3, 7])
def test_running_totals_equal_a_sequential_sum_at_any_partition_count(spark, shuffle_partitions, partitions):
    shuffle_partitions(partitions)
    generator = random.Random(partitions)
    # ties in the first order column, broken by the second: the order is total, as the function requires
    rows = [(generator.randrange(50), f"d{i:04d}", generator.randrange(1, 1000)) for i in range(600)]
    frame = spark.createDataFrame(rows, "key int, doc_id string, take long").repartition(5)
    result = with_running_totals(frame, ["key", "doc_id"], "take", before="offset", position="position")
    got = sorted((row.key, row.doc_id, row.offset, row.position) for row in result.collect())
    expected, offset = [], 0
    for position, (key, doc_id, take) in enumerate(sorted(rows)):
        expected.append((key, doc_id, offset, position))
        offset += take
    assert got == expected
    assert "Exchange SinglePartition" not in result._jdf.queryExecution().executedPlan().toString()


def test_an_empty_frame_has_no_totals(spark):
    frame = spark.createDataFrame([], "key int, take long")
    assert with_running_totals(frame, ["key"], "take", before="offset", position="position").count() == 0
