"""Runs inside the PyTorch environment (scripts/env.sh: ensure_torch_env), where mosaicml-streaming is installed:
the reference side of tests/test_mds_format.py. Not collected by pytest (no test_ prefix).

    python streaming_peer.py write SAMPLES.npz OUT_DIR SETTINGS_JSON   # streaming.MDSWriter
    python streaming_peer.py read DIR OUT.npz                          # StreamingDataset + LocalDataset
"""

import json
import sys

import numpy as np


def write(samples_path: str, out: str, settings: str) -> None:
    from streaming import MDSWriter

    options = json.loads(settings)
    arrays = np.load(samples_path)
    samples = [arrays[f"s{i}"] for i in range(len(arrays.files))]
    columns = {"tokens": f"ndarray:{options['token_dtype']}"}
    with MDSWriter(
        out=out,
        columns=columns,
        compression=options["compression"],
        hashes=options["hashes"],
        size_limit=options["size_limit"],
    ) as writer:
        for sample in samples:
            writer.write({"tokens": sample})


def read(directory: str, out: str) -> None:
    from streaming import LocalDataset, StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    streamed = StreamingDataset(local=directory, batch_size=1, shuffle=False, validate_hash="sha1")
    local = LocalDataset(local=directory)
    streamed_samples = [streamed[i]["tokens"] for i in range(streamed.num_samples)]
    local_samples = [local[i]["tokens"] for i in range(len(local))]
    iterated = [sample["tokens"] for sample in streamed]
    assert len(iterated) == len(streamed_samples)
    for a, b in zip(streamed_samples, local_samples, strict=True):
        assert np.array_equal(a, b)
    np.savez(out, **{f"s{i}": sample for i, sample in enumerate(streamed_samples)})


if __name__ == "__main__":
    {"write": write, "read": read}[sys.argv[1]](*sys.argv[2:])
