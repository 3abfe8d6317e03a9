"""Arrow helpers the Spark tasks share."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def list_array(values: np.ndarray, lengths: np.ndarray) -> pa.ListArray:
    """Arrow lists straight from a flat numpy array and per-row lengths (no Python list per row)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
