"""JSONL ingest throughput: our Spark stage against a plain pyarrow read + Parquet write of the same files.

    bash scripts/env.sh-activated python bench/ingest.py [--mb 200] [--files 8]

The corpus is real prose (Python's pydoc topics and module docstrings) cut into documents of 0.5-8 kB and written as
JSONL. Both sides read the same files on the same cores; the ratio is ours / pyarrow's, per core. pyarrow does less
work (no ids, no validation, no quarantine, no MERGE, no MLflow), so it is the ceiling a user would compare against.
The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import shutil
import tempfile
import time
from pydoc_data.topics import topics

import orjson
import pyarrow.json as pajson
import pyarrow.parquet as pq

from dataprep.config import PipelineConfig, parse_config
from dataprep.runner import run_stage
from pipelines import spark_compat
from pipelines.settings import SparkConfig
from pipelines.spark import get_spark


def write_corpus(directory: str, total_mb: int, files: int, seed: int = 7) -> tuple[int, int]:
    """Writes `files` JSONL files holding about total_mb MB; returns (bytes, documents)."""
    prose = "\n\n".join(text for _, text in sorted(topics.items()))
    rng = random.Random(seed)
    per_file = total_mb * 1_000_000 // files
    total_bytes = documents = 0
    for index in range(files):
        with open(os.path.join(directory, f"part-{index:05d}.jsonl"), "wb") as handle:
            written = 0
            while written < per_file:
                start = rng.randrange(0, len(prose) - 8000)
                record = {"text": prose[start : start + rng.randint(500, 8000)], "url": f"https://example/{documents}"}
                line = orjson.dumps(record) + b"\n"
                handle.write(line)
                written += len(line)
                documents += 1
        total_bytes += written
    return total_bytes, documents


def time_ours(corpus: str, work: str, cores: int) -> tuple[float, str]:
    """Seconds for one ingest into a fresh lakehouse, after an untimed warm-up run that pays the JVM's start-up."""
    spark = get_spark(SparkConfig(master=f"local[{cores}]", driver_memory="4g", shuffle_partitions=2 * cores))
    spark_compat.quiet(spark)
    warm_up = os.path.join(work, "warm-up")
    os.makedirs(warm_up)
    write_corpus(warm_up, total_mb=5, files=2, seed=1)
    run_stage("ingest", spark, _config(warm_up, os.path.join(work, "lakehouse-warm-up")))
    started = time.perf_counter()
    summary = run_stage("ingest", spark, _config(corpus, os.path.join(work, "lakehouse")))
    elapsed = time.perf_counter() - started
    assert summary.reconciles and summary.sources["bench"].quarantined == 0, summary.format()
    return elapsed, summary.format().splitlines()[0]


def _config(corpus: str, lakehouse: str) -> PipelineConfig:
    return parse_config(
        {
            "lakehouse": {"root": lakehouse},
            "sources": [{"name": "bench", "format": "jsonl", "paths": [f"{corpus}/*.jsonl"]}],
            "ingest": {"split_bytes": 32 * 1024 * 1024},
        }
    )


def time_pyarrow(corpus: str, work: str) -> float:
    out = os.path.join(work, "pyarrow")
    os.makedirs(out)
    started = time.perf_counter()
    for path in sorted(glob.glob(f"{corpus}/*.jsonl")):
        table = pajson.read_json(path, read_options=pajson.ReadOptions(block_size=16 << 20))
        pq.write_table(table, os.path.join(out, os.path.basename(path) + ".parquet"))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="corpus size in MB")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-ingest-")
    try:
        corpus = os.path.join(work, "corpus")
        os.makedirs(corpus)
        size, documents = write_corpus(corpus, args.mb, args.files)
        print(f"corpus: {size / 1e6:.1f} MB, {documents} documents, {args.files} files, {args.cores} cores")
        baseline = time_pyarrow(corpus, work)
        ours, steps = time_ours(corpus, work, args.cores)
        print(steps)
        ours_mb_s = size / 1e6 / ours / args.cores
        baseline_mb_s = size / 1e6 / baseline / args.cores
        print(f"ours (Spark ingest -> Delta MERGE): {ours:.1f} s, {ours_mb_s:.2f} MB/s per core")
        print(f"pyarrow read_json + write_table:    {baseline:.1f} s, {baseline_mb_s:.2f} MB/s per core")
        print(
            f"RESULT mb_s_per_core={ours_mb_s:.2f} docs_s_per_core={documents / ours / args.cores:.0f} "
            f"pyarrow_mb_s_per_core={baseline_mb_s:.2f} x_vs_pyarrow={ours_mb_s / baseline_mb_s:.3f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
