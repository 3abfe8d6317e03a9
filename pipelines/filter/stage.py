"""The filter stage: bronze.documents -> silver.documents (normalised, redacted text; signals; quality; decisions).

Incremental and idempotent: signals are computed for the bronze documents silver has not seen (by doc_id) and
recomputed for the rows whose signals are outdated (a signal family added or changed since, see filter/signals.py),
rows whose bronze document is gone are removed, and decisions are re-derived for every row from stored signals,
writing only the rows whose decision changed. Every bronze document has exactly one silver row, kept or dropped with
its reasons: silver rows = kept + dropped, and bronze rows = silver rows after each run.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import mlflow
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines import reports, storage
from pipelines.filter import quality
from pipelines.filter.decide import with_decisions, with_exact_duplicates
from pipelines.filter.settings import FilterConfig
from pipelines.filter.signals import FAMILIES, current_versions
from pipelines.filter.tasks import COMPUTED_COLUMNS, signals_partition
from pipelines.lakehouse import Lakehouse, Table
from pipelines.stage import StageContext, StageSummary
from pipelines.storage import Storage
from pipelines.tables import BRONZE_DOCUMENTS, SILVER_DOCUMENTS
from pipelines.tracking import metric_name

_BRONZE_COLUMNS = ["doc_id", "source", "kind", "locator", "text", "language"]
_DECISION_COLUMNS = ["duplicate_of", "keep", "drop_reasons"]


@dataclass
class FilterSummary(StageSummary):
    bronze_rows: int
    silver_rows: int
    computed: int  # new documents whose signals this run computed
    recomputed: int  # silver rows whose outdated signals this run computed again
    removed: int  # silver rows whose bronze document is gone
    kept: int
    dropped: int
    drop_reasons: dict[str, int]  # a document dropped by several rules counts under each
    flipped_to_drop: int
    flipped_to_keep: int
    pii_redactions: dict[str, int]
    languages: dict[str, int]
    quality_model: str | None
    quality_label_origin: str | None

    @property
    def reconciles(self) -> bool:
        return self.bronze_rows == self.silver_rows == self.kept + self.dropped

    def format(self) -> str:
        lines = [
            f"filter run {self.run_id} ({self.timing()})",
            f"bronze {self.bronze_rows} = silver {self.silver_rows} = kept {self.kept} + dropped {self.dropped}"
            f"  {'ok' if self.reconciles else 'MISMATCH'}",
            f"signals computed for {self.computed} new documents, recomputed for {self.recomputed} outdated rows; "
            f"{self.removed} stale rows removed; decisions flipped: {self.flipped_to_drop} keep->drop, "
            f"{self.flipped_to_keep} drop->keep",
        ]
        for reason, count in sorted(self.drop_reasons.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"  dropped by {reason}: {count}")
        if self.pii_redactions:
            lines.append(f"redacted: {dict(sorted(self.pii_redactions.items()))}")
        top = ", ".join(f"{lang} {n}" for lang, n in Counter(self.languages).most_common(8))
        lines.append(f"languages: {top}")
        if self.quality_model:
            lines.append(f"quality model {self.quality_model} (labels: {self.quality_label_origin})")
        return "\n".join(lines)

    def metrics(self) -> dict[str, float]:
        names = ("bronze_rows", "silver_rows", "computed", "recomputed", "removed", "kept", "dropped",
                 "flipped_to_drop", "flipped_to_keep")  # fmt: skip
        metrics: dict[str, float] = {name: getattr(self, name) for name in names}
        metrics.update({metric_name("dropped_by", reason): n for reason, n in self.drop_reasons.items()})
        metrics.update({metric_name("pii", kind): n for kind, n in self.pii_redactions.items()})
        return metrics

    def report(self, context: StageContext) -> None:
        documents = context.lakehouse.table(SILVER_DOCUMENTS).read()
        reports.histogram(documents, "quality_score", 40, "quality_score", "fastText quality score, all documents")
        reports.histogram(documents, "n_chars", 40, "length", "document length (characters)", log_x=True)
        reasons = sorted(self.drop_reasons.items(), key=lambda item: -item[1])
        if reasons:
            reports.log_table(pd.DataFrame(reasons, columns=["rule", "documents"]), "drops_by_rule")
            reports.bars(
                [r for r, _ in reasons], [n for _, n in reasons], "drops_by_rule", "documents dropped by rule",
                "documents",
            )  # fmt: skip
        languages = documents.groupBy("kind", "language").agg(
            F.count("*").alias("documents"), F.sum(F.col("keep").cast("long")).alias("kept")
        )
        reports.log_table(languages.orderBy(F.desc("documents")).toPandas(), "languages")


def run_filter(context: StageContext, settings: FilterConfig, retrain_quality: bool = False) -> FilterSummary:
    lakehouse, steps = context.lakehouse, context.steps
    bronze, silver = lakehouse.table(BRONZE_DOCUMENTS), lakehouse.table(SILVER_DOCUMENTS)
    silver.create_if_missing()
    params = {f"rule.{r.name}": r.describe() for r in settings.rules if r.enabled}
    params["languages"] = str(settings.languages)
    params.update({f"signals.{family.name}": family.version for family in FAMILIES if family.versioned})
    mlflow.log_params(params)
    with steps("signals"):
        removed = _remove_stale(silver, bronze)
        computed, recomputed = _compute_signals(lakehouse, bronze, silver, context.run_id, context.started_at)
    with steps("decide"):
        _apply_decisions(silver, settings)  # the bootstrap labels of the quality model are these decisions
    with steps("quality"):
        model = _quality_model(lakehouse, bronze, silver, settings, context.run_id, retrain_quality)
    with steps("decide"):
        flips = _apply_decisions(silver, settings)
    return _summarize(bronze, silver, computed, recomputed, removed, flips, model)


def redecide(lakehouse: Lakehouse, settings: FilterConfig, dry_run: bool = False) -> tuple[int, int, dict[str, int]]:
    """Applies the configured rules to the stored signals only; returns (keep->drop, drop->keep, drops by reason)."""
    silver = lakehouse.table(SILVER_DOCUMENTS)
    if dry_run:
        decided = with_decisions(with_exact_duplicates(silver.read()), settings)
        return _count_flips(silver.read(), decided) + (_reasons(decided),)
    flips = _apply_decisions(silver, settings)
    return flips + (_reasons(silver.read()),)


def _remove_stale(silver: Table, bronze: Table) -> int:
    """Deletes silver rows whose doc_id left bronze (a changed document has a new doc_id)."""
    stale = silver.read().select("doc_id").join(bronze.read().select("doc_id"), "doc_id", "left_anti")
    if stale.isEmpty():
        return 0
    merge = silver.delta().alias("t").merge(stale.alias("s"), "t.doc_id = s.doc_id").whenMatchedDelete()
    return int(merge.execute().first()["num_deleted_rows"])


def signals_up_to_date(table: str = "") -> Column:
    """True for a silver row whose `signal_versions` holds today's version of every family for its kind (`table`:
    the alias that qualifies the columns, inside a MERGE)."""

    def column(name: str) -> Column:
        return F.col(f"{table}.{name}" if table else name)

    kinds = sorted({kind for family in FAMILIES for kind in family.kinds})
    current = F.lit(False)
    for kind in kinds:
        recorded = [
            F.coalesce(column("signal_versions")[name] == F.lit(version), F.lit(False))
            for name, version in current_versions(kind).items()
        ]
        current = F.when(column("kind") == kind, functools.reduce(lambda a, b: a & b, recorded)).otherwise(current)
    return current


def _compute_signals(lakehouse: Lakehouse, bronze: Table, silver: Table, run_id: str, at: datetime) -> tuple[int, int]:
    """Signals of the bronze documents without an up-to-date silver row: inserted when new, replacing the outdated
    ones otherwise (their quality score too, so it is scored again on the new row). Returns (inserted, replaced)."""
    current = silver.read().where(signals_up_to_date()).select("doc_id")
    pending = bronze.read().select(*_BRONZE_COLUMNS).join(current, "doc_id", "left_anti")
    staging = lakehouse.staging(f"filter_{run_id}")
    try:
        staging.overwrite(pending.mapInArrow(signals_partition, SILVER_DOCUMENTS.spark_schema(COMPUTED_COLUMNS)))
        new_rows = staging.read()
        if new_rows.isEmpty():
            return 0, 0
        rows = SILVER_DOCUMENTS.conform(
            new_rows.select(
                *COMPUTED_COLUMNS,
                F.lit(None).alias("quality_score"),
                F.lit(None).alias("quality_model"),
                F.lit(None).alias("duplicate_of"),
                F.lit(None).alias("keep"),
                F.lit(None).alias("drop_reasons"),
                F.lit(run_id).alias("run_id"),
                F.lit(at).alias("processed_at"),
            )
        )
        # Decisions stay as they were until _apply_decisions re-derives them from the new signals. A row another
        # filter run brought up to date meanwhile is left alone (and not counted).
        replaced = [*COMPUTED_COLUMNS, "quality_score", "quality_model", "run_id", "processed_at"]
        merge = (
            silver.delta()
            .alias("t")
            .merge(rows.alias("s"), "t.doc_id = s.doc_id")
            .whenMatchedUpdate(condition=~signals_up_to_date("t"), set={name: f"s.{name}" for name in replaced})
            .whenNotMatchedInsertAll()
        )
        metrics = merge.execute().first()
        return int(metrics["num_inserted_rows"]), int(metrics["num_updated_rows"])
    finally:
        staging.drop()


def _apply_decisions(silver: Table, settings: FilterConfig) -> tuple[int, int]:
    """Re-derives every decision from stored signals and writes the rows that changed; returns the flips."""
    current = silver.read()
    decided = with_decisions(with_exact_duplicates(current), settings).select(
        "doc_id", *[F.col(c).alias(f"new_{c}") for c in _DECISION_COLUMNS]
    )
    changed = decided.join(current.select("doc_id", *_DECISION_COLUMNS), "doc_id").where(
        ~F.col("new_keep").eqNullSafe(F.col("keep"))
        | ~F.col("new_drop_reasons").eqNullSafe(F.col("drop_reasons"))
        | ~F.col("new_duplicate_of").eqNullSafe(F.col("duplicate_of"))
    )
    flips = changed.agg(*_flip_counts(), F.count("*").alias("changed")).first()
    if flips["changed"]:
        updates = changed.select("doc_id", *[F.col(f"new_{c}").alias(c) for c in _DECISION_COLUMNS])
        (
            silver.delta()
            .alias("t")
            .merge(updates.alias("s"), "t.doc_id = s.doc_id")
            .whenMatchedUpdate(set={c: f"s.{c}" for c in _DECISION_COLUMNS})
            .execute()
        )
    return int(flips["to_drop"] or 0), int(flips["to_keep"] or 0)


def _flip_counts() -> tuple[Column, Column]:
    """Over rows holding the stored `keep` and the re-derived `new_keep`: documents newly dropped and newly kept."""
    return (
        F.sum(F.when(F.col("keep") & ~F.col("new_keep"), 1).otherwise(0)).alias("to_drop"),
        F.sum(F.when(~F.col("keep") & F.col("new_keep"), 1).otherwise(0)).alias("to_keep"),
    )


def _count_flips(current: DataFrame, decided: DataFrame) -> tuple[int, int]:
    joined = decided.select("doc_id", F.col("keep").alias("new_keep")).join(current.select("doc_id", "keep"), "doc_id")
    row = joined.agg(*_flip_counts()).first()
    return int(row["to_drop"] or 0), int(row["to_keep"] or 0)


def _reasons(frame: DataFrame) -> dict[str, int]:
    exploded = frame.select(F.explode("drop_reasons").alias("reason")).groupBy("reason").count()
    return {row["reason"]: row["count"] for row in exploded.collect()}


def _quality_model(
    lakehouse: Lakehouse, bronze: Table, silver: Table, settings: FilterConfig, run_id: str, retrain: bool
) -> quality.TrainedModel | None:
    """Trains the classifier when there is none yet (or when asked), then scores every row it has not scored."""
    store = lakehouse.storage
    models_dir = storage.join(lakehouse.config.root, "models", "quality")
    current_file = storage.join(models_dir, "current")
    if retrain or not store.exists(current_file):
        rows, origin = quality.labelled_documents(silver.read(), bronze.read(), settings.quality)
        directory = storage.join(lakehouse.config.root, "staging", f"quality_training_{run_id}")
        path = storage.join(models_dir, f"{run_id}.bin")
        try:
            training_file, positives, negatives = quality.write_training_file(rows, settings.quality, directory, store)
            if min(positives, negatives) < 5:
                print(f"quality model: not trained, too few labelled documents ({positives} hq, {negatives} lq)")
                return None
            # fastText trains on the driver from a local copy; the model goes to storage, where executors find it.
            with storage.local_scratch() as scratch:
                local_training, local_model = f"{scratch}/training.txt", f"{scratch}/{run_id}.bin"
                store.download(training_file, local_training)
                quality.train(local_training, settings.quality, local_model)
                store.upload(local_model, path)
                mlflow.log_artifact(local_model, artifact_path="quality_model")
        finally:
            store.delete_tree(directory)
        store.write_text(current_file, f"{run_id}\n{origin}\n{positives}\n{negatives}\n")
        mlflow.log_params({"quality.labels": origin, "quality.positives": positives, "quality.negatives": negatives})
        if not settings.quality.has_labels:
            print(f"quality model: no labelled data configured, labels {origin} ({positives} hq, {negatives} lq)")
    version, origin, positives, negatives = store.read_text(current_file).splitlines()
    path = storage.join(models_dir, f"{version}.bin")
    model = quality.TrainedModel(version, path, origin, int(positives), int(negatives))
    _score(silver, model, store)
    return model


def _score(silver: Table, model: quality.TrainedModel, store: Storage) -> None:
    unscored = silver.read().where(~F.col("quality_model").eqNullSafe(model.version)).select("doc_id", "text")
    if unscored.isEmpty():
        return
    scorer = functools.partial(quality.score_partition, model_uri=model.path, store=store)
    scores = unscored.mapInArrow(scorer, "doc_id string, quality_score double")
    new_signals = F.map_concat(
        F.map_filter("t.signals", lambda key, _: key != "quality_score"),
        F.create_map(F.lit("quality_score"), F.col("s.quality_score")),
    )
    (
        silver.delta()
        .alias("t")
        .merge(scores.alias("s"), "t.doc_id = s.doc_id")
        .whenMatchedUpdate(
            set={"quality_score": "s.quality_score", "quality_model": F.lit(model.version), "signals": new_signals}
        )
        .execute()
    )


def _summarize(
    bronze: Table,
    silver: Table,
    computed: int,
    recomputed: int,
    removed: int,
    flips: tuple[int, int],
    model: quality.TrainedModel | None,
) -> FilterSummary:
    rows = silver.read()
    totals = rows.agg(F.count("*").alias("rows"), F.sum(F.when(F.col("keep"), 1).otherwise(0)).alias("kept")).first()
    pii = rows.select(F.explode("pii_counts")).groupBy("key").agg(F.sum("value").alias("n")).collect()
    languages = rows.groupBy("language").count().collect()
    return FilterSummary(
        bronze_rows=bronze.read().count(),
        silver_rows=totals["rows"],
        computed=computed,
        recomputed=recomputed,
        removed=removed,
        kept=int(totals["kept"] or 0),
        dropped=totals["rows"] - int(totals["kept"] or 0),
        drop_reasons=_reasons(rows),
        flipped_to_drop=flips[0],
        flipped_to_keep=flips[1],
        pii_redactions={row["key"]: int(row["n"]) for row in pii},
        languages={row["language"] or "und": row["count"] for row in languages},
        quality_model=model.version if model else None,
        quality_label_origin=model.label_origin if model else None,
    )
