"""The tokenize stage: documents kept by the filter (silver.documents) and by dedup (silver.dedup) -> gold.tokens,
plus gold.token_stats (tokens and bytes per token by source, kind and language).

Encoding happens in Spark tasks over Arrow batches (tasks.py), with the tokenizer built once per Python worker.
Reruns encode only the documents not yet in gold.tokens (appended; the commit's row count is checked) and delete the
rows of documents that are no longer kept, so gold.tokens always equals the current selection. Reconciliation:
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

from pipelines import reports
from pipelines.lakehouse import Table
from pipelines.stage import StageContext, StageSummary
from pipelines.tables import GOLD_TOKEN_STATS, GOLD_TOKENS, SILVER_DEDUP, SILVER_DOCUMENTS
from pipelines.tokenize.settings import TokenizeConfig
from pipelines.tokenize.tasks import tokenize_partition
from pipelines.tokenize.tokenizer import NAME
from pipelines.tracking import metric_name

_BROADCAST_IDS = 500_000


@dataclass
class TokenizeSummary(StageSummary):
    silver_documents: int
    filter_dropped: int
    dedup_removed: int
    selected: int  # kept by both: what gold.tokens must hold
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
    with steps("select"):
        counts, classified = _classify(silver.read(), dedup.read(), gold.read())
        new_ids = classified.where(F.col("new")).select("doc_id")
        stale = classified.where(F.col("stale")).select("doc_id")
        to_encode, to_delete = counts["new"], counts["stale"]
        selected = silver.read().select("doc_id", "source", "kind", F.col("language").alias("lang"), "text")
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
        if to_encode or to_delete or not stats.exists():
            stats.overwrite(token_stats(gold.read()))
        by_slice = [row.asDict() for row in stats.read().orderBy("source", "kind", "lang").collect()]
    return TokenizeSummary(
        silver_documents=counts["silver"],
        filter_dropped=counts["filter_dropped"],
        dedup_removed=counts["dedup_removed"],
        selected=counts["selected"],
        tokenized=to_encode,
        deleted=to_delete,
        gold_documents=gold.read().count(),
        tokens=encoded["tokens"],
        bytes=encoded["bytes"],
        by_slice=by_slice,
    )


def _classify(silver: DataFrame, dedup: DataFrame, gold: DataFrame) -> tuple[dict[str, int], DataFrame]:
    """Every doc_id of silver.documents and gold.tokens with what it is (one job, ids and flags only; the text is
    read once, later, by the encoding tasks), and the counts of each outcome."""
    decisions = dedup.select("doc_id", F.col("keep").alias("dedup_keep"))
    flags = silver.select(
        "doc_id", F.coalesce("keep", F.lit(False)).alias("filter_keep"), F.lit(True).alias("in_silver")
    )
    present = gold.select("doc_id", F.lit(True).alias("in_gold"))
    joined = flags.join(decisions, "doc_id", "left").join(present, "doc_id", "full")
    in_silver, in_gold = F.coalesce("in_silver", F.lit(False)), F.coalesce("in_gold", F.lit(False))
    selected = in_silver & F.col("filter_keep") & F.coalesce("dedup_keep", F.lit(False))
    classified = joined.select(
        "doc_id",
        in_silver.alias("in_silver"),
        (in_silver & ~F.col("filter_keep")).alias("filter_dropped"),
        (in_silver & F.col("filter_keep") & (F.col("dedup_keep") == F.lit(False))).alias("dedup_removed"),
        (in_silver & F.col("filter_keep") & F.col("dedup_keep").isNull()).alias("undecided"),
        selected.alias("selected"),
        (selected & ~in_gold).alias("new"),
        (in_gold & ~selected).alias("stale"),
    ).localCheckpoint()
    names = ("in_silver", "filter_dropped", "dedup_removed", "undecided", "selected", "new", "stale")
    row = classified.agg(*[F.sum(F.col(name).cast("long")).alias(name) for name in names]).first()
    counts = {name: int(row[name] or 0) for name in names}
    if counts["undecided"]:
        raise RuntimeError(
            f"{SILVER_DOCUMENTS.name} has {counts['undecided']} kept documents that {SILVER_DEDUP.name} has not "
            "decided yet: run the dedup stage first"
        )
    counts["silver"] = counts.pop("in_silver")
    return counts, classified


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
