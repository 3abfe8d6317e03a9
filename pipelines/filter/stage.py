"""The filter stage: bronze.documents -> silver.documents (normalised, redacted text; signals; quality; decisions).

Incremental and idempotent: signals are computed only for bronze documents silver has not seen (by doc_id), rows
whose bronze document is gone are removed, and decisions are re-derived for every row from stored signals, writing
only the rows whose decision changed. Every bronze document has exactly one silver row, kept or dropped with its
reasons: silver rows = kept + dropped, and bronze rows = silver rows after each run.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

import mlflow
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from pipelines import reports
from pipelines.config import PipelineConfig
from pipelines.faults import failpoint
from pipelines.filter import quality
from pipelines.filter.decide import with_decisions, with_exact_duplicates
from pipelines.filter.tasks import signals_partition
from pipelines.lakehouse import Lakehouse, Table
from pipelines.schemas import SILVER_DOCUMENTS
from pipelines.tracking import metric_name, stage_run

BRONZE = "bronze.documents"
SILVER = "silver.documents"
_BRONZE_COLUMNS = ["doc_id", "source", "kind", "locator", "text", "language"]
_SIGNAL_COLUMNS = [
    "doc_id", "source", "kind", "locator", "text", "n_chars", "content_hash", "language", "language_score", "signals",
    "pii_counts", "signal_error",
]  # fmt: skip
_DECISION_COLUMNS = ["duplicate_of", "keep", "drop_reasons"]


@dataclass
class FilterSummary:
    run_id: str
    bronze_rows: int
    silver_rows: int
    computed: int  # documents whose signals this run computed
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
    seconds: float
    step_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        return self.bronze_rows == self.silver_rows == self.kept + self.dropped

    def format(self) -> str:
        lines = [
            f"filter run {self.run_id} ({self.seconds:.1f} s)",
            f"bronze {self.bronze_rows} = silver {self.silver_rows} = kept {self.kept} + dropped {self.dropped}"
            f"  {'ok' if self.reconciles else 'MISMATCH'}",
            f"signals computed for {self.computed} new documents; {self.removed} stale rows removed; decisions "
            f"flipped: {self.flipped_to_drop} keep->drop, {self.flipped_to_keep} drop->keep",
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


def run_filter(spark: SparkSession, config: PipelineConfig, retrain_quality: bool = False) -> FilterSummary:
    lakehouse = Lakehouse(spark, config.lakehouse)
    bronze, silver = lakehouse.table(BRONZE), lakehouse.table(SILVER)
    if not bronze.exists():
        raise FileNotFoundError(f"{bronze.label} does not exist yet: run the ingest stage first")
    silver.create_if_missing(SILVER_DOCUMENTS, "Normalised, redacted documents with quality signals and decisions")
    params = {f"rule.{r.name}": r.describe() for r in config.filter.rules if r.enabled}
    params["languages"] = str(config.filter.languages)
    with stage_run(config, "filter", params) as run:
        started = time.monotonic()
        run_id = run.info.run_id
        processed_at = datetime.now(timezone.utc).replace(tzinfo=None)
        steps: dict[str, float] = {}
        step_started = time.monotonic()

        def lap(name: str) -> None:
            nonlocal step_started
            steps[name] = time.monotonic() - step_started
            step_started = time.monotonic()

        removed = _remove_stale(silver, bronze)
        computed = _compute_new_signals(lakehouse, bronze, silver, run_id, processed_at)
        lap("signals")
        failpoint("filter.decide")
        _apply_decisions(silver, config)  # the bootstrap labels of the quality model are these decisions
        model = _quality_model(lakehouse, bronze, silver, config, run_id, retrain_quality)
        lap("quality")
        flips = _apply_decisions(silver, config)
        lap("decide")
        summary = _summarize(bronze, silver, run_id, computed, removed, flips, model, time.monotonic() - started)
        summary.step_seconds = steps
        _log(summary)
        _report(bronze, silver, summary)
    return summary


def _report(bronze: Table, silver: Table, summary: FilterSummary) -> None:
    """Plots, tables and the summary page of the run (see pipelines/reports.py)."""
    reports.log_inputs([bronze])
    documents = silver.read()
    reports.histogram(documents, "quality_score", 40, "quality_score", "fastText quality score, all documents")
    reports.histogram(documents, "n_chars", 40, "length", "document length (characters)", log_x=True)
    reasons = sorted(summary.drop_reasons.items(), key=lambda item: -item[1])
    if reasons:
        reports.log_table(pd.DataFrame(reasons, columns=["rule", "documents"]), "drops_by_rule")
        reports.bars(
            [r for r, _ in reasons], [n for _, n in reasons], "drops_by_rule", "documents dropped by rule", "documents"
        )
    languages = documents.groupBy("kind", "language").agg(
        F.count("*").alias("documents"), F.sum(F.col("keep").cast("long")).alias("kept")
    )
    reports.log_table(languages.orderBy(F.desc("documents")).toPandas(), "languages")
    reports.log_summary_page("filter", summary.format())


def redecide(spark: SparkSession, config: PipelineConfig, dry_run: bool = False) -> tuple[int, int, dict[str, int]]:
    """Applies the configured rules to the stored signals only; returns (keep->drop, drop->keep, drops by reason)."""
    silver = Lakehouse(spark, config.lakehouse).table(SILVER)
    if dry_run:
        decided = with_decisions(with_exact_duplicates(silver.read()), config.filter)
        return _count_flips(silver.read(), decided) + (_reasons(decided),)
    flips = _apply_decisions(silver, config)
    return flips + (_reasons(silver.read()),)


def _remove_stale(silver: Table, bronze: Table) -> int:
    """Deletes silver rows whose doc_id left bronze (a changed document has a new doc_id)."""
    stale = silver.read().select("doc_id").join(bronze.read().select("doc_id"), "doc_id", "left_anti")
    if stale.isEmpty():
        return 0
    silver.delta().alias("t").merge(stale.alias("s"), "t.doc_id = s.doc_id").whenMatchedDelete().execute()
    return _last_metric(silver, "numTargetRowsDeleted")


def _compute_new_signals(lakehouse: Lakehouse, bronze: Table, silver: Table, run_id: str, at: datetime) -> int:
    pending = bronze.read().select(*_BRONZE_COLUMNS).join(silver.read().select("doc_id"), "doc_id", "left_anti")
    staging = lakehouse.table(f"staging.filter_{run_id}")
    try:
        computed = pending.mapInArrow(signals_partition, _signals_struct())
        staging.overwrite(computed)
        new_rows = staging.read()
        count = new_rows.count()
        if count:
            rows = new_rows.select(
                *_SIGNAL_COLUMNS,
                F.lit(None).cast("double").alias("quality_score"),
                F.lit(None).cast("string").alias("quality_model"),
                F.lit(None).cast("string").alias("duplicate_of"),
                F.lit(None).cast("boolean").alias("keep"),
                F.lit(None).cast("array<string>").alias("drop_reasons"),
                F.lit(run_id).alias("run_id"),
                F.lit(at).cast("timestamp").alias("processed_at"),
            )
            rows = rows.select(*[F.col(f.name).cast(f.dataType) for f in SILVER_DOCUMENTS.fields])
            silver.delta().alias("t").merge(rows.alias("s"), "t.doc_id = s.doc_id").whenNotMatchedInsertAll().execute()
        return count
    finally:
        staging.drop()


def _signals_struct() -> StructType:
    names = set(_SIGNAL_COLUMNS)
    return StructType([f for f in SILVER_DOCUMENTS.fields if f.name in names])


def _apply_decisions(silver: Table, config: PipelineConfig) -> tuple[int, int]:
    """Re-derives every decision from stored signals and writes the rows that changed; returns the flips."""
    current = silver.read()
    decided = with_decisions(with_exact_duplicates(current), config.filter).select(
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
    lakehouse: Lakehouse, bronze: Table, silver: Table, config: PipelineConfig, run_id: str, retrain: bool
) -> quality.TrainedModel | None:
    """Trains the classifier when there is none yet (or when asked), then scores every row it has not scored."""
    models_dir = os.path.join(config.lakehouse.root, "models", "quality")
    current_file = os.path.join(models_dir, "current")
    if retrain or not os.path.exists(current_file):
        rows, origin = quality.labelled_documents(silver.read(), bronze.read(), config.filter.quality)
        directory = os.path.join(config.lakehouse.root, "staging", f"quality_training_{run_id}")
        try:
            training_file, positives, negatives = quality.write_training_file(rows, config.filter.quality, directory)
            if min(positives, negatives) < 5:
                print(f"quality model: not trained, too few labelled documents ({positives} hq, {negatives} lq)")
                return None
            path = os.path.join(models_dir, f"{run_id}.bin")
            quality.train(training_file, config.filter.quality, path)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        with open(current_file, "w", encoding="utf-8") as handle:
            handle.write(f"{run_id}\n{origin}\n{positives}\n{negatives}\n")
        mlflow.log_artifact(path, artifact_path="quality_model")
        mlflow.log_params({"quality.labels": origin, "quality.positives": positives, "quality.negatives": negatives})
        if not config.filter.quality.has_labels:
            print(f"quality model: no labelled data configured, labels {origin} ({positives} hq, {negatives} lq)")
    with open(current_file, encoding="utf-8") as handle:
        version, origin, positives, negatives = handle.read().splitlines()
    path = os.path.join(models_dir, f"{version}.bin")
    model = quality.TrainedModel(version, path, origin, int(positives), int(negatives))
    _score(silver, model)
    return model


def _score(silver: Table, model: quality.TrainedModel) -> None:
    unscored = silver.read().where(~F.col("quality_model").eqNullSafe(model.version)).select("doc_id", "text")
    if unscored.isEmpty():
        return
    scorer = functools.partial(quality.score_partition, model_path=model.path)
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
    run_id: str,
    computed: int,
    removed: int,
    flips: tuple[int, int],
    model: quality.TrainedModel | None,
    seconds: float,
) -> FilterSummary:
    rows = silver.read()
    totals = rows.agg(F.count("*").alias("rows"), F.sum(F.when(F.col("keep"), 1).otherwise(0)).alias("kept")).first()
    pii = rows.select(F.explode("pii_counts")).groupBy("key").agg(F.sum("value").alias("n")).collect()
    languages = rows.groupBy("language").count().collect()
    return FilterSummary(
        run_id=run_id,
        bronze_rows=bronze.read().count(),
        silver_rows=totals["rows"],
        computed=computed,
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
        seconds=seconds,
    )


def _log(summary: FilterSummary) -> None:
    metrics = {
        "bronze_rows": summary.bronze_rows,
        "silver_rows": summary.silver_rows,
        "computed": summary.computed,
        "removed": summary.removed,
        "kept": summary.kept,
        "dropped": summary.dropped,
        "flipped_to_drop": summary.flipped_to_drop,
        "flipped_to_keep": summary.flipped_to_keep,
        "seconds": summary.seconds,
    }
    metrics.update({metric_name("dropped_by", reason): n for reason, n in summary.drop_reasons.items()})
    metrics.update({metric_name("pii", kind): n for kind, n in summary.pii_redactions.items()})
    metrics.update({metric_name("seconds", step): s for step, s in summary.step_seconds.items()})
    mlflow.log_metrics(metrics)
    mlflow.log_dict(vars(summary), "filter_summary.json")
    mlflow.set_tag("dataprep.reconciles", str(summary.reconciles).lower())


def _last_metric(table: Table, name: str) -> int:
    metrics = table.delta().history(1).select("operationMetrics").first()[0]
    return int(metrics.get(name, 0))
