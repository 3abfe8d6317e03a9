"""The ingest stage: configured sources -> bronze.documents + bronze.quarantine.

Files are listed on the driver, read by Spark tasks (`mapInArrow`, one Arrow batch at a time, nothing collected to
the driver but counts), and MERGEd into Delta on (source, locator): a new document is inserted, a changed one (its
doc_id differs) is updated, an unchanged one is left alone. Rerunning on the same input therefore commits nothing.

Every record read is accounted for, per source: read = new + updated + unchanged + quarantined.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Iterator

import mlflow
import pyarrow as pa
from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, MapType, StringType, StructField, StructType

from pipelines.config import PipelineConfig, SourceConfig
from pipelines.identity import document_id
from pipelines.ingest.planning import SourcePlan, WorkUnit, plan_source
from pipelines.ingest.readers import Document, Record, read_unit
from pipelines.lakehouse import Lakehouse, Table
from pipelines.schemas import BRONZE_DOCUMENTS, BRONZE_QUARANTINE
from pipelines.tracking import metric_name, stage_run

DOCUMENTS = "bronze.documents"
QUARANTINE = "bronze.quarantine"

# What a task emits for each record read: a document or a rejection, in one schema.
RECORD_SCHEMA = StructType(
    [
        StructField("is_document", StringType(), False),
        StructField("source", StringType(), False),
        StructField("kind", StringType(), False),
        StructField("locator", StringType(), False),
        StructField("doc_id", StringType(), True),
        StructField("text", StringType(), True),
        StructField("n_chars", LongType(), True),
        StructField("n_bytes", LongType(), True),
        StructField("language", StringType(), True),
        StructField("metadata", MapType(StringType(), StringType()), True),
        StructField("reason", StringType(), True),
        StructField("detail", StringType(), True),
        StructField("raw_excerpt", StringType(), True),
        StructField("origin", StringType(), False),  # file the record came from (relative), for ordering
        StructField("offset", LongType(), False),
    ]
)
_ARROW_RECORD_SCHEMA = pa.schema(
    [
        ("is_document", pa.string()),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("locator", pa.string()),
        ("doc_id", pa.string()),
        ("text", pa.large_string()),
        ("n_chars", pa.int64()),
        ("n_bytes", pa.int64()),
        ("language", pa.string()),
        ("metadata", pa.map_(pa.string(), pa.string())),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw_excerpt", pa.string()),
        ("origin", pa.string()),
        ("offset", pa.int64()),
    ]
)
_UNIT_FIELDS = list(WorkUnit.__dataclass_fields__)
_UNIT_SCHEMA = StructType(
    [
        StructField(name, LongType() if name in ("size", "start", "end") else StringType(), True)
        for name in _UNIT_FIELDS
    ]
)
_BATCH_ROWS = 1000
_BATCH_BYTES = 32 * 1024 * 1024


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
class IngestSummary:
    run_id: str
    sources: dict[str, SourceCounts]
    seconds: float
    documents_version: int
    quarantine_version: int
    documents_written: int  # rows the MERGE inserted or updated, from the Delta commit's own metrics

    @property
    def reconciles(self) -> bool:
        """Every record is accounted for, and the table changed by exactly the documents classed new or updated.

        (A concurrent ingest of the same files can make the second check fail honestly: the other run wrote first.)
        """
        expected = sum(c.ingested for c in self.sources.values())
        return all(c.reconciles for c in self.sources.values()) and self.documents_written == expected

    def format(self) -> str:
        header = f"{'source':<24}{'read':>10}{'new':>10}{'updated':>10}{'unchanged':>11}{'quarantined':>13}  check"
        lines = [f"ingest run {self.run_id} ({self.seconds:.1f} s)", header, "-" * len(header)]
        for name, c in sorted(self.sources.items()):
            check = "ok" if c.reconciles else "MISMATCH"
            lines.append(
                f"{name:<24}{c.read:>10}{c.new:>10}{c.updated:>10}{c.unchanged:>11}{c.quarantined:>13}  {check}"
            )
            for reason, count in sorted(c.quarantine_reasons.items()):
                lines.append(f"{'':<26}quarantined {reason}: {count}")
        lines.append(
            f"bronze.documents v{self.documents_version} ({self.documents_written} rows written), "
            f"bronze.quarantine v{self.quarantine_version}"
        )
        return "\n".join(lines)


def run_ingest(spark: SparkSession, config: PipelineConfig, sources: Iterable[str] | None = None) -> IngestSummary:
    """Ingests the configured sources (or the named subset) and returns the reconciled counts."""
    selected = [config.source(name) for name in sources] if sources else list(config.sources)
    plans = [plan_source(source, config.ingest) for source in selected]  # a missing path fails here, before Spark
    lakehouse = Lakehouse(spark, config.lakehouse)
    documents = lakehouse.table(DOCUMENTS)
    quarantine = lakehouse.table(QUARANTINE)
    documents.create_if_missing(BRONZE_DOCUMENTS, "Raw documents, one row per (source, locator)")
    quarantine.create_if_missing(BRONZE_QUARANTINE, "Records and files that could not be ingested, with a reason")

    params = {f"source.{s.name}": f"{s.format} {list(s.paths)}" for s in selected}
    params.update({f"ingest.{k}": v for k, v in vars(config.ingest).items()})
    with stage_run(config, "ingest", params) as run:
        started = time.monotonic()
        run_id = run.info.run_id
        ingested_at = datetime.now(timezone.utc).replace(tzinfo=None)
        records = read_records(spark, plans, config).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            kept, rejected = separate_duplicate_locators(records)
            classified = classify_against(kept, documents.read())
            counts = _count(plans, records, classified, rejected)
            changed = sum(c.ingested for c in counts.values())
            written = _merge_documents(documents.delta(), classified, run_id, ingested_at) if changed else 0
            _insert_new_quarantine(quarantine, rejected, run_id, ingested_at)
        finally:
            records.unpersist()
        summary = IngestSummary(
            run_id, counts, time.monotonic() - started, documents.version(), quarantine.version(), written
        )
        _log_metrics(summary)
    return summary


def read_records(spark: SparkSession, plans: list[SourcePlan], config: PipelineConfig) -> DataFrame:
    """One row per record read, documents and rejections alike; the work itself happens in Spark tasks."""
    units = [unit.as_row() for plan in plans for unit in plan.units]
    sources = {plan.source.name: plan.source for plan in plans}
    ingest = config.ingest
    frame = spark.createDataFrame([[row[name] for name in _UNIT_FIELDS] for row in units], _UNIT_SCHEMA)
    parallelism = max(1, min(len(units), 4 * _cores(spark)))

    def read_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for row in batch.to_pylist():
                unit = WorkUnit(**row)
                yield from record_batches(read_unit(unit, sources[unit.source], ingest), unit, sources[unit.source])

    return frame.repartition(parallelism).mapInArrow(read_partition, RECORD_SCHEMA)


def _cores(spark: SparkSession) -> int:
    try:
        return spark.sparkContext.defaultParallelism
    except Exception:  # Spark Connect has no SparkContext
        return int(spark.conf.get("spark.sql.shuffle.partitions"))


def record_batches(records: Iterator[Record], unit: WorkUnit, source: SourceConfig) -> Iterator[pa.RecordBatch]:
    """Arrow batches of at most _BATCH_ROWS rows or about _BATCH_BYTES of text, whichever comes first."""
    columns: dict[str, list] = {name: [] for name in _ARROW_RECORD_SCHEMA.names}
    size = 0
    for record in records:
        _append(columns, record, unit, source)
        size += len(record.encoded) if isinstance(record, Document) else len(record.excerpt)
        if len(columns["locator"]) >= _BATCH_ROWS or size >= _BATCH_BYTES:
            yield pa.RecordBatch.from_pydict(columns, schema=_ARROW_RECORD_SCHEMA)
            columns = {name: [] for name in _ARROW_RECORD_SCHEMA.names}
            size = 0
    if columns["locator"]:
        yield pa.RecordBatch.from_pydict(columns, schema=_ARROW_RECORD_SCHEMA)


def _append(columns: dict[str, list], record: Record, unit: WorkUnit, source: SourceConfig) -> None:
    is_document = isinstance(record, Document)
    values = {
        "is_document": "y" if is_document else "n",
        "source": source.name,
        "kind": source.kind,
        "locator": record.locator,
        "origin": unit.relative_path,
        "offset": record.offset,
    }
    if is_document:
        values.update(
            doc_id=document_id(source.name, record.locator, record.encoded),
            text=record.text,
            n_chars=len(record.text),
            n_bytes=len(record.encoded),
            language=record.language,
            metadata=list(record.metadata.items()),
        )
    else:
        values.update(
            reason=record.reason,
            detail=record.detail,
            raw_excerpt=record.excerpt.decode("utf-8", "backslashreplace").replace("\x00", "\\x00"),
        )
    for name, column in columns.items():
        column.append(values.get(name))


def separate_duplicate_locators(records: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Documents with a locator already used in the same source (e.g. a repeated id) become rejections.

    The first occurrence by (file, offset) is kept, so the choice does not depend on partitioning.
    """
    documents = records.where(F.col("is_document") == "y")
    order = Window.partitionBy("source", "locator").orderBy("origin", "offset")
    ranked = documents.withColumn("_rank", F.row_number().over(order)).withColumn(
        "_first", F.first(F.concat_ws("@", "origin", F.col("offset").cast("string"))).over(order)
    )
    kept = ranked.where(F.col("_rank") == 1).drop("_rank", "_first")
    duplicates = ranked.where(F.col("_rank") > 1).select(
        "source",
        "locator",
        F.lit("duplicate_locator").alias("reason"),
        F.concat(F.lit("same locator as the document kept at "), F.col("_first")).alias("detail"),
        F.substring("text", 1, 256).alias("raw_excerpt"),
    )
    rejected = records.where(F.col("is_document") == "n").select("source", "locator", "reason", "detail", "raw_excerpt")
    return kept, rejected.unionByName(duplicates)


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


