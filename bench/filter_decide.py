"""The filter's decisions after an increment: the changed content groups only, against every row of silver.

    source scripts/env.sh && python bench/filter_decide.py [--rows 300000 3000000] [--new 3000] [--cores 2]

For each size, a synthetic `silver.documents` (the columns decisions read: random signals around the default rules'
thresholds, a tenth of the documents exact copies of another, stored decisions derived from them) and a batch of new
rows (a third of them further copies of those pairs, some with a smaller doc_id than the copy kept so far, so that
rows already in silver change their decision) are written to a fresh lakehouse, and as many rows as a third of the
batch are removed from pairs (where the one removed was the copy kept, the other is kept now). Then the rows a
filter run would write are derived twice, as the stage does (`pipelines/filter/stage.py`'s `verdicts`): from the
content groups the run changed (`touched_groups`), and from every row. Both must give the same rows; the time of each
is the best of two. The last line is machine-readable: `x_vs_every_row` at each size is how many times faster the
first is.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

DECISIONS = ("duplicate_of", "keep", "drop_reasons")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def measure(spark, root: str, rows: int, new: int) -> dict:
    from pyspark.sql import functions as F

    from pipelines.filter import stage
    from pipelines.filter.decide import with_decisions, with_exact_duplicates
    from pipelines.filter.settings import FilterConfig
    from pipelines.filter.tasks import COMPUTED_COLUMNS
    from pipelines.lakehouse import Lakehouse
    from pipelines.settings import LakehouseConfig
    from pipelines.tables import SILVER_DOCUMENTS

    settings = FilterConfig()
    lakehouse = Lakehouse(spark, LakehouseConfig(root=os.path.join(root, f"lakehouse_{rows}")))
    silver, batch = lakehouse.table(SILVER_DOCUMENTS), lakehouse.staging("new_rows")
    silver.create_if_missing()
    unique = int(rows * 0.9)  # of the content hashes: a tenth of the rows repeat one

    def documents(ids, content):
        """Silver rows with the computed columns decisions read; the others empty or constant."""
        signals = F.create_map(
            *[part for rule in settings.rules if rule.enabled for part in (F.lit(rule.signal), _around(rule))]
        )
        return ids.select(
            F.sha2(F.col("id").cast("string"), 256).substr(1, 32).alias("doc_id"),
            F.lit("web").alias("source"),
            F.lit("text").alias("kind"),
            F.col("id").cast("string").alias("locator"),
            F.lit("").alias("text"),
            F.lit(1000).cast("long").alias("n_chars"),
            F.sha2(content.cast("string"), 256).substr(1, 32).alias("content_hash"),
            F.lit("en").alias("language"),
            F.lit(0.9).alias("language_score"),
            signals.alias("signals"),
            F.create_map().cast("map<string,bigint>").alias("pii_counts"),
            F.lit(None).cast("string").alias("signal_error"),
            F.create_map().cast("map<string,int>").alias("signal_versions"),
        )

    def as_silver(frame):
        """Unscored rows of a bench run, decided when `frame` holds the decision columns."""
        missing = [c for c in ("quality_score", "quality_model", *DECISIONS) if c not in frame.columns]
        stamp = [F.lit("bench").alias("run_id"), F.current_timestamp().alias("processed_at")]
        return SILVER_DOCUMENTS.conform(frame.select("*", *[F.lit(None).alias(c) for c in missing], *stamp))

    started = time.perf_counter()
    existing = documents(spark.range(rows, numPartitions=16), F.col("id") % unique)
    decided = with_decisions(with_exact_duplicates(existing), settings)
    silver.overwrite(as_silver(decided))
    # Contents [0, rows - unique) are held by two rows each. A third of the new rows repeat one of those; the rows of
    # ids [0, new / 3) leave silver, one from each of as many pairs.
    pairs = rows - unique
    fresh = spark.range(rows, rows + new, numPartitions=4)
    content = F.when(F.col("id") % 3 == 0, (F.col("id") * 7) % pairs).otherwise(F.col("id"))
    batch.overwrite(documents(fresh, content).select(*COMPUTED_COLUMNS))
    removed = documents(spark.range(new // 3), F.col("id")).select("doc_id").localCheckpoint()
    silver.merge(removed, "t.doc_id = s.doc_id").when_matched_delete().execute()
    built = time.perf_counter() - started
    incoming = as_silver(batch.read())

    def run(groups: bool) -> tuple[float, int, int]:
        started = time.perf_counter()
        hashes = stage.touched_groups(silver, batch.read(), removed)[0] if groups else None
        written = stage.verdicts(silver, incoming, settings, hashes)
        row_hash = F.pmod(F.xxhash64(*written.columns), F.lit(2**31 - 1))  # summed: order-free, no overflow
        digest = written.select(F.sum(row_hash).alias("d"), F.count("*").alias("n")).first()
        return time.perf_counter() - started, digest["n"], digest["d"]

    figures, outcomes = {}, {}
    for label, groups in (("groups", True), ("every_row", False)):
        first, second = run(groups), run(groups)
        figures[label] = min(first[0], second[0])
        outcomes[label] = second[1:]
    assert outcomes["groups"] == outcomes["every_row"], outcomes  # the same rows, decided the same way
    figures["rows_written"] = outcomes["groups"][0]
    joined = silver.read().join(batch.read().select("content_hash"), "content_hash", "left_semi").count()
    print(f"  {rows:,} rows (built in {built:.0f} s), {new:,} new, {new // 3:,} removed: {figures['rows_written']:,} "
          f"rows written ({joined:,} of silver's share a new row's content); changed groups "
          f"{figures['groups']:.1f} s, every row {figures['every_row']:.1f} s",
          file=sys.stderr, flush=True)  # fmt: skip
    return figures


def _around(rule):
    """A signal value in [0.5 x, 1.5 x] of the rule's bound (most documents pass, some do not), from the row id."""
    from pyspark.sql import functions as F

    bound = rule.min if rule.min is not None else rule.max
    spread = F.abs(F.xxhash64(F.col("id"), F.lit(rule.signal))) % 1000 / F.lit(1000.0)
    return (F.lit(float(bound)) * (F.lit(0.5) + spread)).cast("double")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[300_000, 3_000_000])
    parser.add_argument("--new", type=int, default=3000)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    from pipelines.settings import SparkConfig
    from pipelines.spark import get_spark

    spark = get_spark(SparkConfig(master=f"local[{args.cores}]", driver_memory="6g", shuffle_partitions=4 * args.cores))
    results = {}
    with tempfile.TemporaryDirectory(prefix="filter_decide_") as root:
        for rows in args.rows:
            results[rows] = measure(spark, root, rows, args.new)
    print(f"{'silver rows':>12} {'groups s':>9} {'every row s':>12} {'x':>6}")
    for rows, figures in results.items():
        print(f"{rows:>12,} {figures['groups']:>9.1f} {figures['every_row']:>12.1f} "
              f"{figures['every_row'] / figures['groups']:>6.1f}")  # fmt: skip
    parts = []
    for rows, figures in results.items():
        label = f"{rows // 1_000_000}m" if rows >= 1_000_000 else f"{rows // 1000}k"
        parts.append(f"groups_s_{label}={figures['groups']:.2f} every_row_s_{label}={figures['every_row']:.2f} "
                     f"x_vs_every_row_{label}={figures['every_row'] / figures['groups']:.1f}")  # fmt: skip
    print(f"RESULT {' '.join(parts)} new_rows={args.new} cores={args.cores}")


if __name__ == "__main__":
    main()
