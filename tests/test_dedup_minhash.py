"""MinHash signatures (bit for bit against datasketch), shingling and LSH banding."""

import random

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from pipelines.dedup.lsh import band_keys, optimal_bands
from pipelines.dedup.minhash import MinHasher, Shingling


def random_shingle_sets(count: int, seed: int = 3) -> list[list[bytes]]:
    rng = random.Random(seed)
    sets = []
    for _ in range(count):
        size = rng.choice([0, 1, 2, 7, 50, 300])
        sets.append([f"shingle {rng.randrange(10_000)} {i}".encode() for i in range(size)])
    return sets


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("num_perm, seed", [(128, 1), (64, 42), (256, 7)])
def test_signatures_equal_datasketch_bit_for_bit(scheme, num_perm, seed):
    sets = random_shingle_sets(40, seed)
    ours = MinHasher(num_perm=num_perm, seed=seed, scheme=scheme).signatures(sets)
    for row, shingles in zip(ours, sets, strict=True):
        reference = MinHash(num_perm=num_perm, seed=seed, scheme=scheme)
        reference.update_batch(shingles)
        assert np.array_equal(row.astype(np.uint64), reference.hashvalues.astype(np.uint64))


def test_unknown_scheme_is_rejected():
    with pytest.raises(ValueError, match="scheme must be one of"):
        MinHasher(scheme="affine64")


def test_word_shingles_of_normal_short_and_empty_documents():
    shingling = Shingling(size=3)
    shingles, short = shingling.shingles("The quick brown fox jumps")
    assert sorted(shingles) == [b"brown fox jumps", b"quick brown fox", b"the quick brown"] and not short
    assert shingling.shingles("Two words") == ([b"two words"], True)
    assert shingling.shingles("  ") == ([], True)


def test_character_shingles():
    shingles, short = Shingling(size=4, unit="char").shingles("abcdef")
    assert sorted(shingles) == [b"abcd", b"bcde", b"cdef"] and not short


@pytest.mark.parametrize("threshold, num_perm", [(0.8, 128), (0.7, 256), (0.5, 64), (0.9, 112)])
def test_band_choice_matches_datasketch(threshold, num_perm):
    assert optimal_bands(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_band_keys_match_exactly_when_a_band_matches():
    hasher = MinHasher(num_perm=16)
    a = hasher.signatures([[b"x", b"y", b"z"]])[0]
    b = a.copy()
    b[4:8] += 1  # band 1 of 4 differs
    keys = band_keys(np.stack([a, b, a]), bands=4, rows=4)
    assert keys.dtype == np.int64
    assert list(keys[0] == keys[1]) == [True, False, True, True]
    assert (keys[0] == keys[2]).all()
    same_values_other_band = np.tile(a[:4], 4).reshape(1, 16)
    assert len(set(band_keys(same_values_other_band, bands=4, rows=4)[0])) == 4


def test_similar_documents_agree_on_most_signature_values():
    text = " ".join(f"word{i}" for i in range(400))
    edited = text.replace("word200", "changed")
    shingling, hasher = Shingling(), MinHasher(num_perm=256)
    a, b = hasher.signatures([shingling.shingles(text)[0], shingling.shingles(edited)[0]])
    assert (a == b).mean() > 0.9
