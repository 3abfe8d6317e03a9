"""How LSH bands x rows follow `verify`: exact verification leans far toward recall, the others do not."""

import random

import numpy as np
import pytest

from dataprep.config import parse_config
from pipelines.dedup.lsh import band_keys, candidate_probability, optimal_bands
from pipelines.dedup.minhash import MinHasher, Shingling
from pipelines.dedup.settings import DedupConfig
from pipelines.settings import ConfigError

SOURCE = {"name": "web", "format": "jsonl", "paths": ["/data/*.jsonl"]}


def dedup_section(**dedup) -> DedupConfig:
    return parse_config({"sources": [SOURCE], "dedup": dedup}).dedup


def bands_rows(settings: DedupConfig) -> tuple[int, int]:
    return optimal_bands(settings.threshold, settings.num_perm, settings.false_positive_weight)


def test_unset_weight_follows_verify():
    assert dedup_section().false_positive_weight == DedupConfig().false_positive_weight == 0.004
    assert dedup_section(verify="signature").false_positive_weight == 0.3
    assert DedupConfig(verify="none").false_positive_weight == 0.3


def test_a_weight_given_is_kept_whatever_verify_is():
    assert dedup_section(verify="exact", false_positive_weight=0.5).false_positive_weight == 0.5
    assert DedupConfig(verify="none", false_positive_weight=0.6).false_positive_weight == 0.6


def test_weight_outside_zero_to_one_is_rejected():
    with pytest.raises(ConfigError, match="dedup.false_positive_weight: 0.0 must be between 0 and 1"):
        dedup_section(false_positive_weight=0)


def test_exact_verification_makes_almost_every_pair_at_the_threshold_a_candidate():
    exact, signature = bands_rows(dedup_section()), bands_rows(dedup_section(verify="signature"))
    assert exact == (19, 6) and signature == (11, 11)  # Jaccard 0.8, 128 permutations
    assert candidate_probability(0.8, *exact) > 0.995 > 0.7 > candidate_probability(0.8, *signature)


@pytest.mark.parametrize("threshold, num_perm", [(0.7, 128), (0.85, 128), (0.8, 64), (0.8, 256)])
def test_other_thresholds_and_permutation_counts_lean_to_recall_too(threshold, num_perm):
    bands, rows = optimal_bands(threshold, num_perm, DedupConfig().false_positive_weight)
    assert bands * rows <= num_perm and candidate_probability(threshold, bands, rows) > 0.98


def test_candidate_probability_is_one_minus_missing_every_band():
    assert candidate_probability(0.8, 11, 11) == pytest.approx(1 - (1 - 0.8**11) ** 11)
    assert candidate_probability(0.0, 19, 6) == 0.0 and candidate_probability(1.0, 19, 6) == 1.0


def near_threshold_pairs(count: int) -> list[tuple[str, str, float]]:
    """(document, copy with 8 words in 400 substituted, their Jaccard): 0.82-0.86, just above 0.8."""
    rng, words, pairs = random.Random(3), [f"w{i}" for i in range(20000)], []
    shingling = Shingling()
    for _ in range(count):
        text = [rng.choice(words) for _ in range(400)]
        copy = list(text)
        for position in rng.sample(range(400), 8):
            copy[position] = "edited"
        a, b = (set(shingling.shingles(" ".join(t))[0]) for t in (text, copy))
        pairs.append((" ".join(text), " ".join(copy), len(a & b) / len(a | b)))
    return pairs


def test_documents_just_above_the_threshold_share_a_band_with_the_exact_default():
    pairs = near_threshold_pairs(300)
    assert all(0.81 < similarity < 0.87 for _, _, similarity in pairs)
    hasher, shingling = MinHasher(), Shingling()
    signatures = hasher.signatures(shingling.hash_batch([text for pair in pairs for text in pair[:2]]))
    for settings, least, most in [(dedup_section(), 0.98, 1.0), (dedup_section(verify="signature"), 0.6, 0.85)]:
        keys = band_keys(signatures, *bands_rows(settings))
        shared = np.mean([(keys[2 * i] == keys[2 * i + 1]).any() for i in range(len(pairs))])
        assert least <= shared <= most, (settings.verify, shared)
