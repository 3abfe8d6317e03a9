"""Decisions from stored signals, as Spark SQL expressions: no Python, no recomputation.

A document is kept when no enabled rule that applies to it finds its signal out of bounds, it is not an exact copy of
another document (the copy with the smallest doc_id is kept, whatever the partitioning), its language is allowed,
and its signals could be computed. `drop_reasons` lists every reason, not just the first, so re-tuning one rule
shows exactly which documents it alone was holding back.
"""

from __future__ import annotations

import hashlib

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.filter.rules import Rule
from pipelines.filter.settings import FilterConfig

EXACT_DUPLICATE = "exact_duplicate"
LANGUAGE_NOT_ALLOWED = "language_not_allowed"
SIGNAL_ERROR = "signal_error"
# Bump when what this module derives from the same signals changes: stored decisions are then all derived again.
DECISIONS_VERSION = 1


def rule_violation(rule: Rule) -> Column:
    """The rule's name when it drops the document, else null."""
    value = F.col("signals")[rule.signal]
    outside = F.lit(False)
    if rule.min is not None:
        outside = outside | (value < F.lit(float(rule.min)))
    if rule.max is not None:
        outside = outside | (value > F.lit(float(rule.max)))
    applies = F.col("kind").isin(list(rule.kinds))
    if rule.languages is not None:
        applies = applies & F.col("language").isin(list(rule.languages))
    return F.when(applies & outside, F.lit(rule.name))


def with_exact_duplicates(frame: DataFrame) -> DataFrame:
    """`duplicate_of`: the doc_id kept for this normalised content, when it is another document."""
    # Aggregated, not windowed: a boilerplate text with a million copies is combined map-side, not sorted in one
    # task. Keyed by struct(content_hash), which is never null and equals itself when the hash is null, so that null
    # hashes (not expected: the column is NOT NULL) still form one group, as in a window, with a plain equi-join.
    keyed = frame.withColumn("_content", F.struct("content_hash"))
    kept = keyed.groupBy("_content").agg(F.min("doc_id").alias("_kept"))
    duplicate_of = F.when(F.col("_kept") != F.col("doc_id"), F.col("_kept"))
    return keyed.join(kept, "_content", "left").withColumn("duplicate_of", duplicate_of).drop("_content", "_kept")


def with_decisions(frame: DataFrame, config: FilterConfig) -> DataFrame:
    """Adds `drop_reasons` (array of rule names, in rule order) and `keep` to a frame with stored signals."""
    reasons = [F.when(F.col("signal_error").isNotNull(), F.lit(SIGNAL_ERROR))]
    reasons += [rule_violation(rule) for rule in config.rules if rule.enabled]
    if config.languages is not None:
        allowed = F.col("language").isin(list(config.languages))
        reasons.append(F.when((F.col("kind") == "text") & ~allowed, F.lit(LANGUAGE_NOT_ALLOWED)))
    reasons.append(F.when(F.col("duplicate_of").isNotNull(), F.lit(EXACT_DUPLICATE)))
    drop_reasons = F.filter(F.array(*reasons), lambda reason: reason.isNotNull())
    return frame.withColumn("drop_reasons", drop_reasons).withColumn("keep", F.size("drop_reasons") == 0)


def fingerprint(config: FilterConfig, model_version: str | None) -> str:
    """A digest of everything a row's decision depends on besides its own stored columns and its content group: the
    enabled rules, the allowed languages, the model whose score the rules read, and this module's version."""
    described = [rule.describe() for rule in config.rules if rule.enabled]
    described += [f"languages: {config.languages}", f"quality model: {model_version}", f"v{DECISIONS_VERSION}"]
    return hashlib.sha256("\n".join(described).encode()).hexdigest()[:16]
