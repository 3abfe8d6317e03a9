"""MinHash signatures of shingled documents, vectorised over a batch of documents.

Bit-for-bit equal to `datasketch.MinHash` (same seed, same number of permutations, SHA-1 32-bit shingle hashes) in
both of its permutation schemes:
- "affine32" (datasketch >= 2.0 default): the shingle hash is pre-mixed with the MurmurHash3 finalizer, then
  h -> a*h + b mod 2^32 with odd a, a bijection, so permutations add no collisions;
- "legacy" (datasketch < 2.0): h -> (a*h + b) mod (2^61 - 1), truncated to 32 bits.
Where datasketch calls update_batch once per document, we hash every shingle of a batch of documents into one array
and take per-document minima with one `np.minimum.reduceat`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
MAX_HASH_32 = np.uint64((1 << 32) - 1)
SCHEMES = ("affine32", "legacy")
_WORD = re.compile(r"\w+")
_BLOCK_SHINGLES = 2048


@dataclass(frozen=True)
class Shingling:
    """Word n-grams (default 5) of the lower-cased normalised text, or character n-grams."""

    size: int = 5
    unit: str = "word"  # "word" or "char"

    def shingles(self, text: str) -> tuple[list[bytes], bool]:
        """(shingles as UTF-8 bytes, whether the document was shorter than one shingle).

        A short document is not dropped: its whole text (its words joined) is its single shingle, so two short
        documents match only when they are identical.
        """
        if self.unit == "char":
            units = " ".join(text.lower().split())
            if len(units) < self.size:
                return ([units.encode("utf-8")] if units else []), True
            grams = {units[i : i + self.size] for i in range(len(units) - self.size + 1)}
            return [gram.encode("utf-8") for gram in grams], False
        words = _WORD.findall(text.lower())
        if len(words) < self.size:
            return ([" ".join(words).encode("utf-8")] if words else []), True
        grams = {" ".join(words[i : i + self.size]) for i in range(len(words) - self.size + 1)}
        return [gram.encode("utf-8") for gram in grams], False


class MinHasher:
    """Signatures of `num_perm` values (uint32 for affine32, uint64 holding 32-bit values for legacy)."""

    def __init__(self, num_perm: int = 128, seed: int = 1, scheme: str = "affine32") -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        self.num_perm, self.seed, self.scheme = num_perm, seed, scheme
        generator = np.random.RandomState(seed)
        if scheme == "legacy":
            pairs = [
                (
                    generator.randint(1, MERSENNE_PRIME, dtype=np.uint64),
                    generator.randint(0, MERSENNE_PRIME, dtype=np.uint64),
                )
                for _ in range(num_perm)
            ]
            self.a, self.b = np.array(pairs, dtype=np.uint64).T
            self.empty = MAX_HASH_32
            self.dtype = np.uint64
        else:
            self.a = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
            self.b = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
            self.empty = np.uint32((1 << 32) - 1)
            self.dtype = np.uint32

    def signatures(self, shingle_sets: list[list[bytes]]) -> np.ndarray:
        """One row per document; a document without shingles gets the empty signature (all maximal)."""
        out = np.full((len(shingle_sets), self.num_perm), self.empty, dtype=self.dtype)
        counts = np.fromiter(map(len, shingle_sets), dtype=np.int64, count=len(shingle_sets))
        if not counts.sum():
            return out
        hashes = self.shingle_hashes([s for shingles in shingle_sets for s in shingles])
        mixed = self._premix(hashes)
        ends = np.cumsum(counts)
        # Blocks of documents whose (shingles x num_perm) matrix stays small enough for the CPU cache.
        start_document, start_shingle = 0, 0
        while start_document < len(shingle_sets):
            end_document = int(np.searchsorted(ends, start_shingle + _BLOCK_SHINGLES, side="right"))
            end_document = max(end_document, start_document + 1)
            end_shingle = int(ends[end_document - 1])
            block_counts = counts[start_document:end_document]
            present = block_counts > 0
            if present.any():
                permuted = self._permute(mixed[start_shingle:end_shingle])  # (shingles, num_perm)
                starts = (np.concatenate(([0], np.cumsum(block_counts)[:-1])))[present]
                out[start_document:end_document][present] = np.minimum.reduceat(permuted, starts, axis=0)
            start_document, start_shingle = end_document, end_shingle
        return out

    @staticmethod
    def shingle_hashes(shingles: list[bytes]) -> np.ndarray:
        """datasketch's sha1_hash32: the first 4 bytes of SHA-1, little-endian."""
        return np.fromiter(
            (int.from_bytes(hashlib.sha1(s).digest()[:4], "little") for s in shingles),
            dtype=np.uint64,
            count=len(shingles),
        )

    def _premix(self, hashes: np.ndarray) -> np.ndarray:
        """affine32 first passes each 32-bit hash through the MurmurHash3 finalizer; legacy uses it as it is."""
        if self.scheme == "legacy":
            return hashes
        with np.errstate(over="ignore"):
            mixed = hashes.astype(np.uint32)
            mixed = mixed ^ (mixed >> np.uint32(16))
            mixed = mixed * np.uint32(0x85EBCA6B)
            mixed = mixed ^ (mixed >> np.uint32(13))
            mixed = mixed * np.uint32(0xC2B2AE35)
            return mixed ^ (mixed >> np.uint32(16))

    def _permute(self, mixed: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            column = mixed.reshape(-1, 1)
            if self.scheme == "legacy":
                return np.bitwise_and((column * self.a + self.b) % MERSENNE_PRIME, MAX_HASH_32)
            return column * self.a + self.b
