"""Our MDS writer and reader against mosaicml-streaming 0.13 (in the PyTorch environment): same bytes as MDSWriter,
StreamingDataset reads our shards, we read MDSWriter's."""

import filecmp
import json
import os
import subprocess

import numpy as np
import pytest

from pipelines.mds.format import MdsError, ShardSettings, iter_samples, write_samples

PEER = os.path.join(os.path.dirname(__file__), "streaming_peer.py")
SETTINGS = [
    ShardSettings("int32", None, ("sha1",), 1 << 16),
    ShardSettings("uint32", "zstd:7", ("md5", "sha1"), 1 << 17),
    ShardSettings("int32", "zstd", ("sha1", "sha256"), 3000),  # smaller than the big samples: empty first shard
    ShardSettings("int32", "zstd", ("sha1",), 1 << 26),  # a 14 MB shard: zstd compresses it in several jobs
]


def token_samples(seed: int, dtype: str) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = [1, 2, 255, 256, 65_535, 65_536, *rng.integers(1, 3000, 40)]
    rng.shuffle(lengths)
    high = 100_352 if dtype == "int32" else 2**32
    return [rng.integers(0, high, n, dtype=np.int64).astype(dtype) for n in lengths]


def run_peer(python: str, *args: str) -> None:
    subprocess.run([python, PEER, *args], check=True, capture_output=True, text=True)


@pytest.mark.parametrize("settings", SETTINGS, ids=["raw", "zstd7-uint32", "tiny-limit", "zstd-multi-job"])
def test_our_shards_equal_mdswriters_byte_for_byte_and_both_read_each_other(tmp_path, torch_python, settings):
    samples = token_samples(len(settings.hashes), settings.token_dtype)
    if settings.size_limit == 1 << 26:
        samples += [np.arange(n * 700_000, (n + 1) * 700_000, dtype=np.int32) % 100_352 for n in range(5)]
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    write_samples(str(ours), samples, settings)
    np.savez(tmp_path / "samples.npz", **{f"s{i}": s for i, s in enumerate(samples)})
    options = {
        "token_dtype": settings.token_dtype,
        "compression": settings.compression,
        "hashes": list(settings.hashes),
        "size_limit": settings.size_limit,
    }
    run_peer(torch_python, "write", str(tmp_path / "samples.npz"), str(theirs), json.dumps(options))

    assert sorted(os.listdir(ours)) == sorted(os.listdir(theirs))
    assert "index.json" in os.listdir(ours) and len(os.listdir(ours)) >= 2
    match, mismatch, errors = filecmp.cmpfiles(ours, theirs, os.listdir(ours), shallow=False)
    assert not mismatch and not errors

    read_back = [s.copy() for s in iter_samples(str(theirs))]
    assert len(read_back) == len(samples) and all(np.array_equal(a, b) for a, b in zip(read_back, samples, strict=True))

    run_peer(torch_python, "read", str(ours), str(tmp_path / "streamed.npz"))
    streamed = np.load(tmp_path / "streamed.npz")
    assert len(streamed.files) == len(samples)
    for i, sample in enumerate(samples):
        assert streamed[f"s{i}"].dtype == sample.dtype and np.array_equal(streamed[f"s{i}"], sample)


def test_invalid_shard_settings_are_named():
    with pytest.raises(MdsError, match="compression"):
        ShardSettings(compression="gzip")
    with pytest.raises(MdsError, match="sorted"):
        ShardSettings(hashes=("sha1", "md5"))
    with pytest.raises(MdsError, match="token_dtype"):
        ShardSettings(token_dtype="int16")
