"""Running totals over a total order, computed by every task at once.

A running total written as one window ordered over the whole table (no partition key) makes Spark move the whole
table into one task (it warns "No Partition Defined for Window operation!"): a stage of billions of rows would not
fit. A distributed prefix sum does the same work in three passes, the driver holding one row per partition:
1. range-partition the rows by the order and sort each partition (partition i holds only keys below those of i+1);
2. total each partition (O(partitions) rows collected);
3. in each partition, a window over that partition only, plus the totals of the partitions before it.

The order must be total (its columns unique per row); then the result does not depend on where the range
boundaries fall, so it is the same at any partition count.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

_PART = "_prefix_sum_partition"


def with_running_totals(
    frame: DataFrame, order: list[str | Column], value: str, before: str, position: str
) -> DataFrame:
    """`frame` with `before` = the sum of `value` over the rows preceding each row in `order` (0 for the first)
    and `position` = how many rows precede it."""
    spark = frame.sparkSession
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    # Materialised, so that the partition each row is in is the same when it is totalled and when it is numbered.
    ranged = frame.repartitionByRange(partitions, *order).withColumn(_PART, F.spark_partition_id()).localCheckpoint()
    totals = ranged.groupBy(_PART).agg(F.sum(value).alias("total"), F.count(F.lit(1)).alias("rows")).collect()
    offsets, running_sum, running_rows = [], 0, 0
    for row in sorted(totals, key=lambda row: row[_PART]):
        offsets.append((row[_PART], running_sum, running_rows))
        running_sum += int(row["total"] or 0)
        running_rows += int(row["rows"])
    starts = spark.createDataFrame(offsets, f"{_PART} int, _sum_before long, _rows_before long")
    within = Window.partitionBy(_PART).orderBy(*order)
    preceding = F.sum(value).over(within.rowsBetween(Window.unboundedPreceding, -1))
    return (
        ranged.join(F.broadcast(starts), _PART)
        .withColumn(before, (F.col("_sum_before") + F.coalesce(preceding, F.lit(0))).cast("long"))
        .withColumn(position, (F.col("_rows_before") + F.row_number().over(within) - 1).cast("long"))
        .drop(_PART, "_sum_before", "_rows_before")
    )
