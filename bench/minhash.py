"""MinHash throughput: our vectorised signatures against datasketch and datatrove on the same documents, in one
run, and the end-to-end Spark dedup stage.

    source scripts/env.sh && python bench/minhash.py [--docs 3000]

- x_vs_datasketch: signatures from the same shingles (word 5-grams), 128 permutations, affine32 scheme; datasketch
  `MinHash.update_batch` once per document, ours one batch of documents at a time. Signatures are checked equal.
- x_vs_datatrove: text to signatures, one core: our shingling + signatures against datatrove's
  `MinhashDedupSignature` (its own spaCy word splitting, 16 x 8 = 128 hashes, signature files written and sorted).
- e2e: the whole dedup stage (signatures, bands, star edges, verification, components, keep rule, Delta write) on
  local Spark with every core, after a warm-up run.
The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from datasketch import MinHash
from filters import corpus

from peer_env import run_peer_script
from pipelines.config import SparkConfig, parse_config
from pipelines.dedup.minhash import MinHasher, Shingling
from pipelines.dedup.stage import run_dedup
from pipelines.lakehouse import Lakehouse
from pipelines.spark import get_spark

BATCH = 512


def ours(texts: list[str]) -> tuple[float, float, np.ndarray]:
    """(seconds for shingling, seconds for signatures, signatures)."""
    shingling, hasher = Shingling(), MinHasher(num_perm=128, seed=1)
    started = time.perf_counter()
    shingles = [shingling.shingles(text)[0] for text in texts]
    shingled = time.perf_counter()
    signatures = np.concatenate([hasher.signatures(shingles[i : i + BATCH]) for i in range(0, len(texts), BATCH)])
    return shingled - started, time.perf_counter() - shingled, signatures


def datasketch(texts: list[str]) -> tuple[float, np.ndarray]:
    shingling = Shingling()
    shingles = [shingling.shingles(text)[0] for text in texts]
    started = time.perf_counter()
    rows = []
    for document in shingles:
        minhash = MinHash(num_perm=128, seed=1)
        minhash.update_batch(document)
        rows.append(minhash.hashvalues)
    return time.perf_counter() - started, np.array(rows)


def datatrove(texts: list[str]) -> float:
    return run_peer_script("datatrove", "_datatrove_minhash.py", texts)["seconds"]


def spark_end_to_end(texts: list[str], cores: int) -> float:
    spark = get_spark(SparkConfig(master=f"local[{cores}]", shuffle_partitions=2 * cores))
    spark.sparkContext.setLogLevel("ERROR")
    seconds = 0.0
    with tempfile.TemporaryDirectory() as work:
        for name, batch in (("warm-up", texts[:200]), ("timed", texts)):
            config = parse_config(
                {"lakehouse": {"root": f"{work}/{name}"}, "sources": [{"name": "b", "format": "text", "paths": [work]}]}
            )
            rows = [(f"doc{i:07d}", text, len(text), 0.5, True) for i, text in enumerate(batch)]
            frame = spark.createDataFrame(
                rows, "doc_id string, text string, n_chars long, quality_score double, keep boolean"
            )
            Lakehouse(spark, config.lakehouse).table("silver.documents").overwrite(frame)
            started = time.perf_counter()
            summary = run_dedup(spark, config)
            seconds = time.perf_counter() - started
            assert summary.reconciles, summary.format()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    texts = corpus(args.docs)
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    shingle_seconds, sign_seconds, signatures = ours(texts)
    datasketch_seconds, reference = datasketch(texts)
    assert np.array_equal(signatures.astype(np.uint64), reference.astype(np.uint64)), "signatures differ"
    datatrove_seconds = datatrove(texts)
    e2e_seconds = spark_end_to_end(texts, args.cores)
    ours_text = shingle_seconds + sign_seconds
    sign_rate, datasketch_rate = megabytes / sign_seconds, megabytes / datasketch_seconds
    text_rate, datatrove_rate = megabytes / ours_text, megabytes / datatrove_seconds
    e2e_rate = megabytes / e2e_seconds / args.cores
    print(f"{len(texts)} documents, {megabytes:.1f} MB; signatures equal datasketch's: yes")
    print(f"signatures from shingles: ours {sign_rate:.2f} MB/s, datasketch {datasketch_rate:.2f} MB/s")
    print(f"text to signatures: ours {text_rate:.2f} MB/s, datatrove {datatrove_rate:.2f} MB/s")
    print(f"dedup stage end to end on {args.cores} cores: {e2e_seconds:.1f} s, {e2e_rate:.2f} MB/s per core")
    print(
        f"RESULT signature_mb_s_per_core={sign_rate:.2f} x_vs_datasketch={sign_rate / datasketch_rate:.2f} "
        f"text_to_signature_mb_s_per_core={text_rate:.2f} x_vs_datatrove={text_rate / datatrove_rate:.2f} "
        f"e2e_mb_s_per_core={e2e_rate:.3f}"
    )


if __name__ == "__main__":
    main()
