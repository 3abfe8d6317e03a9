"""The ingest stage: configured sources -> bronze.documents + bronze.quarantine.

Files are listed on the driver, read by Spark tasks (`mapInArrow`, one Arrow batch at a time, nothing collected to
the driver but counts), and MERGEd into Delta on (source, locator): a new document is inserted, a changed one (its
doc_id differs) is updated, an unchanged one is left alone. Rerunning on the same input therefore commits nothing.

Every record read is accounted for, per source: read = new + updated + unchanged + quarantined.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import mlflow
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from pipelines import spark_compat
from pipelines.ingest.planning import SourcePlan, WorkUnit, plan_source
from pipelines.ingest.settings import IngestConfig, SourceConfig, source_named
from pipelines.ingest.tasks import ARROW_RECORD_SCHEMA, read_partition
from pipelines.lakehouse import Table, retry_on_conflict, sql_string
from pipelines.stage import StageContext, StageSummary
from pipelines.storage import Storage
from pipelines.tables import BRONZE_DOCUMENTS, BRONZE_QUARANTINE, spark_schema
from pipelines.tracking import metric_name

# What a task emits for each record read: a document or a rejection, in one schema.
RECORD_SCHEMA = spark_schema(ARROW_RECORD_SCHEMA)
_UNIT_FIELDS = list(WorkUnit.__dataclass_fields__)
_UNIT_SCHEMA = StructType(
    [StructField(name, LongType() if name in ("size", "start", "end") else StringType(), True) for name in _UNIT_FIELDS]
)


@dataclass
class SourceCounts:
    read: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    input_bytes: int = 0
    skipped_directories: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def ingested(self) -> int:
        return self.new + self.updated

    @property
    def reconciles(self) -> bool:
        return self.read == self.new + self.updated + self.unchanged + self.quarantined


@dataclass
class IngestSummary(StageSummary):
    sources: dict[str, SourceCounts]
    documents_version: int
    quarantine_version: int
    documents_written: int  # rows the MERGE inserted or updated, from the Delta commit's own metrics

    @property
    def reconciles(self) -> bool:
        """Every record is accounted for, and the table changed by exactly the documents classed new or updated.

        (Concurrent ingests of the same files re-classify after a conflict, so each run counts what it wrote.)
        """
        expected = sum(c.ingested for c in self.sources.values())
        return all(c.reconciles for c in self.sources.values()) and self.documents_written == expected

    def format(self) -> str:
        header = f"{'source':<24}{'read':>10}{'new':>10}{'updated':>10}{'unchanged':>11}{'quarantined':>13}  check"
        lines = [f"ingest run {self.run_id} ({self.timing()})", header, "-" * len(header)]
        for name, c in sorted(self.sources.items()):
            check = "ok" if c.reconciles else "MISMATCH"
            lines.append(
                f"{name:<24}{c.read:>10}{c.new:>10}{c.updated:>10}{c.unchanged:>11}{c.quarantined:>13}  {check}"
            )
            for reason, count in sorted(c.quarantine_reasons.items()):
                lines.append(f"{'':<26}quarantined {reason}: {count}")
        lines.append(
            f"{BRONZE_DOCUMENTS.name} v{self.documents_version} ({self.documents_written} rows written), "
            f"{BRONZE_QUARANTINE.name} v{self.quarantine_version}"
        )
        return "\n".join(lines)

    def metrics(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        totals: dict[str, int] = defaultdict(int)
        for name, c in self.sources.items():
            for key in ("read", "new", "updated", "unchanged", "quarantined", "input_bytes", "skipped_directories"):
                metrics[metric_name("source", name, key)] = getattr(c, key)
                totals[key] += getattr(c, key)
            for reason, count in c.quarantine_reasons.items():
                metrics[metric_name("source", name, "quarantined", reason)] = count
        metrics.update({metric_name("total", key): value for key, value in totals.items()})
        if self.seconds > 0:
            metrics["mb_per_s"] = totals["input_bytes"] / 1e6 / self.seconds
        return metrics


def run_ingest(
    context: StageContext, sources: tuple[SourceConfig, ...], settings: IngestConfig, only: list[str] | None = None
) -> IngestSummary:
    """Ingests the configured sources (or those named in `only`) and returns the reconciled counts."""
    selected = [source_named(sources, name) for name in only] if only else list(sources)
    # A missing path fails here, before Spark reads anything.
    plans = [plan_source(source, settings, context.lakehouse.storage) for source in selected]
    documents = context.lakehouse.table(BRONZE_DOCUMENTS)
    quarantine = context.lakehouse.table(BRONZE_QUARANTINE)
    documents.create_if_missing()
    quarantine.create_if_missing()

    params = {f"source.{s.name}": f"{s.format} {list(s.paths)}" for s in selected}
    params.update({f"ingest.{k}": v for k, v in vars(settings).items()})
    mlflow.log_params(params)
    run_id, ingested_at, steps = context.run_id, context.started_at, context.steps
    # Read once into a staging table: every later step (counts, MERGE) scans it instead of the raw files.
    staging = context.lakehouse.staging(f"ingest_{run_id}")
    try:
        with steps("read"):
            staging.overwrite(read_records(context.spark, plans, settings, context.lakehouse.storage))
        records = staging.read()
        id_sources = [source.name for source in selected if source.id_field]
        kept, rejected = separate_duplicate_locators(records, id_sources)

        # Only the rows of the sources being ingested are read and rewritten: with the table clustered by source,
        # Delta skips every other source's files (by their min/max statistics) in the scan and in the MERGE.
        ingesting = F.col("source").isin([source.name for source in selected])
        target_scope = f"t.source IN ({', '.join(sql_string(source.name) for source in selected)})"

        def classify_and_merge() -> tuple[dict[str, SourceCounts], int]:
            # Classified against the table as it is now: after a conflict, against the other run's rows too.
            classified = classify_against(kept, documents.read().where(ingesting))
            with steps("classify"):
                counts = _count(plans, records, classified, rejected)
            written = 0
            if sum(c.ingested for c in counts.values()):
                updated = sum(c.updated for c in counts.values())
                with steps("merge_documents"):
                    written = _merge_documents(documents, classified, run_id, ingested_at, updated, target_scope)
            return counts, written

        # A concurrent run may commit some of these documents between our classification and our MERGE (which
        # then leaves them alone, so no row is doubled, but writes fewer rows than classified): classify again
        # until the counts and the commit agree. Rows this run wrote in an earlier attempt then count as
        # unchanged.
        counts, written = retry_on_conflict(
            classify_and_merge,
            f"ingest into {documents.label}",
            again=lambda result: result[1] != sum(c.ingested for c in result[0].values()),
        )
        with steps("merge_quarantine"):
            retry_on_conflict(
                lambda: _insert_new_quarantine(quarantine, rejected, run_id, ingested_at, ingesting, target_scope),
                f"ingest into {quarantine.label}",
            )
    finally:
        staging.drop()
    return IngestSummary(
        sources=counts,
        documents_version=documents.version(),
        quarantine_version=quarantine.version(),
        documents_written=written,
    )


def read_records(spark: SparkSession, plans: list[SourcePlan], settings: IngestConfig, store: Storage) -> DataFrame:
    """One row per record read, documents and rejections alike; the work itself happens in Spark tasks."""
    units = [unit.as_row() for plan in plans for unit in plan.units]
    frame = spark.createDataFrame([[row[name] for name in _UNIT_FIELDS] for row in units], _UNIT_SCHEMA)
    parallelism = max(1, min(len(units), 4 * spark_compat.default_parallelism(spark)))
    sources = {p.source.name: p.source for p in plans}
    reader = functools.partial(read_partition, sources=sources, ingest=settings, store=store)
    return frame.repartition(parallelism).mapInArrow(reader, RECORD_SCHEMA)


def separate_duplicate_locators(records: DataFrame, id_sources: list[str]) -> tuple[DataFrame, DataFrame]:
    """Documents with a locator already used in the same source (a repeated id) become rejections.

    Only sources with an id field can repeat a locator: positional locators (file, offset or row) are unique by
    construction, so those documents skip the shuffle this check costs. The first occurrence by (file, offset) is
    kept, so the choice does not depend on partitioning.
    """
    documents = records.where(F.col("is_document") == "y")
    rejected = records.where(F.col("is_document") == "n").select("source", "locator", "reason", "detail", "raw_excerpt")
    if not id_sources:
        return documents, rejected
    checked = documents.where(F.col("source").isin(id_sources))
    # The first occurrence of each repeated locator by aggregation, not a window: an id repeated a million times is
    # combined map-side instead of sorted in one task. Only repeated locators are joined back: usually few, so
    # adaptive execution can broadcast them rather than shuffle the texts. (origin, offset) is unique within a source
    # (each file is read once, each record starts at its own offset), so exactly one document per locator is first.
    firsts = (
        checked.groupBy("source", "locator")
        .agg(F.min(F.struct("origin", "offset")).alias("_first"), F.count("*").alias("_copies"))
        .where(F.col("_copies") > 1)
        .drop("_copies")
    )
    ranked = checked.join(firsts, ["source", "locator"], "left").withColumn(
        "_is_first", F.col("_first").isNull() | (F.struct("origin", "offset") == F.col("_first"))
    )
    kept = ranked.where(F.col("_is_first")).select(*checked.columns)
    duplicates = ranked.where(~F.col("_is_first")).select(
        "source",
        "locator",
        F.lit("duplicate_locator").alias("reason"),
        F.concat(
            F.lit("same locator as the document kept at "),
            F.concat_ws("@", "_first.origin", F.col("_first.offset").cast("string")),
        ).alias("detail"),
        F.substring("text", 1, 256).alias("raw_excerpt"),
    )
    unchecked = documents.where(~F.col("source").isin(id_sources))
    return unchecked.unionByName(kept), rejected.unionByName(duplicates)


def classify_against(documents: DataFrame, existing: DataFrame) -> DataFrame:
    """Adds `status`: new (locator not in the table), unchanged (same doc_id) or updated (content changed)."""
    current = existing.select("source", "locator", F.col("doc_id").alias("_existing_id"))
    joined = documents.join(current, ["source", "locator"], "left")
    status = (
        F.when(F.col("_existing_id").isNull(), "new")
        .when(F.col("_existing_id") == F.col("doc_id"), "unchanged")
        .otherwise("updated")
    )
    return joined.withColumn("status", status).drop("_existing_id")


def _count(
    plans: list[SourcePlan], records: DataFrame, classified: DataFrame, rejected: DataFrame
) -> dict[str, SourceCounts]:
    """Counts each outcome separately, and what was read independently of them, so that they can disagree."""
    counts = {
        plan.source.name: SourceCounts(input_bytes=plan.input_bytes, skipped_directories=plan.skipped_directories)
        for plan in plans
    }
    for row in records.groupBy("source").count().collect():
        counts[row["source"]].read = row["count"]
    for row in classified.groupBy("source", "status").count().collect():
        setattr(counts[row["source"]], row["status"], row["count"])
    reasons: dict[str, dict[str, int]] = defaultdict(dict)
    for row in rejected.groupBy("source", "reason").count().collect():
        reasons[row["source"]][row["reason"]] = row["count"]
    for name, by_reason in reasons.items():
        counts[name].quarantine_reasons = by_reason
        counts[name].quarantined = sum(by_reason.values())
    return counts


def _merge_documents(
    target: Table, classified: DataFrame, run_id: str, ingested_at: datetime, expected_updates: int, scope: str
) -> int:
    """Inserts new documents and updates changed ones in one commit; returns the rows it wrote.

    With nothing to update, the MERGE has only its insert clause, which Delta runs as a cheaper insert-only merge
    (an anti-join and an append); a concurrent writer's rows are still never inserted twice.
    """
    stamped = classified.where(F.col("status") != "unchanged").withColumns(
        {"run_id": F.lit(run_id), "ingested_at": F.lit(ingested_at).cast("timestamp")}
    )
    changes = BRONZE_DOCUMENTS.conform(stamped)
    columns = {name: f"s.{name}" for name in BRONZE_DOCUMENTS.column_names}
    merge = target.merge(changes, f"{scope} AND t.source = s.source AND t.locator = s.locator")
    if expected_updates:
        merge = merge.when_matched_update(condition="t.doc_id <> s.doc_id", set=columns)
    # The MERGE's own metrics: the table's latest history entry may be a concurrent writer's commit.
    metrics = merge.when_not_matched_insert(values=columns).execute()
    return metrics["num_inserted_rows"] + metrics["num_updated_rows"]


def _insert_new_quarantine(
    table: Table, rejected: DataFrame, run_id: str, ingested_at: datetime, ingesting: Column, scope: str
) -> None:
    """Adds rejections not already recorded; the same bad input on a rerun adds nothing. Only the ingested
    sources' rows are read (`ingesting`, `scope`: the same sources as a filter and as MERGE SQL over `t`)."""
    keys = ["source", "locator", "reason"]
    fresh = rejected.join(table.read().where(ingesting).select(*keys).distinct(), keys, "left_anti")
    if fresh.isEmpty():
        return
    rows = fresh.select(
        "source",
        "locator",
        "reason",
        "detail",
        "raw_excerpt",
        F.lit(run_id).alias("run_id"),
        F.lit(ingested_at).cast("timestamp").alias("quarantined_at"),
    )
    condition = " AND ".join([scope] + [f"t.{k} = s.{k}" for k in keys])
    table.merge(rows, condition).when_not_matched_insert().execute()
