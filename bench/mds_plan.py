"""MDS planning at scale: the driver's memory does not grow with the number of documents.

    source scripts/env.sh && python bench/mds_plan.py [--documents 10000000 100000000] [--cores 2]

For each size, a fresh process plans one curriculum stage over synthetic gold.tokens rows (the columns the stage
reads; token counts drawn from a heavy-tailed distribution like real documents'): the occurrences with exact token
accounting (a partial epoch of each component), the stream's order and offsets, the samples and their shards by
MDSWriter's size rule, and every occurrence's (sample, shard) spans, counted in Spark, no tokens written. It does this
for `packing: concat` (fixed-size samples, arithmetic) and `packing: document` (one sample per occurrence, the
chunked segmentation). It reports the driver process's peak resident memory (the Python driver, which held one
entry per sample before) and the planning time per million documents. In local mode the JVM holds both the driver
and the executors, so its memory is no driver figure; it is printed for information. The last line is
machine-readable: `driver_growth` is the driver's peak at the largest size over the peak at the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def plan(documents: int, cores: int) -> dict:
    """One process, one size: plans the stage under both packings, returns the figures."""
    from pyspark.sql import functions as F

    from pipelines.mds.format import ShardSettings
    from pipelines.mds.layout import occurrence_spans, plan_layout
    from pipelines.mds.mixes import Component, Mix, Stage
    from pipelines.mds.sampling import occurrences, stream_offsets
    from pipelines.settings import SparkConfig
    from pipelines.spark import get_spark

    spark = get_spark(SparkConfig(master=f"local[{cores}]", driver_memory="3g", shuffle_partitions=4 * cores))
    seed = F.xxhash64(F.col("id"), F.lit(7))
    # Heavy-tailed token counts (Pareto-like, 30 to ~60,000 tokens, mean ~500), a quarter of the documents code.
    n_tokens = (F.lit(30) / F.pow((F.abs(seed) % 1_000_000 + 1) / F.lit(1_000_000.0), F.lit(0.9))).cast("long")
    frame = (
        spark.range(documents, numPartitions=4 * cores)
        .select(
            F.format_string("%032x", F.col("id")).alias("doc_id"),
            F.when(F.col("id") % 4 == 0, "code").otherwise("web").alias("source"),
            F.when(F.col("id") % 4 == 0, "code").otherwise("text").alias("kind"),
            F.lit("en").alias("lang"),
            F.least(n_tokens, F.lit(60_000)).alias("n_tokens"),
        )
        .localCheckpoint()
    )
    available = frame.agg(F.sum(F.col("n_tokens") + 1)).first()[0]
    budget = int(available * 0.9)  # web takes 3/4 of it (a partial epoch), code 1/4 (past one epoch: upsampled)
    components = (
        Component("web", "source = 'web'", 3.0, 1.0),
        Component("code", "kind = 'code'", 1.0, 2.0),
    )
    stage = Stage("broad", budget, 2048, 17, components)
    figures = {}
    for packing in ("concat", "document"):
        mix = Mix("bench", "int32", packing, "drop", ShardSettings("int32", "zstd", ("sha1",), 1 << 26), (stage,))
        started = time.perf_counter()
        picked, _ = occurrences(stage, frame)
        ordered = stream_offsets(picked).localCheckpoint()
        layout = plan_layout(mix, stage, ordered)
        spans = occurrence_spans(mix, stage, ordered, layout)
        counted = spans.agg(F.count(F.lit(1)).alias("spans"), F.sum(F.col("end") - F.col("begin"))).first()
        seconds = time.perf_counter() - started
        assert counted[1] == layout.tokens_written, (counted, layout.tokens_written)  # every token placed once
        figures[packing] = {"seconds": seconds, "samples": layout.samples, "shards": len(layout.shard_counts)}
        print(f"  {documents:,} documents, packing {packing}: {layout.samples:,} samples in "
              f"{len(layout.shard_counts):,} shards, {counted[0]:,} spans, {seconds:.0f} s",
              file=sys.stderr)  # fmt: skip
    figures["driver_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["jvm_mb"] = _children_peak_mb()
    spark.stop()
    return figures


def _children_peak_mb() -> float:
    """Peak resident memory of this process's children (the JVM Spark started), from /proc."""
    peak = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            if parent == os.getpid():
                with open(f"/proc/{pid}/status") as status:
                    line = next(line for line in status if line.startswith("VmHWM:"))
                peak = max(peak, int(line.split()[1]) / 1024)
        except (OSError, StopIteration, ValueError, IndexError):
            continue  # a process that ended meanwhile
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, nargs="+", default=[10_000_000, 100_000_000])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: one size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(plan(args.one, args.cores)))
        return
    results = {}
    for documents in args.documents:
        command = [sys.executable, os.path.abspath(__file__), "--one", str(documents), "--cores", str(args.cores)]
        child = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
        results[documents] = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"{'documents':>12} {'driver MB':>10} {'JVM MB':>8} {'concat s':>9} {'document s':>11} {'samples':>14}")
    for documents, figures in results.items():
        print(f"{documents:>12,} {figures['driver_mb']:>10.0f} {figures['jvm_mb']:>8.0f} "
              f"{figures['concat']['seconds']:>9.0f} {figures['document']['seconds']:>11.0f} "
              f"{figures['concat']['samples']:>14,}")  # fmt: skip
    smallest, largest = min(results), max(results)
    seconds = sum(f["concat"]["seconds"] + f["document"]["seconds"] for f in results.values())
    per_million = seconds / (sum(results) / 1e6)  # wall seconds per million documents on these cores, both packings
    figures = " ".join(f"driver_mb_{_label(n)}={results[n]['driver_mb']:.0f}" for n in results)
    growth = results[largest]["driver_mb"] / results[smallest]["driver_mb"]
    print(f"RESULT {figures} driver_growth={growth:.2f} s_per_m_docs={per_million:.1f} "
          f"core_s_per_m_docs={per_million * args.cores:.1f} cores={args.cores}")  # fmt: skip


def _label(documents: int) -> str:
    return f"{documents // 1_000_000}m" if documents >= 1_000_000 else f"{documents // 1000}k"


if __name__ == "__main__":
    main()
