"""LSH banding: choosing bands x rows for a threshold, and one 64-bit key per band of a signature."""

from __future__ import annotations

import functools

import numpy as np


def _simpson(values: np.ndarray, low: float, high: float) -> float:
    """Simpson's rule over an odd number of equally spaced samples; the integrands are smooth polynomials in s, so
    this matches datasketch's adaptive quadrature closely enough to pick the same (bands, rows)."""
    step = (high - low) / (len(values) - 1)
    return float(step / 3 * (values[0] + values[-1] + 4 * values[1:-1:2].sum() + 2 * values[2:-1:2].sum()))


@functools.lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, false_positive_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted probability mass of false positives below the threshold and false
    negatives above it, over all bands * rows <= num_perm: the criterion datasketch's MinHashLSH uses."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    below, above = np.linspace(0.0, threshold, 2001), np.linspace(threshold, 1.0, 2001)
    best, best_error = (1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            false_positive = _simpson(1 - (1 - below**rows) ** bands, 0.0, threshold)
            false_negative = _simpson((1 - above**rows) ** bands, threshold, 1.0)
            error = false_positive * false_positive_weight + false_negative * (1 - false_positive_weight)
            if error < best_error:
                best, best_error = (bands, rows), error
    return best


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that two documents whose shingle sets have Jaccard `similarity` share at least one band key."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents, bands) int64 keys: each band's `rows` values mixed into 64 bits, salted with the band index so
    equal values in different bands never collide. Two documents share a key when a band matches (or, with
    probability ~2^-64 per pair, by accident)."""
    values = signatures[:, : bands * rows].astype(np.uint64).reshape(len(signatures), bands, rows)
    keys = np.full((len(signatures), bands), np.uint64(0xCBF29CE484222325), dtype=np.uint64)
    keys ^= np.arange(bands, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        for r in range(rows):
            keys = (keys ^ values[:, :, r]) * np.uint64(0x100000001B3)
            keys ^= keys >> np.uint64(29)
    return keys.view(np.int64)
