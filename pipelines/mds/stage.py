"""The MDS stage: gold.tokens -> one directory of MDS shards per curriculum stage of a mix, with a manifest.

For each stage: sampling.py picks the occurrences (documents x epochs, the last one cut) with exact token accounting
and orders them by a seeded shuffle key; the stream is packed into `seq_len` samples (or one sample per document);
shard boundaries follow MDSWriter's size rule, computed on the driver from the sample sizes, so every shard's
content and name (`shard.NNNNN.mds`) is fixed before any task runs. Spark tasks then assemble and write whole shards
into a staging directory named after a key of the stage's inputs (mix settings + Delta versions read); the driver
writes index.json and manifest.json and renames the staging directory into place, so output appears only complete.
A rerun after a crash reuses the shards the staging directory already holds; a rerun with the same key does nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, IntegerType, LongType, StringType, StructField, StructType

from pipelines import reports
from pipelines.faults import failpoint
from pipelines.mds import format as mds
from pipelines.mds.mixes import Mix, Stage, load_mix
from pipelines.mds.sampling import ComponentOutcome, candidates, occurrences, stream_offsets
from pipelines.mds.settings import MdsConfig
from pipelines.mds.tasks import sidecar_path, write_partition
from pipelines.settings import ConfigError
from pipelines.stage import StageContext, StageSummary
from pipelines.tables import GOLD_TOKENS, SILVER_DOCUMENTS
from pipelines.tokenize.tokenizer import EOS_ID, PAD_ID
from pipelines.tracking import metric_name

MANIFEST = "manifest.json"
_ENTRIES = StructType([StructField("shard", LongType(), False), StructField("entry", StringType(), False)])


@dataclass
class StageResult:
    name: str
    directory: str
    status: str  # written, resumed (some shards reused), up to date
    samples: int
    shards: int
    tokens_written: int  # tokens in the shards (pad included)
    remainder_dropped: int
    padding: int = 0  # pad tokens added to the last sample (remainder: pad)
    components: list[ComponentOutcome] = field(default_factory=list)
    reused_shards: int = 0

    @property
    def reconciles(self) -> bool:
        """Every realised token is in a shard or counted as the dropped remainder (pad tokens aside)."""
        realised = sum(c.realised for c in self.components)
        return self.tokens_written + self.remainder_dropped - self.padding == realised


@dataclass
class MdsSummary(StageSummary):
    mix: str
    stages: list[StageResult]

    @property
    def reconciles(self) -> bool:
        return all(stage.reconciles for stage in self.stages)

    def format(self) -> str:
        lines = [f"mds run {self.run_id}: mix {self.mix} ({self.timing()})"]
        for stage in self.stages:
            lines.append(
                f"stage {stage.name} [{stage.status}] -> {stage.directory}: {stage.samples} samples in {stage.shards} "
                f"shards, {stage.tokens_written} tokens ({stage.remainder_dropped} dropped as remainder, "
                f"{stage.padding} padding)  {'ok' if stage.reconciles else 'MISMATCH'}"
            )
            for c in stage.components:
                short = f", SHORT by {c.shortfall}" if c.shortfall else ""
                lines.append(
                    f"  {c.name}: requested {c.requested}, realised {c.realised} ({c.full_epochs} full epochs of "
                    f"{c.tokens_available} tokens in {c.documents_available} documents){short}"
                )
        return "\n".join(lines)

    def metrics(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for stage in self.stages:
            metrics[metric_name("samples", stage.name)] = stage.samples
            metrics[metric_name("tokens_written", stage.name)] = stage.tokens_written
            for c in stage.components:
                metrics[metric_name("tokens_realised", stage.name, c.name)] = c.realised
                metrics[metric_name("tokens_requested", stage.name, c.name)] = c.requested
                metrics[metric_name("tokens_shortfall", stage.name, c.name)] = c.shortfall
        return metrics

    def report(self, context: StageContext) -> None:
        for stage in self.stages:
            labels = [c.name for c in stage.components]
            requested, realised = [c.requested for c in stage.components], [c.realised for c in stage.components]
            reports.bars(labels, requested, f"tokens_{stage.name}", f"stage {stage.name}: tokens per component",
                         "tokens", second=realised, legend=("requested", "realised"))  # fmt: skip


def run_mds(
    context: StageContext, settings: MdsConfig, mix: str | Mix | None = None, output: str | None = None
) -> MdsSummary:
    """Every stage of the mix (a Mix, a mixes/*.yaml path, or by default the config's `mds.mix`) as MDS shards
    under `<output>/<mix name>/` (default: the config's `mds.output`)."""
    mix = chosen_mix(settings, mix)
    output = output or settings.output
    tokens, silver = context.lakehouse.table(GOLD_TOKENS), context.lakehouse.table(SILVER_DOCUMENTS)
    versions = {GOLD_TOKENS.name: tokens.version(), SILVER_DOCUMENTS.name: silver.version()}
    mlflow.log_params({"mix": mix.name, "output": output, **{f"version.{k}": v for k, v in versions.items()}})
    frame = candidates(tokens.read(), silver.read()).localCheckpoint()
    results = [
        _write_stage(context.spark, mix, stage, frame, tokens.read(), versions, os.path.join(output, mix.name))
        for stage in mix.stages
    ]
    return MdsSummary(mix=mix.name, stages=results)


def chosen_mix(settings: MdsConfig, mix: str | Mix | None = None, **other_options: object) -> Mix:
    """The mix to write, loaded and validated: the stage's preflight (which gets every option of the stage), so a
    missing or bad mix fails before anything runs."""
    mix = mix or settings.mix
    if not mix:
        raise ConfigError("mds.mix: no mix given (set it in the config or pass --mix)")
    return load_mix(mix) if isinstance(mix, str) else mix


def stage_key(mix: Mix, stage: Stage, versions: dict[str, int]) -> str:
    """What the stage's output depends on; equal keys mean equal bytes."""
    settings = {
        "stage": dataclasses.asdict(stage),
        "token_dtype": mix.token_dtype,
        "packing": mix.packing,
        "remainder": mix.remainder,
        "shards": dataclasses.asdict(mix.shards),
        "versions": versions,
        "format": 1,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _write_stage(
    spark: SparkSession,
    mix: Mix,
    stage: Stage,
    frame: DataFrame,
    tokens: DataFrame,
    versions: dict[str, int],
    root: str,
) -> StageResult:
    final = os.path.join(root, stage.name)
    key = stage_key(mix, stage, versions)
    existing = _read_manifest(final)
    if existing and existing.get("key") == key:
        return _result_from_manifest(final, existing)
    picked, outcomes = occurrences(stage, frame)
    ordered = stream_offsets(picked).localCheckpoint()
    layout = _layout(mix, stage, ordered)
    staging = os.path.join(root, f".{stage.name}.partial-{key}")
    os.makedirs(staging, exist_ok=True)
    done = _finished_shards(staging)
    todo = [shard for shard, count in enumerate(layout.shard_counts) if shard not in done]
    entries = dict(done)
    for shard in [s for s in todo if layout.shard_counts[s] == 0]:  # MDSWriter's empty shard before a huge sample
        entries[shard] = mds.write_shard(staging, shard, [], mix.shards)
    todo = [s for s in todo if layout.shard_counts[s] > 0]
    if todo:
        pieces = _pieces(spark, mix, stage, ordered, layout, tokens).where(F.col("shard").isin(todo))
        task = functools.partial(
            write_partition,
            directory=staging,
            settings=mix.shards,
            expected_samples=dict(enumerate(layout.shard_counts)),
            pad_sample=layout.pad_sample,
            pad_length=stage.seq_len,
            pad_id=PAD_ID,
        )
        partitions = max(1, min(len(todo), int(spark.conf.get("spark.sql.shuffle.partitions"))))
        written = (
            pieces.repartition(partitions, "shard")
            .sortWithinPartitions("shard", "sample", "start")
            .mapInArrow(task, _ENTRIES)
            .collect()
        )
        entries.update({row["shard"]: json.loads(row["entry"]) for row in written})
    missing = sorted(set(range(len(layout.shard_counts))) - set(entries))
    if missing:
        raise RuntimeError(f"stage {stage.name}: shards {missing[:5]} were not written")
    ordered_entries = [entries[shard] for shard in range(len(layout.shard_counts))]
    failpoint("mds.publish")
    mds.write_index(staging, ordered_entries)
    manifest = _manifest(mix, stage, key, versions, layout, outcomes, ordered_entries)
    with open(os.path.join(staging, MANIFEST), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
    for shard in range(len(layout.shard_counts)):
        if os.path.exists(sidecar_path(staging, shard)):
            os.remove(sidecar_path(staging, shard))
    _publish(staging, final)
    return StageResult(
        name=stage.name,
        directory=final,
        status="resumed" if done else "written",
        samples=layout.samples,
        shards=len(layout.shard_counts),
        tokens_written=layout.tokens_written,
        remainder_dropped=layout.remainder_dropped,
        padding=layout.padding,
        components=outcomes,
        reused_shards=len(done),
    )


@dataclass
class Layout:
    samples: int
    shard_counts: list[int]
    sample_shard: np.ndarray  # shard of each sample
    stream_end: int  # tokens of the stream that go into samples
    tokens_written: int
    remainder_dropped: int
    padding: int
    pad_sample: int | None


def _layout(mix: Mix, stage: Stage, ordered: DataFrame) -> Layout:
    """Samples and shards, fixed on the driver from the sample sizes alone."""
    if mix.packing == "document":
        takes = np.array([row["take"] for row in ordered.orderBy("position").select("take").collect()], dtype=np.int64)
        sizes, total = takes, int(takes.sum())
        return _with_shards(mix, sizes, total, total, 0, 0, None)
    total = int(ordered.agg(F.sum("take")).first()[0] or 0)
    full, rest = divmod(total, stage.seq_len)
    if mix.remainder == "drop" or not rest:
        return _with_shards(
            mix, np.full(full, stage.seq_len), full * stage.seq_len, full * stage.seq_len, rest, 0, None
        )
    if mix.remainder == "pad":
        sizes = np.full(full + 1, stage.seq_len)
        return _with_shards(mix, sizes, total, int(sizes.sum()), 0, stage.seq_len - rest, full)
    sizes = np.append(np.full(full, stage.seq_len), rest)
    return _with_shards(mix, sizes, total, total, 0, 0, None)


def _with_shards(
    mix: Mix, lengths: np.ndarray, stream_end: int, written: int, dropped: int, padding: int, pad_sample: int | None
) -> Layout:
    record_sizes = [mds.record_size(int(n)) for n in lengths]
    counts = list(mds.group_into_shards(record_sizes, mix.shards))
    sample_shard = np.repeat(np.arange(len(counts)), counts)
    return Layout(len(lengths), counts, sample_shard, stream_end, written, dropped, padding, pad_sample)


def _pieces(
    spark: SparkSession, mix: Mix, stage: Stage, ordered: DataFrame, layout: Layout, tokens: DataFrame
) -> DataFrame:
    """(shard, sample, start, tokens): each occurrence cut at sample boundaries, with its slice of tokens + EOS."""
    shards = spark.createDataFrame(
        pd.DataFrame(
            {"sample": np.arange(layout.samples, dtype=np.int64), "shard": layout.sample_shard.astype(np.int64)}
        )
    )
    if mix.packing == "document":
        spans = ordered.select(
            "doc_id", "take", F.col("position").alias("sample"), F.lit(0).cast("long").alias("start"),
            F.lit(0).cast("long").alias("begin"), F.col("take").alias("end"),
        )  # fmt: skip
    else:
        size, end = F.lit(stage.seq_len), F.lit(layout.stream_end)
        stop = F.least(F.col("offset") + F.col("take"), end)
        first, last = F.floor(F.col("offset") / size), F.floor((stop - 1) / size)
        exploded = ordered.where(F.col("offset") < end).select(
            "doc_id", "offset", "take", F.explode(F.sequence(first.cast("long"), last.cast("long"))).alias("sample")
        )
        start = F.greatest(F.col("offset"), F.col("sample") * size)
        finish = F.least(F.col("offset") + F.col("take"), (F.col("sample") + 1) * size, end)
        spans = exploded.select(
            "doc_id", "take", "sample", start.alias("start"),
            (start - F.col("offset")).alias("begin"), (finish - F.col("offset")).alias("end"),
        )  # fmt: skip
    # An occurrence is its first take - 1 tokens and an EOS: a document cut to fit the budget still ends with EOS.
    sequence = F.concat(F.slice("tokens", 1, F.col("take").cast("int") - 1), F.array(F.lit(EOS_ID)))
    piece = F.slice(sequence, F.col("begin").cast("int") + 1, (F.col("end") - F.col("begin")).cast("int"))
    return (
        spans.join(tokens.select("doc_id", "tokens"), "doc_id")
        .join(shards, "sample")
        .select("shard", "sample", "start", piece.cast(ArrayType(IntegerType())).alias("tokens"))
    )


def _finished_shards(staging: str) -> dict[int, dict]:
    """Shards a previous, interrupted run finished: their sidecar exists (it is written after the shard)."""
    done = {}
    for name in os.listdir(staging):
        if name.startswith("shard.") and name.endswith(".entry.json"):
            with open(os.path.join(staging, name), encoding="utf-8") as handle:
                done[int(name.split(".")[1])] = json.load(handle)
    return done


def _publish(staging: str, final: str) -> None:
    """Moves the finished stage into place; an older version of it is replaced only once the new one is whole."""
    if os.path.exists(final):
        retired = f"{final}.retired"
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(final, retired)
        os.replace(staging, final)
        shutil.rmtree(retired)
    else:
        os.replace(staging, final)


def _manifest(mix, stage, key, versions, layout, outcomes, entries) -> dict:
    return {
        "mix": mix.name,
        "stage": dataclasses.asdict(stage),
        "key": key,
        "delta_versions": versions,
        "token_dtype": mix.token_dtype,
        "packing": mix.packing,
        "remainder": mix.remainder,
        "eos_id": EOS_ID,
        "pad_id": PAD_ID,
        "samples": layout.samples,
        "tokens_written": layout.tokens_written,
        "remainder_dropped": layout.remainder_dropped,
        "padding": layout.padding,
        "components": [outcome.as_dict() for outcome in outcomes],
        "shards": [
            {
                "basename": (entry["zip_data"] or entry["raw_data"])["basename"],
                "samples": entry["samples"],
                "hashes": (entry["zip_data"] or entry["raw_data"])["hashes"],
            }
            for entry in entries
        ],
    }


def _read_manifest(directory: str) -> dict | None:
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _result_from_manifest(directory: str, manifest: dict) -> StageResult:
    return StageResult(
        name=manifest["stage"]["name"],
        directory=directory,
        status="up to date",
        samples=manifest["samples"],
        shards=len(manifest["shards"]),
        tokens_written=manifest["tokens_written"],
        remainder_dropped=manifest["remainder_dropped"],
        padding=manifest["padding"],
        components=[ComponentOutcome(**c) for c in manifest["components"]],
    )
