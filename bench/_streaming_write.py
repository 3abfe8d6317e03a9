"""Runs in the PyTorch environment: times streaming.MDSWriter on samples from an .npz; prints JSON seconds."""

import json
import sys
import time

import numpy as np
from streaming import MDSWriter

samples_path, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
arrays = np.load(samples_path)
samples = [arrays[name] for name in sorted(arrays.files, key=lambda n: int(n[1:]))]
started = time.perf_counter()
with MDSWriter(out=out, columns={"tokens": "ndarray:int32"}, **settings) as writer:
    for sample in samples:
        writer.write({"tokens": sample})
print(json.dumps({"seconds": time.perf_counter() - started}))