def _merge_documents(target: DeltaTable, classified: DataFrame, run_id: str, ingested_at: datetime) -> int:
    """Inserts new documents and updates changed ones in one commit; returns the rows it wrote."""
    stamped = classified.where(F.col("status") != "unchanged").withColumns(
        {"run_id": F.lit(run_id), "ingested_at": F.lit(ingested_at).cast("timestamp")}
    )
    changes = stamped.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in BRONZE_DOCUMENTS.fields])
    columns = {f.name: f"s.{f.name}" for f in BRONZE_DOCUMENTS.fields}
    (
        target.alias("t")
        .merge(changes.alias("s"), "t.source = s.source AND t.locator = s.locator")
        .whenMatchedUpdate(condition="t.doc_id <> s.doc_id", set=columns)
        .whenNotMatchedInsert(values=columns)
        .execute()
    )
    metrics = target.history(1).select("operationMetrics").first()[0]
    return int(metrics.get("numTargetRowsInserted", 0)) + int(metrics.get("numTargetRowsUpdated", 0))


def _insert_new_quarantine(table: Table, rejected: DataFrame, run_id: str, ingested_at: datetime) -> None:
    """Adds rejections not already recorded; the same bad input on a rerun adds nothing."""
    keys = ["source", "locator", "reason"]
    fresh = rejected.join(table.read().select(*keys).distinct(), keys, "left_anti")
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
    condition = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    table.delta().alias("t").merge(rows.alias("s"), condition).whenNotMatchedInsertAll().execute()


def _log_metrics(summary: IngestSummary) -> None:
    metrics: dict[str, float] = {"seconds": summary.seconds}
    totals: dict[str, int] = defaultdict(int)
    for name, c in summary.sources.items():
        for key in ("read", "new", "updated", "unchanged", "quarantined", "input_bytes", "skipped_directories"):
            metrics[metric_name("source", name, key)] = getattr(c, key)
            totals[key] += getattr(c, key)
        for reason, count in c.quarantine_reasons.items():
            metrics[metric_name("source", name, "quarantined", reason)] = count
    metrics.update({metric_name("total", key): value for key, value in totals.items()})
    if summary.seconds > 0:
        metrics["mb_per_s"] = totals["input_bytes"] / 1e6 / summary.seconds
    mlflow.log_metrics(metrics)
    mlflow.log_dict(
        {"run_id": summary.run_id, "sources": {n: vars(c) for n, c in summary.sources.items()}},
        "ingest_summary.json",
    )
    mlflow.set_tag("dataprep.reconciles", str(summary.reconciles).lower())

