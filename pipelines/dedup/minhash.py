"""Shingle hashes and MinHash signatures, vectorised over a batch of documents.

Shingle hashes (32-bit), two ways:
- "fast" (default): every token (word, or character) hashed once with a polynomial hash over its UTF-8 bytes, the
  n tokens of a shingle combined with a second polynomial, both finished with the MurmurHash3 64-bit finalizer and
  the top 32 bits kept. All of it is numpy over the whole batch: no Python call per shingle. `Shingling.fast_hash`
  is the same function one shingle at a time (what datasketch is given as `hashfunc` to compare).
- "sha1": datasketch's default, the first 4 bytes of SHA-1 of the shingle, little-endian; one Python call per
  shingle, kept for signatures that must equal those of an existing datasketch index.

Signatures are bit-for-bit equal to `datasketch.MinHash` (same seed, num_perm and shingle hash) in both of its
permutation schemes:
- "affine32" (datasketch >= 2.0 default): the shingle hash is pre-mixed with the MurmurHash3 32-bit finalizer, then
  h -> a*h + b mod 2^32 with odd a, a bijection, so permutations add no collisions;
- "legacy" (datasketch < 2.0): h -> (a*h + b) mod (2^61 - 1), truncated to 32 bits.
Where datasketch calls update_batch once per document, we permute every shingle hash of a batch of documents in
cache-sized blocks and take per-document minima with one `np.minimum.reduceat` per block.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
MAX_HASH_32 = np.uint64((1 << 32) - 1)
SCHEMES = ("affine32", "legacy")
SHINGLE_HASHES = ("fast", "sha1")
UNITS = ("word", "char")
_WORD = re.compile(r"\w+")
_CODE_POINTS = 0x110000
_BLOCK_SHINGLES = 8192
_MASK64 = (1 << 64) - 1
_BYTE_BASE = 0x100000001B3  # odd, so it has an inverse modulo 2^64
_BYTE_BASE_INVERSE = pow(_BYTE_BASE, -1, 1 << 64)
_TOKEN_BASE = 0x9E3779B97F4A7C15


@dataclass(frozen=True)
class ShingleHashes:
    """The shingle hashes of a batch of documents, flat: document i owns `counts[i]` consecutive values."""

    hashes: np.ndarray  # uint64 holding 32-bit values
    counts: np.ndarray  # int64, one per document
    short: np.ndarray  # bool: the document had fewer tokens than one shingle

    def per_document(self) -> list[np.ndarray]:
        return np.split(self.hashes, np.cumsum(self.counts)[:-1]) if len(self.counts) else []


@dataclass(frozen=True)
class Shingling:
    """Word n-grams (default 5) of the lower-cased text, or character n-grams of its whitespace-collapsed form.

    A document shorter than one shingle is not dropped: its whole token sequence is its single shingle, so two short
    documents match only when they are identical. A document without tokens has no shingle.
    """

    size: int = 5
    unit: str = "word"
    hash: str = "fast"

    def __post_init__(self) -> None:
        if self.unit not in UNITS or self.hash not in SHINGLE_HASHES or self.size < 1:
            raise ValueError(f"unit must be in {UNITS}, hash in {SHINGLE_HASHES}, size >= 1; got {self}")

    def tokens(self, text: str) -> list[str]:
        if self.unit == "char":
            # NUL is the token separator of the fast hash, so it is whitespace here.
            return list(" ".join(text.replace("\x00", " ").lower().split()))
        return _WORD.findall(text.lower())

    def shingles(self, text: str) -> tuple[list[bytes], bool]:
        """(the distinct shingles as UTF-8 bytes, whether the document was shorter than one shingle)."""
        tokens = self.tokens(text)
        joiner = "" if self.unit == "char" else " "
        if len(tokens) < self.size:
            return ([joiner.join(tokens).encode("utf-8")] if tokens else []), True
        grams = {joiner.join(tokens[i : i + self.size]) for i in range(len(tokens) - self.size + 1)}
        return [gram.encode("utf-8") for gram in grams], False

    def hash_batch(self, texts: list[str]) -> ShingleHashes:
        """Every shingle hash of every document (duplicates within a document are harmless to MinHash)."""
        if self.hash == "sha1":
            shingled = [self.shingles(text) for text in texts]
            return ShingleHashes(
                hashes=sha1_hashes([s for shingles, _ in shingled for s in shingles]),
                counts=np.fromiter((len(s) for s, _ in shingled), dtype=np.int64, count=len(texts)),
                short=np.fromiter((short for _, short in shingled), dtype=bool, count=len(texts)),
            )
        if self.unit == "char":
            return _fast_batch([self.tokens(text) for text in texts], self.size)
        return _fast_word_batch(texts, self.size)

    def fast_hash(self, shingle: bytes) -> int:
        """The fast hash of one shingle as `shingles()` spells it (for datasketch's `hashfunc`, and for tests)."""
        text = shingle.decode("utf-8")
        return _fast_sequence_hash(list(text) if self.unit == "char" else text.split(" "))


def sha1_hashes(shingles: list[bytes]) -> np.ndarray:
    """datasketch's sha1_hash32: the first 4 bytes of SHA-1, little-endian."""
    return np.fromiter(
        (int.from_bytes(hashlib.sha1(s).digest()[:4], "little") for s in shingles),
        dtype=np.uint64,
        count=len(shingles),
    )


def _fmix64(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        values = values ^ (values >> np.uint64(33))
        values = values * np.uint64(0xFF51AFD7ED558CCD)
        values = values ^ (values >> np.uint64(33))
        values = values * np.uint64(0xC4CEB9FE1A85EC53)
        return values ^ (values >> np.uint64(33))


def _fmix64_int(value: int) -> int:
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & _MASK64
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & _MASK64
    return value ^ (value >> 33)


def _fast_sequence_hash(tokens: list[str]) -> int:
    """Reference (one shingle, pure Python) of what `_fast_batch` computes for a whole batch."""
    combined = 0
    for position, token in enumerate(tokens):
        polynomial = sum(byte * pow(_BYTE_BASE, i, 1 << 64) for i, byte in enumerate(token.encode("utf-8")))
        combined += _fmix64_int(polynomial & _MASK64) * pow(_TOKEN_BASE, position, 1 << 64)
    return _fmix64_int(combined & _MASK64) >> 32


def _powers(base: int, count: int) -> np.ndarray:
    """base^0 .. base^(count-1) modulo 2^64 (numpy's uint64 arithmetic wraps)."""
    powers = np.full(count, base, dtype=np.uint64)
    if count:
        powers[0] = 1
    return np.cumprod(powers, dtype=np.uint64)


class _TokenHasher:
    """fmix64 of each token's polynomial hash sum(byte_i * B^i) modulo 2^64, for all tokens at once.

    With prefix sums S over a buffer of NUL-separated tokens, the polynomial of the bytes [s, e) is
    (S[e] - S[s]) * B^-s: a few vectorised passes instead of a loop per token. Tokens go in chunks of about `CHUNK`
    characters so that the tables of powers are computed once; a chunk longer than them (a giant token) gets tables
    of its own, dropped with it, so a worker's memory stays bounded.
    """

    CHUNK = 1 << 18

    def __init__(self) -> None:
        self.powers, self.inverse_powers = self._tables(4 * self.CHUNK)

    @staticmethod
    def _tables(size: int) -> tuple[np.ndarray, np.ndarray]:
        return _powers(_BYTE_BASE, size + 1), _powers(_BYTE_BASE_INVERSE, size + 1)

    def _tables_for(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Powers for a buffer of `size` bytes: the kept tables, or tables made for a giant buffer alone."""
        return (self.powers, self.inverse_powers) if size < len(self.powers) else self._tables(size)

    def __call__(self, tokens: list[str]) -> np.ndarray:
        if not tokens:
            return np.zeros(0, dtype=np.uint64)
        characters = np.cumsum(np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens)) + 1)
        cuts = np.searchsorted(characters, np.arange(self.CHUNK, int(characters[-1]), self.CHUNK), side="right")
        bounds = [0, *np.unique(cuts).tolist(), len(tokens)]
        return np.concatenate([self._chunk(tokens[a:b]) for a, b in itertools.pairwise(bounds) if b > a])

    def words(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(the hash of every word of every text, in order; how many words each text has), words as `_WORD` finds
        them in the lower-cased text. Found with numpy over code points (`_word_characters`), in groups of about
        `CHUNK` characters; a text larger than that goes alone, through a regex and `__call__`."""
        hashes, counts = [], np.zeros(len(texts), dtype=np.int64)
        group: list[int] = []
        characters = 0
        for i, text in enumerate(texts):
            giant = len(text) > self.CHUNK
            if group and (giant or characters + len(text) > self.CHUNK):
                hashes.append(self._words_of_group(texts, group, counts))
                group, characters = [], 0
            if giant:
                words = _WORD.findall(text.lower())
                counts[i] = len(words)
                hashes.append(self(words))
            else:
                group.append(i)
                characters += len(text) + 1
        if group:
            hashes.append(self._words_of_group(texts, group, counts))
        return (np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)), counts

    def _words_of_group(self, texts: list[str], positions: list[int], counts: np.ndarray) -> np.ndarray:
        """The word hashes of `texts[positions]` joined by spaces (no word crosses one); their word counts into
        `counts[positions]`."""
        lowered = [texts[i].lower() for i in positions]
        joined = " ".join(lowered)
        if joined.isascii():  # the common case: one byte per code point, no offsets to compute
            buffer = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
            codes, offsets = buffer, None
        else:
            codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            buffer = np.frombuffer(joined.encode("utf-8", "surrogatepass"), dtype=np.uint8)
            # UTF-8 byte offset of every code point: the polynomial is over a word's UTF-8 bytes.
            widths = 1 + (codes >= 0x80).astype(np.int64) + (codes >= 0x800) + (codes >= 0x10000)
            offsets = np.concatenate(([0], np.cumsum(widths)))
        is_word = np.concatenate(([False], _word_characters()[codes], [False]))
        edges = np.diff(is_word.view(np.int8))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # code point positions
        byte_starts, byte_ends = (starts, ends) if offsets is None else (offsets[starts], offsets[ends])
        powers, inverse_powers = self._tables_for(len(buffer))
        with np.errstate(over="ignore"):
            prefix = np.zeros(len(buffer) + 1, dtype=np.uint64)
            np.cumsum(buffer * powers[: len(buffer)], out=prefix[1:])
            polynomial = (prefix[byte_ends] - prefix[byte_starts]) * inverse_powers[byte_starts]
        # Text boundaries after lowering: str.lower() may lengthen a text (one code point can lower to two).
        ends_of_texts = np.cumsum(np.fromiter(map(len, lowered), dtype=np.int64, count=len(lowered)) + 1)
        text_of_word = np.searchsorted(ends_of_texts, starts, side="right")
        counts[positions] = np.bincount(text_of_word, minlength=len(positions))
        return _fmix64(polynomial)

    def _chunk(self, tokens: list[str]) -> np.ndarray:
        buffer = np.frombuffer("\x00".join(tokens).encode("utf-8"), dtype=np.uint8)
        powers, inverse_powers = self._tables_for(len(buffer))
        separators = np.flatnonzero(buffer == 0)
        starts = np.concatenate(([0], separators + 1))
        ends = np.concatenate((separators, [len(buffer)]))
        with np.errstate(over="ignore"):
            prefix = np.zeros(len(buffer) + 1, dtype=np.uint64)
            np.cumsum(buffer * powers[: len(buffer)], out=prefix[1:])
            polynomial = (prefix[ends] - prefix[starts]) * inverse_powers[starts]
        return _fmix64(polynomial)


def _fast_word_batch(texts: list[str], size: int) -> ShingleHashes:
    """`_fast_batch` over the words of `Shingling.tokens`, without a Python string per word (equal, tested)."""
    hashes, token_counts = _token_hashes().words(texts)
    return _shingle_hashes(hashes, token_counts, size, lambda i: _WORD.findall(texts[i].lower()))


@functools.cache
def _word_characters() -> np.ndarray:
    """table[c]: whether code point c is one `_WORD` matches, for every code point (computed once, by `re` itself,
    so the two can never disagree)."""
    every = "".join(map(chr, range(_CODE_POINTS)))
    marked = re.sub(r"\w", "\x00", every)  # one character for one: positions are code points
    table = np.frombuffer(marked.encode("utf-32-le", "surrogatepass"), dtype=np.uint32) == 0
    table[0] = False  # NUL itself is no word character
    return table


def _fast_batch(token_lists: list[list[str]], size: int) -> ShingleHashes:
    token_counts = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
    tokens = _token_hashes()(list(itertools.chain.from_iterable(token_lists)))
    return _shingle_hashes(tokens, token_counts, size, token_lists.__getitem__)


def _shingle_hashes(
    tokens: np.ndarray, token_counts: np.ndarray, size: int, tokens_of: Callable[[int], list[str]]
) -> ShingleHashes:
    """The shingle hashes of a batch from its token hashes (document i owns `token_counts[i]` consecutive ones).
    `tokens_of(i)`: document i's tokens, asked only for the rare document shorter than one shingle."""
    short = token_counts < size
    windows = max(len(tokens) - size + 1, 0)
    combined = np.zeros(windows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k, weight in enumerate(_powers(_TOKEN_BASE, size)):
            combined += tokens[k : k + windows] * weight
    # The shingle starting at token j is valid when its `size` tokens all belong to j's document.
    valid = np.arange(size, windows + size) <= np.repeat(np.cumsum(token_counts), token_counts)[:windows]
    hashes = _fmix64(combined[valid]) >> np.uint64(32)
    counts = np.maximum(token_counts - size + 1, 0)
    partial = np.flatnonzero(short & (token_counts > 0))
    if len(partial):  # rare: documents with 1..size-1 tokens hash their whole sequence as one shingle
        owners = np.repeat(np.arange(len(counts)), counts)
        extra = np.fromiter((_fast_sequence_hash(tokens_of(i)) for i in partial), dtype=np.uint64)
        order = np.argsort(np.concatenate((owners, partial)), kind="stable")
        hashes = np.concatenate((hashes, extra))[order]
        counts[partial] = 1
    return ShingleHashes(hashes=hashes, counts=counts, short=short)


@functools.cache
def _token_hashes() -> _TokenHasher:
    return _TokenHasher()


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

    def signatures(self, shingles: ShingleHashes) -> np.ndarray:
        """One row per document; a document without shingles gets the empty signature (all maximal)."""
        counts = shingles.counts
        out = np.full((self.num_perm, len(counts)), self.empty, dtype=self.dtype)
        if not counts.sum():
            return out.T.copy()
        mixed = self._premix(shingles.hashes)
        ends = np.cumsum(counts)
        # Blocks of documents whose (num_perm x shingles) matrix stays small enough for the CPU cache, permuted in
        # place and reduced along the contiguous axis; a document larger than a block is reduced piece by piece.
        scratch = np.empty((self.num_perm, _BLOCK_SHINGLES), dtype=self.dtype)
        start_document, start_shingle = 0, 0
        while start_document < len(counts):
            end_document = int(np.searchsorted(ends, start_shingle + _BLOCK_SHINGLES, side="right"))
            if end_document == start_document:  # one document with more shingles than a block
                for piece in range(start_shingle, int(ends[start_document]), _BLOCK_SHINGLES):
                    hashes = mixed[piece : min(piece + _BLOCK_SHINGLES, int(ends[start_document]))]
                    permuted = self._permute(hashes, scratch[:, : len(hashes)])
                    np.minimum(out[:, start_document], permuted.min(axis=1), out=out[:, start_document])
                start_document, start_shingle = start_document + 1, int(ends[start_document])
                continue
            end_shingle = int(ends[end_document - 1])
            block_counts = counts[start_document:end_document]
            present = block_counts > 0
            if present.any():
                permuted = self._permute(mixed[start_shingle:end_shingle], scratch[:, : end_shingle - start_shingle])
                starts = (np.concatenate(([0], np.cumsum(block_counts)[:-1])))[present]
                out[:, start_document:end_document][:, present] = np.minimum.reduceat(permuted, starts, axis=1)
            start_document, start_shingle = end_document, end_shingle
        return out.T.copy()

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

    def _permute(self, mixed: np.ndarray, out: np.ndarray) -> np.ndarray:
        """(num_perm, shingles): every permutation of every shingle hash, written into `out`."""
        with np.errstate(over="ignore"):
            np.multiply(self.a.reshape(-1, 1), mixed, out=out)
            np.add(out, self.b.reshape(-1, 1), out=out)
            if self.scheme == "legacy":
                np.remainder(out, MERSENNE_PRIME, out=out)
                np.bitwise_and(out, MAX_HASH_32, out=out)
        return out
