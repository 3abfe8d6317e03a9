"""The tokenize stage: documents kept by the filter (silver.documents) and by dedup (silver.dedup) -> gold.tokens,
plus gold.token_stats (tokens and bytes per token by source, kind and language).

Encoding happens in Spark tasks over Arrow batches (tasks.py), with the tokenizer built once per Python worker.
Reruns encode only the documents not yet in gold.tokens (appended; the commit's row count is checked) and delete the
rows of documents that are no longer kept, so gold.tokens always equals the current selection. They look only at the
documents whose filter or dedup decision changed since the last run, read from the change data feeds of
silver.documents and silver.dedup (pipelines/changes.py; gold.token_stats records the versions caught up with), and at
every document when a feed cannot say (the first run, a feed turned on later or vacuumed). Reconciliation:
every silver row is tokenized, dropped by the filter (reasons in silver.documents) or removed by dedup (reason:
near duplicate).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import mlflow
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines import changes, reports
from pipelines.lakehouse import Table
from pipelines.stage import StageContext, StageSummary
from pipelines.tables import GOLD_TOKEN_STATS, GOLD_TOKENS, SILVER_DEDUP, SILVER_DOCUMENTS
from pipelines.tokenize.settings import TokenizeConfig
from pipelines.tokenize.tasks import tokenize_partition
from pipelines.tokenize.tokenizer import NAME
from pipelines.tracking import metric_name

_BROADCAST_IDS = 500_000
_STATS_OF = "dataprep.statsOf.gold.tokens"  # gold.token_stats property: the gold.tokens version they describe


@dataclass
class TokenizeSummary(StageSummary):
    read: str  # what of silver.documents and silver.dedup the run read: their changes since the last run, or all
    silver_documents: int
    filter_dropped: int
    dedup_removed: int
    selected: int  # kept by both: what gold.tokens must hold
    examined: int  # documents whose outcome the run looked at: those with a changed decision, or all
    tokenized: int  # encoded by this run
    deleted: int  # gold rows of documents no longer selected
    gold_documents: int
    tokens: int  # tokens this run encoded
    bytes: int  # UTF-8 bytes this run encoded
    by_slice: list[dict] = field(default_factory=list)  # rows of gold.token_stats

    @property
    def reconciles(self) -> bool:
        accounted = self.selected + self.filter_dropped + self.dedup_removed
        return self.silver_documents == accounted and self.gold_documents == self.selected

    def format(self) -> str:
        rate = self.bytes / 1e6 / self.seconds if self.seconds else 0.0
        lines = [
            f"tokenize run {self.run_id} ({self.timing()})",
            f"read {self.read}; examined {self.examined} documents",
            f"silver {self.silver_documents} = gold {self.selected} + filter-dropped {self.filter_dropped} + "
            f"dedup-removed {self.dedup_removed}  {'ok' if self.reconciles else 'MISMATCH'}",
            f"encoded {self.tokenized} documents, {self.tokens} tokens from {self.bytes / 1e6:.1f} MB "
            f"({rate:.1f} MB/s); deleted {self.deleted} no longer kept; {GOLD_TOKENS.name} holds "
            f"{self.gold_documents}",
            "source / kind / lang: documents, tokens, bytes per token",
        ]
        lines += [
            f"  {row['source']} / {row['kind']} / {row['lang']}: {row['documents']}, {row['tokens']}, "
            f"{row['bytes_per_token'] or 0:.2f}"
            for row in self.by_slice
        ]
        return "\n".join(lines)

    def metrics(self) -> dict[str, float]:
        metrics = {k: v for k, v in vars(self).items() if isinstance(v, (int, float)) and k != "seconds"}
        for row in self.by_slice:
            key = (row["source"], row["kind"], row["lang"] or "unknown")
            metrics[metric_name("tokens", *key)] = row["tokens"]
            if row["bytes_per_token"] is not None:
                metrics[metric_name("bytes_per_token", *key)] = row["bytes_per_token"]
        return metrics

    def report(self, context: StageContext) -> None:
        if self.by_slice:
            slices = pd.DataFrame(self.by_slice)
            per_source = slices.groupby("source")["tokens"].sum().sort_values(ascending=False)
            reports.bars(
                list(per_source.index), list(per_source.values), "tokens_by_source", "tokens by source", "tokens"
            )
            reports.log_table(slices, "token_stats")


def run_tokenize(context: StageContext, settings: TokenizeConfig) -> TokenizeSummary:
    lakehouse, steps = context.lakehouse, context.steps
    silver, dedup = lakehouse.table(SILVER_DOCUMENTS), lakehouse.table(SILVER_DEDUP)
    gold, stats = lakehouse.table(GOLD_TOKENS), lakehouse.table(GOLD_TOKEN_STATS)
    mlflow.log_params({f"tokenize.{key}": value for key, value in vars(settings).items()} | {"tokenizer": NAME})
    gold.create_if_missing()
    # Progress is recorded on gold.token_stats, which tokenize rewrites anyway, so that gold.tokens' history holds
    # only the commits that change its rows.
    stats.create_if_missing()
    with steps("select"):
        retain_hours = lakehouse.config.maintain.retain_hours
        sources = [(source, changes.catch_up(stats, source, NAME, retain_hours)) for source in (silver, dedup)]
        read = "; ".join(caught_up.describe(source) for source, caught_up in sources)
        mlflow.set_tag("dataprep.tokenize_read", read)
        # Every read is of the versions caught up to: a commit made meanwhile is the next run's to examine.
        silver_rows, dedup_rows = (source.read(caught_up.end) for source, caught_up in sources)
        if all(caught_up.unchanged for _, caught_up in sources):
            # Neither changed since the last run, when gold.tokens equalled the selection: nothing to look at.
            nothing = silver_rows.select("doc_id").limit(0)
            examined, new_ids, stale, to_encode, to_delete = 0, nothing, nothing, 0, 0
        else:
            scope = None  # every document
            if not any(caught_up.whole for _, caught_up in sources):
                # Only documents whose filter or dedup decision changed since the last run can have become new or
                # stale: gold.tokens equalled the selection then.
                keys = [changes.changed_keys(source, caught_up, "doc_id") for source, caught_up in sources]
                scope = keys[0].unionByName(keys[1]).distinct().localCheckpoint()
            examined, new_ids, stale, to_encode, to_delete = _classify(silver_rows, dedup_rows, gold.read(), scope)
        counts = _totals(silver_rows, dedup_rows)
        selected = silver_rows.select("doc_id", "source", "kind", F.col("language").alias("lang"), "text")
    encoded = {"tokens": 0, "bytes": 0}
    if to_encode:
        with steps("encode"):
            # Broadcasting the ids keeps the text from being shuffled for the join (up to a bounded id count).
            ids = F.broadcast(new_ids) if to_encode <= _BROADCAST_IDS else new_ids
            new = selected.join(ids, "doc_id", "left_semi")
            encoded = _append(gold, new, new_ids, to_encode, settings.chunk_chars, context.run_id)
    if to_delete:
        with steps("delete"):
            gold.merge(stale, "t.doc_id = s.doc_id").when_matched_delete().execute()
    with steps("stats"):
        # Recomputed whenever gold.tokens' rows moved since they were, not only when this run changed them: a run
        # killed between its append and here leaves the next run nothing to encode, and stale stats otherwise.
        # Upkeep commits (`dataprep maintain`) change no row: they do not call for a read of every token.
        computed_from = str(gold.data_version())
        recorded = {}
        if stats.detail().properties.get(_STATS_OF) != computed_from:
            stats.overwrite(token_stats(gold.read()))
            recorded[_STATS_OF] = computed_from
        for source, caught_up in sources:  # after the commits: a run that dies reads the same changes again
            recorded |= changes.progress(source, caught_up, NAME)
        changes.set_properties(stats, recorded)  # one commit, none when nothing moved
        by_slice = [row.asDict() for row in stats.read().orderBy("source", "kind", "lang").collect()]
    return TokenizeSummary(
        read=read,
        silver_documents=counts["silver"],
        filter_dropped=counts["filter_dropped"],
        dedup_removed=counts["dedup_removed"],
        selected=counts["selected"],
        examined=examined,
        tokenized=to_encode,
        deleted=to_delete,
        gold_documents=gold.read().count(),
        tokens=encoded["tokens"],
        bytes=encoded["bytes"],
        by_slice=by_slice,
    )


def _classify(
    silver: DataFrame, dedup: DataFrame, gold: DataFrame, scope: DataFrame | None
) -> tuple[int, DataFrame, DataFrame, int, int]:
    """(documents examined, new ids, stale ids, how many of each) among the documents of `scope` (all when None):
    kept by the filter and by dedup but not in gold.tokens, or in it but no longer kept. One job over ids and flags
    only (the text is read once, later, by the encoding tasks). Refuses to go on when silver.dedup is not the dedup of
    the filter's current decisions: a document it has not decided, or a decision about one the filter no longer keeps
    (its near-duplicates may have been removed in its favour)."""
    flags = silver.select("doc_id", F.coalesce("keep", F.lit(False)).alias("filter_keep"))
    decisions = dedup.select("doc_id", F.col("keep").alias("dedup_keep"))
    present = gold.select("doc_id", F.lit(True).alias("in_gold"))
    if scope is not None:
        flags, decisions, present = (frame.join(scope, "doc_id", "left_semi") for frame in (flags, decisions, present))
    joined = flags.join(decisions, "doc_id", "full").join(present, "doc_id", "full")
    filter_keep, dedup_keep = F.coalesce("filter_keep", F.lit(False)), F.col("dedup_keep")
    selected = filter_keep & F.coalesce(dedup_keep, F.lit(False))
    in_gold = F.coalesce("in_gold", F.lit(False))
    classified = joined.select(
        "doc_id",
        (filter_keep & dedup_keep.isNull()).alias("undecided"),
        (~filter_keep & dedup_keep.isNotNull()).alias("outdated"),
        (selected & ~in_gold).alias("new"),
        (in_gold & ~selected).alias("stale"),
    ).localCheckpoint()
    names = ("undecided", "outdated", "new", "stale")
    sums = [F.sum(F.col(name).cast("long")).alias(name) for name in names]
    row = classified.agg(F.count("*").alias("examined"), *sums).first()
    counts = {name: int(row[name] or 0) for name in names}
    if counts["undecided"] or counts["outdated"]:
        raise RuntimeError(
            f"{SILVER_DEDUP.name} is not the dedup of the filter's current decisions ({counts['undecided']} kept "
            f"documents it has not decided, {counts['outdated']} decided that the filter no longer keeps): run the "
            "dedup stage first"
        )
    new, stale = (classified.where(F.col(name)).select("doc_id") for name in ("new", "stale"))
    return row["examined"], new, stale, counts["new"], counts["stale"]


def _totals(silver: DataFrame, dedup: DataFrame) -> dict[str, int]:
    """The reconciliation's counts, each over one table (no join): silver.dedup holds exactly the documents the
    filter keeps (_classify checks it), so its decisions split them into selected and removed."""
    documents = silver.agg(F.count("*"), F.sum((~F.coalesce("keep", F.lit(False))).cast("long"))).first()
    decided = dedup.agg(F.sum(F.col("keep").cast("long")), F.sum((~F.col("keep")).cast("long"))).first()
    return {
        "silver": int(documents[0]),
        "filter_dropped": int(documents[1] or 0),
        "selected": int(decided[0] or 0),
        "dedup_removed": int(decided[1] or 0),
    }


def _append(
    gold: Table, new: DataFrame, new_ids: DataFrame, expected: int, chunk_chars: int, run_id: str
) -> dict[str, int]:
    """Appends the encoded new documents (an append, not a MERGE: `new` holds only ids absent from gold.tokens, so
    the join a MERGE would add buys nothing) and checks the row count of its own commit, found by the run id it
    carries as commit metadata (the table's latest commit may be another writer's)."""
    task = functools.partial(tokenize_partition, chunk_chars=chunk_chars)
    marker = f"tokenize {run_id}"
    gold.append(new.mapInArrow(task, GOLD_TOKENS.spark_schema()), commit_metadata=marker)
    appended = gold.commit_metrics(marker).get("numOutputRows", -1)
    if int(appended) != expected:
        raise RuntimeError(f"{gold.label}: the append wrote {appended} rows for {expected} new documents")
    row = (
        gold.read()
        .join(new_ids, "doc_id", "left_semi")
        .agg(F.sum("n_tokens").alias("tokens"), F.sum("n_bytes").alias("bytes"))
        .first()
    )
    return {"tokens": int(row["tokens"] or 0), "bytes": int(row["bytes"] or 0)}


def token_stats(tokens: DataFrame) -> DataFrame:
    grouped = tokens.groupBy("source", "kind", "lang").agg(
        F.count("*").alias("documents"), F.sum("n_tokens").alias("tokens"), F.sum("n_bytes").alias("bytes")
    )
    per_token = F.when(F.col("tokens") > 0, F.col("bytes") / F.col("tokens"))
    return GOLD_TOKEN_STATS.conform(grouped.withColumn("bytes_per_token", per_token))
