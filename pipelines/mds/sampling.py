"""Which documents a curriculum stage uses, how often, and in what order: exact token accounting in Spark.

Per component, with A = the tokens available (each document's tokens + its EOS) and t its requested share:
the component may use at most A x max_epochs; it takes k = reached // A full passes over its documents and then,
in a seeded pseudo-random order, documents until the remaining tokens are reached, the last one cut to land
exactly (it keeps its first take - 1 tokens and its EOS). So realised tokens equal the request whenever the supply
allows; otherwise the shortfall is reported. Every occurrence then gets a seeded shuffle key; the stage's token
stream is the occurrences in key order.
Nothing depends on partitioning: keys are hashes of (seed, stage, component, epoch, doc_id), ties broken by ids.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.mds.mixes import Stage
from pipelines.prefix_sums import with_running_totals
from pipelines.settings import ConfigError


@dataclass
class ComponentOutcome:
    name: str
    predicate: str
    weight: float
    max_epochs: float
    documents_available: int
    tokens_available: int
    requested: int
    realised: int
    shortfall: int  # requested tokens the capped supply could not give
    full_epochs: int
    documents_used: int  # occurrences: a document repeated over epochs counts each time

    def as_dict(self) -> dict:
        return asdict(self)


def candidates(tokens: DataFrame, silver: DataFrame) -> DataFrame:
    """One narrow row per non-empty document of gold.tokens with the columns predicates may use."""
    extra = silver.select("doc_id", "quality_score", "language_score", "n_chars", "signals")
    return (
        tokens.where(F.col("n_tokens") > 0)
        .select("doc_id", "source", "kind", "lang", "n_tokens", "n_bytes")
        .join(extra, "doc_id", "left")
    )


def check_predicates(stage: Stage, frame: DataFrame) -> None:
    for component in stage.components:
        try:
            frame.where(F.expr(component.predicate)).limit(0).collect()
        except Exception as error:  # parse and analysis errors have different classes across Spark versions
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(
                f"stage {stage.name}, component {component.name}: invalid predicate {component.predicate!r}: "
                f"{first_line}"
            ) from error


def occurrences(stage: Stage, frame: DataFrame) -> tuple[DataFrame, list[ComponentOutcome]]:
    """(component, doc_id, epoch, take, key) rows, `take` = how many of the document's tokens + EOS it
    contributes, `key` its shuffle key; and the accounting per component."""
    check_predicates(stage, frame)
    targets = stage.targets()
    parts, outcomes = [], []
    for index, component in enumerate(stage.components):
        matching = (
            frame.where(F.expr(component.predicate))
            .select("doc_id", (F.col("n_tokens") + 1).alias("length"))
            .localCheckpoint()
        )
        totals = matching.agg(F.count("*").alias("documents"), F.sum("length").alias("tokens")).first()
        documents, available = int(totals["documents"]), int(totals["tokens"] or 0)
        requested = targets[component.name]
        reachable = min(requested, int(available * component.max_epochs))
        full_epochs, remainder = divmod(reachable, available) if available else (0, 0)
        part, used = _component_occurrences(stage, index, matching, full_epochs, remainder)
        parts.append(part)
        outcomes.append(
            ComponentOutcome(
                name=component.name,
                predicate=component.predicate,
                weight=component.weight,
                max_epochs=component.max_epochs,
                documents_available=documents,
                tokens_available=available,
                requested=requested,
                realised=reachable,
                shortfall=requested - reachable,
                full_epochs=full_epochs,
                documents_used=used + full_epochs * documents,
            )
        )
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    return union, outcomes


def _component_occurrences(
    stage: Stage, index: int, matching: DataFrame, full_epochs: int, remainder: int
) -> tuple[DataFrame, int]:
    epochs = F.explode(F.sequence(F.lit(0), F.lit(full_epochs - 1))) if full_epochs else None
    full = (
        matching.select("doc_id", epochs.alias("epoch"), F.col("length").alias("take"))
        if epochs is not None
        else matching.limit(0).select("doc_id", F.lit(0).alias("epoch"), F.col("length").alias("take"))
    )
    partial_used = 0
    partial = matching.limit(0).select("doc_id", F.lit(full_epochs).alias("epoch"), F.col("length").alias("take"))
    if remainder:
        # The remainder's documents: a seeded order of this epoch, cut where the running token total reaches it.
        keyed = matching.withColumn("order_key", _key(stage, index, F.lit(full_epochs)))
        ranked = with_running_totals(keyed, ["order_key", "doc_id"], "length", before="before", position="rank")
        partial = (
            ranked.where(F.col("before") < remainder)
            .select(
                "doc_id",
                F.lit(full_epochs).alias("epoch"),
                F.least(F.col("length"), F.lit(remainder) - F.col("before")).alias("take"),
            )
            .localCheckpoint()
        )
        partial_used = partial.count()
    rows = full.unionByName(partial).select(
        F.lit(index).alias("component"),
        "doc_id",
        F.col("epoch").cast("int"),
        F.col("take").cast("long"),
    )
    return rows.withColumn("key", _key(stage, index, F.col("epoch"), salt=1)), partial_used


def _key(stage: Stage, component: int, epoch, salt: int = 0):
    """A seeded 64-bit pseudo-random key per (stage, component, epoch, document)."""
    return F.xxhash64(F.lit(stage.seed), F.lit(stage.name), F.lit(component), epoch, F.lit(salt), F.col("doc_id"))


def stream_offsets(occurrences: DataFrame) -> DataFrame:
    """Each occurrence's start in the stage's token stream (`offset`) and its index in it (`position`): occurrences
    in shuffle-key order (ties by component, doc_id, epoch), offsets by a distributed running sum over that order."""
    return with_running_totals(
        occurrences, ["key", "component", "doc_id", "epoch"], "take", before="offset", position="position"
    )
