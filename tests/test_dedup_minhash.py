"""MinHash signatures (bit for bit against datasketch), shingling and LSH banding."""

import random

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from pipelines.dedup.lsh import band_keys, optimal_bands
from pipelines.dedup.minhash import MinHasher, Shingling, _fast_batch, _TokenHasher

WORDS = ["alpha", "beta", "gamma", "delta", "über", "naïve", "数据", "x", "42", "ünïcödé", "end"]


def random_documents(count: int, seed: int = 3) -> list[str]:
    """Empty, one-word, shorter-than-a-shingle, ordinary and block-sized documents, with punctuation and non-ASCII."""
    rng = random.Random(seed)
    sizes = [0, 1, 3, 7, 50, 300, 9_000]
    return [
        " ".join(rng.choice(WORDS) + rng.choice(["", ",", ".", " -"]) for _ in range(rng.choice(sizes)))
        for _ in range(count)
    ]


def datasketch_signature(shingling: Shingling, text: str, **minhash_args) -> np.ndarray:
    hashfunc = {} if shingling.hash == "sha1" else {"hashfunc": shingling.fast_hash}
    reference = MinHash(**minhash_args, **hashfunc)
    reference.update_batch(shingling.shingles(text)[0])
    return reference.hashvalues.astype(np.uint64)


@pytest.mark.parametrize("shingle_hash", ["fast", "sha1"])
@pytest.mark.parametrize("unit", ["word", "char"])
@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("num_perm, seed", [(128, 1), (64, 42)])
def test_signatures_equal_datasketch_bit_for_bit(shingle_hash, unit, scheme, num_perm, seed):
    shingling = Shingling(size=5 if unit == "word" else 9, unit=unit, hash=shingle_hash)
    texts = random_documents(30, seed)
    ours = MinHasher(num_perm=num_perm, seed=seed, scheme=scheme).signatures(shingling.hash_batch(texts))
    for row, text in zip(ours, texts, strict=True):
        expected = datasketch_signature(shingling, text, num_perm=num_perm, seed=seed, scheme=scheme)
        assert np.array_equal(row.astype(np.uint64), expected)


def test_signatures_do_not_depend_on_the_batch_a_document_is_in():
    shingling, hasher = Shingling(), MinHasher(num_perm=32)
    texts = random_documents(40, seed=11) + ["giant" * 400_000 + " tail words of the document"]
    together = hasher.signatures(shingling.hash_batch(texts))
    alone = np.concatenate([hasher.signatures(shingling.hash_batch([text])) for text in texts])
    assert np.array_equal(together, alone)


def unicode_documents(count: int, seed: int) -> list[str]:
    """Non-ASCII words and digits, lower-casing that lengthens a text (İ) or depends on context (final sigma), NULs,
    lone surrogates, punctuation, empty documents."""
    rng = random.Random(seed)
    words = ["Alpha", "ΣΟΦΊΑΣ", "İstanbul", "naïve", "数据", "x_y", "42", "½", "٣", "ǅ", "ß", "ﬁ", "a\u0301", "😀"]
    words += ["\x00", "\ud800", "Ⱥ", "\u00a0", "\u2028"]
    return [
        " ".join(rng.choice(words) + rng.choice(["", ",", ".", " -", "Σ"]) for _ in range(rng.choice([0, 2, 9, 60])))
        for _ in range(count)
    ]


def assert_same_shingle_hashes(shingling: Shingling, texts: list[str]) -> None:
    """The batch path (words found with numpy over code points) against hashing `Shingling.tokens`' words."""
    ours = shingling.hash_batch(texts)
    expected = _fast_batch([shingling.tokens(text) for text in texts], shingling.size)
    assert np.array_equal(ours.hashes, expected.hashes)
    assert np.array_equal(ours.counts, expected.counts) and np.array_equal(ours.short, expected.short)


def test_word_shingle_hashes_are_the_hashes_of_the_shingles_whatever_the_text(monkeypatch):
    shingling = Shingling(size=3)
    ordinary = unicode_documents(60, seed=5)
    for text, hashes in zip(ordinary, shingling.hash_batch(ordinary).per_document(), strict=True):
        assert set(hashes.tolist()) == {shingling.fast_hash(shingle) for shingle in shingling.shingles(text)[0]}
    # Documents larger than the hasher's chunk go alone: before, between and after ordinary ones.
    giant = " ".join(unicode_documents(4000, seed=6))
    assert len(giant) > _TokenHasher.CHUNK and len(shingling.tokens(giant)) > 50_000
    assert_same_shingle_hashes(shingling, [giant, *ordinary[:30], giant.upper(), *ordinary[30:], giant[::-1]])
    # A tiny chunk: every group boundary and the giant path, in random batches.
    monkeypatch.setattr(_TokenHasher, "CHUNK", 40)
    rng = random.Random(7)
    for size in (1, 2, 5):
        for _ in range(20):
            assert_same_shingle_hashes(Shingling(size=size), rng.sample(ordinary, rng.randint(0, 12)))


def test_fast_shingle_hash_keeps_order_and_spreads_values():
    shingling = Shingling(size=3)
    assert shingling.fast_hash(b"a b c") != shingling.fast_hash(b"b a c")
    assert shingling.fast_hash(b"ab c d") != shingling.fast_hash(b"a bc d")
    shingles = [f"w{i} w{i * 7} w{i % 13}".encode() for i in range(50_000)]
    values = [shingling.fast_hash(s) for s in shingles]
    assert max(values) < 2**32 and len(set(values)) >= len(values) - 3  # 50k in 2^32: ~0.3 collisions expected


def test_unknown_scheme_hash_or_unit_is_rejected():
    with pytest.raises(ValueError, match="scheme must be one of"):
        MinHasher(scheme="affine64")
    with pytest.raises(ValueError, match="hash in"):
        Shingling(hash="md5")


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
    a = MinHasher(num_perm=16).signatures(Shingling(size=1).hash_batch(["x y z"]))[0]
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
    a, b = hasher.signatures(shingling.hash_batch([text, edited]))
    assert (a == b).mean() > 0.9
