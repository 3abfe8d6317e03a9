"""The dedup stage's config section (`dedup:`): MinHash, LSH, verification and which copy is kept."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.settings import ConfigError, Section

KEEP_ORDER_COLUMNS = ("quality_score", "n_chars", "doc_id")
# The LSH weight when `false_positive_weight` is not set, by `verify` (see DedupConfig).
FALSE_POSITIVE_WEIGHTS = {"exact": 0.004, "signature": 0.3, "none": 0.3}


@dataclass(frozen=True)
class DedupConfig:
    """MinHash near-deduplication of the documents the filter kept."""

    threshold: float = 0.8  # Jaccard similarity of shingle sets above which two documents are duplicates
    num_perm: int = 128
    seed: int = 1
    scheme: str = "affine32"  # datasketch's permutation scheme: affine32 (>= 2.0) or legacy (< 2.0)
    shingle_size: int = 5
    shingle_unit: str = "word"  # word or char
    # "fast": vectorised 64-bit polynomial hashes (no Python call per shingle); "sha1": datasketch's default hash, for
    # signatures that must equal an existing datasketch index's.
    shingle_hash: str = "fast"
    # Candidate pairs are kept when their exact ("exact": Jaccard of the shingle-hash sets) or estimated ("signature":
    # share of equal signature values) similarity reaches the threshold; "none" keeps every LSH candidate.
    verify: str = "exact"
    # Weight of LSH false positives against false negatives when choosing bands x rows (datasketch's default is 0.5);
    # unset, it follows `verify` (FALSE_POSITIVE_WEIGHTS). With exact verification a false candidate costs one
    # Jaccard computation and cannot join two documents, while a missed pair is a duplicate left in the data, so LSH
    # leans far toward recall: 0.004 -> 19 x 6 at 0.8 and 128 permutations, a pair at the threshold becomes a
    # candidate with probability 0.997 (11 x 11: 0.63), for 1.6-2.1x the candidate pairs (bench/dedup_quality.py).
    # Without exact verification every extra candidate is a chance to join documents that are not duplicates
    # (signature: an estimate a few points off; none: every candidate is kept, and already at 11 x 11 one removed
    # document in eight or nine has no near-duplicate), so those keep 0.3 (-> 11 x 11); with verify: none, raise it.
    false_positive_weight: float | None = None
    # "full": decide every kept document afresh; "incremental": only documents not yet in silver.dedup, against the
    # stored signature index (falls back to full, saying why, when the index cannot be reused).
    mode: str = "full"
    # The order in which documents are considered for keeping (keep.py: best-first, a document is kept unless a kept
    # one is its near-duplicate) and which member is each LSH bucket's star centre: by these, then the smallest doc_id.
    keep_order: tuple[str, ...] = ("quality_score desc", "n_chars desc")

    def __post_init__(self) -> None:
        if self.false_positive_weight is None and self.verify in FALSE_POSITIVE_WEIGHTS:
            object.__setattr__(self, "false_positive_weight", FALSE_POSITIVE_WEIGHTS[self.verify])


def parse_dedup(section: Section) -> DedupConfig:
    defaults = DedupConfig()
    dedup = DedupConfig(
        threshold=section.take_number("threshold", defaults.threshold),
        num_perm=section.take("num_perm", int, default=defaults.num_perm, minimum=2),
        seed=section.take("seed", int, default=defaults.seed),
        scheme=section.take("scheme", str, default=defaults.scheme, choices=("affine32", "legacy")),
        shingle_size=section.take("shingle_size", int, default=defaults.shingle_size, minimum=1),
        shingle_unit=section.take("shingle_unit", str, default=defaults.shingle_unit, choices=("word", "char")),
        shingle_hash=section.take("shingle_hash", str, default=defaults.shingle_hash, choices=("fast", "sha1")),
        mode=section.take("mode", str, default=defaults.mode, choices=("full", "incremental")),
        verify=section.take("verify", str, default=defaults.verify, choices=("signature", "exact", "none")),
        false_positive_weight=section.take_number("false_positive_weight"),
        keep_order=tuple(section.take("keep_order", list, default=list(defaults.keep_order))),
    )
    section.reject_unknown()
    if not 0.0 < dedup.threshold < 1.0:
        raise ConfigError(f"dedup.threshold: {dedup.threshold} must be between 0 and 1")
    if not 0.0 < dedup.false_positive_weight < 1.0:
        raise ConfigError(f"dedup.false_positive_weight: {dedup.false_positive_weight} must be between 0 and 1")
    for item in dedup.keep_order:
        column, _, direction = str(item).partition(" ")
        if column not in KEEP_ORDER_COLUMNS or direction not in ("asc", "desc"):
            raise ConfigError(
                f"dedup.keep_order: {item!r} should be '<column> asc|desc' with a column of {KEEP_ORDER_COLUMNS}"
            )
    return dedup
