"""The MDS stage: gold.tokens -> one directory of MDS shards per curriculum stage of a mix, with a manifest.

For each stage: sampling.py picks the occurrences (documents x epochs, the last one cut) with exact token accounting
and orders them by a seeded shuffle key; the stream is packed into `seq_len` samples (or one sample per document);
shard boundaries follow MDSWriter's size rule, computed in Spark tasks (layout.py), so every shard's content and
name (`shard.NNNNN.mds`) is fixed before any shard is written. Spark tasks then assemble whole shards and
store them in the stage's directory (pipelines/storage.py: a local disk or an object store; nothing is renamed),
each followed by a sidecar in a progress directory named after a key of the stage's inputs (mix settings + Delta
versions read). The driver checks that every shard is stored, writes manifest.json, then index.json last: the stage
is complete exactly when its index.json exists, and an older index is removed before any of its shards is replaced.
A rerun after a crash reuses the shards whose sidecars exist; a rerun with the same key does nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field

import mlflow
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, IntegerType, LongType, StringType, StructField, StructType

from pipelines import reports, storage
from pipelines.faults import failpoint
from pipelines.mds import format as mds
from pipelines.mds.layout import Layout, occurrence_spans, plan_layout
from pipelines.mds.mixes import Mix, Stage, load_mix
from pipelines.mds.sampling import ComponentOutcome, candidates, occurrences, stream_offsets
from pipelines.mds.settings import MdsConfig
from pipelines.mds.tasks import write_partition
from pipelines.settings import ConfigError
from pipelines.stage import StageContext, StageSummary
from pipelines.storage import Storage
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
    output = storage.normalized(output) if output else settings.output
    tokens, silver = context.lakehouse.table(GOLD_TOKENS), context.lakehouse.table(SILVER_DOCUMENTS)
    # The versions the rows come from: `dataprep maintain`'s commits since (OPTIMIZE, VACUUM) change no row, so they
    # do not make the shards stale.
    versions = {GOLD_TOKENS.name: tokens.data_version(), SILVER_DOCUMENTS.name: silver.data_version()}
    mlflow.log_params({"mix": mix.name, "output": output, **{f"version.{k}": v for k, v in versions.items()}})
    frame = candidates(tokens.read(), silver.read()).localCheckpoint()
    root, store = storage.join(output, mix.name), context.lakehouse.storage
    results = [
        _write_stage(context.spark, store, mix, stage, frame, tokens.read(), versions, root) for stage in mix.stages
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
    store: Storage,
    mix: Mix,
    stage: Stage,
    frame: DataFrame,
    tokens: DataFrame,
    versions: dict[str, int],
    root: str,
) -> StageResult:
    final = storage.join(root, stage.name)
    key = stage_key(mix, stage, versions)
    progress = storage.join(root, f".{stage.name}.progress-{key}")
    existing = _read_manifest(store, final)
    if existing and existing.get("key") == key and store.exists(storage.join(final, mds.INDEX)):
        _drop_progress(store, root, stage)  # left behind by a run that stopped right after publishing
        return _result_from_manifest(final, existing)
    # From here until the new index.json is written the stage is incomplete: readers must not take an older
    # version's index as describing the shards that are being replaced.
    store.delete(storage.join(final, mds.INDEX))
    store.delete(storage.join(final, MANIFEST))
    picked, outcomes = occurrences(stage, frame)
    ordered = stream_offsets(picked).localCheckpoint()
    layout = plan_layout(mix, stage, ordered)
    done = _finished_shards(store, progress)
    todo = [shard for shard, count in enumerate(layout.shard_counts) if shard not in done]
    entries = dict(done)
    for shard in [s for s in todo if layout.shard_counts[s] == 0]:  # MDSWriter's empty shard before a huge sample
        entries[shard] = mds.write_shard(final, shard, [], mix.shards, store)
    todo = [s for s in todo if layout.shard_counts[s] > 0]
    if todo:
        pieces = _pieces(mix, stage, ordered, layout, tokens).where(F.col("shard").isin(todo))
        task = functools.partial(
            write_partition,
            directory=final,
            progress=progress,
            store=store,
            settings=mix.shards,
            expected_samples=dict(enumerate(layout.shard_counts)),
            pad_sample=layout.pad_sample,
            pad_length=stage.seq_len,
            pad_id=PAD_ID,
        )
        functools.update_wrapper(task, write_partition)  # named in Spark's plans and UI, not "partial"
        # One task assembles each shard (at most the size limit): as many partitions as shards, up to the default.
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
    _check_stored(store, final, ordered_entries)
    failpoint("mds.publish")
    manifest = _manifest(mix, stage, key, versions, layout, outcomes, ordered_entries)
    store.write_text(storage.join(final, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True))
    mds.write_index(final, ordered_entries, store)  # last: the stage is complete exactly when its index exists
    _drop_progress(store, root, stage)
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


def _check_stored(store: Storage, directory: str, entries: list[dict]) -> None:
    """Before the index is written: every shard is stored with the size its entry records, and nothing else is in
    the stage's directory (a shard of an older, longer version of the stage is removed)."""
    expected = {mds.stored_file(entry)["basename"]: mds.stored_file(entry)["bytes"] for entry in entries}
    stored = {storage.relative(e.uri, directory): e.size for e in store.list_files(directory)}
    wrong = {name: stored.get(name) for name, size in expected.items() if stored.get(name) != size}
    if wrong:
        shown = ", ".join(f"{name} ({size} bytes)" for name, size in list(wrong.items())[:5])
        raise RuntimeError(f"{directory}: shards missing or of the wrong size after writing: {shown}")
    for name in sorted(set(stored) - set(expected) - {MANIFEST, mds.INDEX}):
        store.delete(storage.join(directory, name))


def _drop_progress(store: Storage, root: str, stage: Stage) -> None:
    """Removes the stage's progress directories (the sidecars of shards written), whatever key they were for."""
    prefix = f".{stage.name}.progress-"
    for name in [name for name in store.children(root) if name.startswith(prefix)]:
        store.delete_tree(storage.join(root, name))


def _pieces(mix: Mix, stage: Stage, ordered: DataFrame, layout: Layout, tokens: DataFrame) -> DataFrame:
    """(shard, sample, start, tokens): each occurrence cut at sample boundaries, with its slice of tokens + EOS."""
    spans = occurrence_spans(mix, stage, ordered, layout)
    # An occurrence is its first take - 1 tokens and an EOS: a document cut to fit the budget still ends with EOS.
    sequence = F.concat(F.slice("tokens", 1, F.col("take").cast("int") - 1), F.array(F.lit(EOS_ID)))
    piece = F.slice(sequence, F.col("begin").cast("int") + 1, (F.col("end") - F.col("begin")).cast("int"))
    return spans.join(tokens.select("doc_id", "tokens"), "doc_id").select(
        "shard", "sample", "start", piece.cast(ArrayType(IntegerType())).alias("tokens")
    )


def _finished_shards(store: Storage, progress: str) -> dict[int, dict]:
    """Shards a previous, interrupted run (or an earlier attempt of a task) stored: their sidecar exists (it is
    written after the shard)."""
    done = {}
    for entry in store.list_files(progress):
        name = storage.basename(entry.uri)
        if name.startswith("shard.") and name.endswith(".entry.json"):
            done[int(name.split(".")[1])] = json.loads(store.read_bytes(entry.uri))
    return done


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


def _read_manifest(store: Storage, directory: str) -> dict | None:
    path = storage.join(directory, MANIFEST)
    return json.loads(store.read_bytes(path)) if store.exists(path) else None


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
