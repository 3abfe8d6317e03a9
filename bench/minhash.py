"""MinHash throughput: our vectorised signatures against datasketch and datatrove on the same documents, in one
run, and the end-to-end Spark dedup stage.

    source scripts/env.sh && python bench/minhash.py [--docs 3000]

- x_vs_datasketch: text to signatures on one core, word 5-grams, 128 permutations, affine32 scheme: ours (default
  `fast` shingle hash, one batch of documents at a time) against datasketch as its users run it (our shingling into
  bytes, then `MinHash.update_batch` once per document, its default SHA-1 hash). Signatures are checked equal to
  datasketch's twice: our `sha1` mode against datasketch's default, our `fast` mode against datasketch given our
  hash as `hashfunc` (on a sample: a Python hashfunc is slow).
- x_vs_datatrove: text to signatures, one core, against datatrove's `MinhashDedupSignature` (its own spaCy word
  splitting, 16 x 8 = 128 hashes, signature files written and sorted).
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

from dataprep.config import parse_config
from dataprep.runner import run_stage
from peer_env import run_peer_script
from pipelines import spark_compat
from pipelines.dedup.minhash import MinHasher, Shingling
from pipelines.lakehouse import Lakehouse
from pipelines.settings import SparkConfig
from pipelines.spark import get_spark

BATCH = 512
SAMPLE = 100


def ours(texts: list[str], shingle_hash: str) -> tuple[float, np.ndarray]:
    shingling, hasher = Shingling(hash=shingle_hash), MinHasher(num_perm=128, seed=1)
    started = time.perf_counter()
    signatures = [hasher.signatures(shingling.hash_batch(texts[i : i + BATCH])) for i in range(0, len(texts), BATCH)]
    return time.perf_counter() - started, np.concatenate(signatures)


def datasketch(texts: list[str], shingling: Shingling) -> tuple[float, np.ndarray]:
    hashfunc = {"hashfunc": shingling.fast_hash} if shingling.hash == "fast" else {}
    started = time.perf_counter()
    rows = []
    for text in texts:
        minhash = MinHash(num_perm=128, seed=1, **hashfunc)
        minhash.update_batch(shingling.shingles(text)[0])
        rows.append(minhash.hashvalues)
    return time.perf_counter() - started, np.array(rows)


def datatrove(texts: list[str]) -> float:
    return run_peer_script("datatrove", "_datatrove_minhash.py", texts)["seconds"]


def spark_end_to_end(texts: list[str], cores: int) -> float:
    spark = get_spark(SparkConfig(master=f"local[{cores}]", shuffle_partitions=2 * cores))
    spark_compat.quiet(spark)
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
            summary = run_stage("dedup", spark, config)
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
    ours_seconds, signatures = ours(texts, "fast")
    sha1_seconds, sha1_signatures = ours(texts, "sha1")
    datasketch_seconds, reference = datasketch(texts, Shingling(hash="sha1"))
    assert np.array_equal(sha1_signatures.astype(np.uint64), reference.astype(np.uint64)), "sha1 signatures differ"
    _, fast_reference = datasketch(texts[:SAMPLE], Shingling(hash="fast"))
    assert np.array_equal(signatures[:SAMPLE].astype(np.uint64), fast_reference.astype(np.uint64)), "fast differ"
    datatrove_seconds = datatrove(texts)
    e2e_seconds = spark_end_to_end(texts, args.cores)
    rate, sha1_rate = megabytes / ours_seconds, megabytes / sha1_seconds
    datasketch_rate, datatrove_rate = megabytes / datasketch_seconds, megabytes / datatrove_seconds
    e2e_rate = megabytes / e2e_seconds / args.cores
    print(f"{len(texts)} documents, {megabytes:.1f} MB; signatures equal datasketch's: yes (sha1; fast on {SAMPLE})")
    print(
        f"text to signatures, one core: ours {rate:.2f} MB/s (sha1 mode {sha1_rate:.2f}), "
        f"datasketch {datasketch_rate:.2f} MB/s, datatrove {datatrove_rate:.2f} MB/s"
    )
    print(f"dedup stage end to end on {args.cores} cores: {e2e_seconds:.1f} s, {e2e_rate:.2f} MB/s per core")
    print(
        f"RESULT signature_mb_s_per_core={rate:.2f} x_vs_datasketch={rate / datasketch_rate:.2f} "
        f"x_vs_datatrove={rate / datatrove_rate:.2f} sha1_x_vs_datasketch={sha1_rate / datasketch_rate:.2f} "
        f"e2e_mb_s_per_core={e2e_rate:.3f}"
    )


if __name__ == "__main__":
    main()
