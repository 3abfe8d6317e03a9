"""MDS writing: our writer against mosaicml-streaming's MDSWriter on the same token samples, in one run.

    source scripts/env.sh && ensure_torch_env && python bench/mds.py [--samples 4000] [--seq-len 2048]

Both write the same packed int32 samples (random ids below DBRX's vocabulary) on one core, uncompressed and with
zstd (level 3), sha1 hashes, 64 MiB shards; the output directories are checked byte-identical. MDSWriter runs in
the PyTorch environment (mosaicml-streaming pins numpy < 2.2). The Spark stage writes shards in parallel from
Spark tasks with the same per-shard code, so this is its per-core rate. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import tempfile
import time

import numpy as np

from pipelines.mds.format import ShardSettings, write_samples

HERE = os.path.dirname(os.path.abspath(__file__))


def theirs(python: str, samples_path: str, out: str, compression: str | None) -> float:
    settings = json.dumps({"compression": compression, "hashes": ["sha1"], "size_limit": 1 << 26})
    command = [python, os.path.join(HERE, "_streaming_write.py"), samples_path, out, settings]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--seq-len", type=int, default=2048)
    args = parser.parse_args()
    python = os.environ.get("DATAPREP_TORCH_PYTHON")
    if not python:
        raise SystemExit("run `ensure_torch_env` after `source scripts/env.sh` (it sets DATAPREP_TORCH_PYTHON)")
    rng = np.random.default_rng(0)
    samples = [rng.integers(0, 100_352, args.seq_len, dtype=np.int64).astype(np.int32) for _ in range(args.samples)]
    megabytes = args.samples * args.seq_len * 4 / 1e6
    results = {}
    with tempfile.TemporaryDirectory() as work:
        samples_path = os.path.join(work, "samples.npz")
        np.savez(samples_path, **{f"s{i}": s for i, s in enumerate(samples)})
        for compression in (None, "zstd"):
            label = compression or "raw"
            ours_dir, theirs_dir = os.path.join(work, f"ours-{label}"), os.path.join(work, f"theirs-{label}")
            started = time.perf_counter()
            write_samples(ours_dir, samples, ShardSettings("int32", compression, ("sha1",), 1 << 26))
            ours_seconds = time.perf_counter() - started
            their_seconds = theirs(python, samples_path, theirs_dir, compression)
            names = sorted(os.listdir(ours_dir))
            assert names == sorted(os.listdir(theirs_dir)), "different files"
            assert not filecmp.cmpfiles(ours_dir, theirs_dir, names, shallow=False)[1], "different bytes"
            results[label] = (megabytes / ours_seconds, megabytes / their_seconds)
            ours_rate, their_rate = results[label]
            print(f"{label}: ours {ours_rate:.0f} MB/s, MDSWriter {their_rate:.0f} MB/s (identical bytes)")
    print(f"{args.samples} samples x {args.seq_len} tokens = {megabytes:.0f} MB of int32 tokens, one core")
    raw, zstd = results["raw"], results["zstd"]
    print(
        f"RESULT mb_s_per_core={raw[0]:.1f} x_vs_mdswriter={raw[0] / raw[1]:.2f} "
        f"zstd_mb_s_per_core={zstd[0]:.1f} zstd_x_vs_mdswriter={zstd[0] / zstd[1]:.2f}"
    )


if __name__ == "__main__":
    main()
