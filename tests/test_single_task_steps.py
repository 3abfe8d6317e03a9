"""Proof that no step of the pipeline funnels a dataset through one task: the executed plans of the whole demo
(ingest to MDS) hold no exchange to a single partition of more than partial aggregates, no unpartitioned window and
no coalesce to one partition."""

from pyspark.sql import Window
from pyspark.sql import functions as F
from spark_plans import executed_plans, single_task_steps


def test_the_detector_finds_single_task_steps_and_only_those(spark, spark_events):
    frame = spark.range(2_000).withColumn("group", F.col("id") % 7)
    with executed_plans(spark_events) as unbounded:
        frame.withColumn("rank", F.row_number().over(Window.orderBy("id"))).collect()
        frame.repartition(1).collect()
        frame.coalesce(1).collect()
    with executed_plans(spark_events) as bounded:
        frame.withColumn("rank", F.row_number().over(Window.partitionBy("group").orderBy("id"))).collect()
        frame.agg(F.sum("id"), F.countDistinct("group")).collect()
        frame.limit(5).collect()
        frame.orderBy("id").collect()
        frame.orderBy("id").limit(10).coalesce(1).collect()  # bounded by the limit
    found = [single_task_steps(plan) for plan in unbounded]
    assert sum(bool(steps) for steps in found) >= 3, found  # each of the three, in at least its first plan
    assert any("Coalesce 1" in step for steps in found for step in steps)
    assert bounded and not any(single_task_steps(plan) for plan in bounded)


def test_the_demo_pipeline_runs_no_step_in_a_single_task(demo_run):
    assert len(demo_run.plans) > 100, "the demo's executed plans were not read from the event log"
    # The MDS stage assembles each shard (at most its size limit) in one task: with one shard left to write, that
    # is one partition by design.
    mds_shard_writer = "write_partition"
    offending = sorted({step for plan in demo_run.plans for step in single_task_steps(plan, (mds_shard_writer,))})
    assert not offending, offending
