"""Scale run: the whole pipeline (ingest, filter, dedup, tokenize, MDS) on a synthetic multi-GB corpus, with time
and throughput per stage.

    source scripts/env.sh && python bench/scale.py [--gb 2] [--cores N] [--work DIR] [--keep]

The corpus is generated first (not timed): English-like prose from a word-bigram model of the documentation that
ships with Python, so that every document is new text (sentences drawn from a pool of a million), in lognormal
sizes around 2 kB, as JSONL files of up to 128 MB, plus what a web crawl brings:
- near-duplicates (8% of web documents: an earlier document with one sentence in twenty replaced, Jaccard ~0.9) and
  exact copies (2%) for dedup to find;
- spam (repeated lines, its own source, the quality classifier's negatives) for the filter to drop;
- malformed JSON lines (0.1%) for ingest to quarantine;
- a small `curated` source of the same prose, the classifier's positives, upsampled by the mix.

Then every stage runs once, in this process, on local Spark with every core (the session is started before the
clock), under one MLflow pipeline run; the stage functions are the ones `dataprep run` calls. Throughput is the
stage's input (raw JSONL bytes for ingest, document UTF-8 bytes for filter, dedup and tokenize, tokens for MDS)
over its wall time. There is no peer here: each stage's bench (ingest.py, filters.py, minhash.py, tokenization.py,
mds.py) compares it with the library a user would otherwise use. The README's capacity plan is derived from this
run's per-core figures, its storage plan from the bytes on disk the run prints per table (the change feed's
files among them). The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pydoc_data.topics import topics

import numpy as np
import orjson
import yaml

from dataprep.config import load_config
from dataprep.runner import pipeline, run_stage
from pipelines import spark_compat, tables
from pipelines.lakehouse import Lakehouse
from pipelines.spark import get_spark
from pipelines.stage import StageSummary
from pipelines.stages import STAGE_NAMES, STAGES
from pipelines.tables import TableSpec

FILE_BYTES = 128 * 1_000_000
POOL_SENTENCES = 1_000_000
NEAR_DUPLICATE, EXACT_COPY, MALFORMED = 0.08, 0.02, 0.001
SHARES = {"web": 0.95, "curated": 0.02, "spam": 0.03}  # of the corpus's bytes
SPAM_LINES = ["Buy cheap watches now, best price guaranteed!", "Click here to win a free prize today!",
              "Limited offer, order now and save big!", "Best deals online, visit our shop now!"]  # fmt: skip


# ---------------------------------------------------------------- corpus


class SentencePool:
    """A million sentences from a word-bigram model of pydoc's topics: new text at any scale, English to lid.176
    and to the Gopher, C4 and FineWeb rules."""

    def __init__(self, seed: int) -> None:
        prose = " ".join(text for _, text in sorted(topics.items()))
        words = [w.lower() for w in re.findall(r"[A-Za-z]+", prose) if len(w) < 15]
        vocabulary, stream = np.unique(np.array(words), return_inverse=True)
        # successors[offsets[w]:offsets[w + 1]] lists every word that followed w: a uniform pick is a bigram draw
        order = np.argsort(stream[:-1], kind="stable")
        self.successors = stream[1:][order]
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(stream[:-1], minlength=len(vocabulary)))])
        rng = np.random.default_rng(seed)
        lengths = rng.integers(6, 22, POOL_SENTENCES)
        chain = np.empty((POOL_SENTENCES, lengths.max()), dtype=np.int64)
        chain[:, 0] = stream[rng.integers(0, len(stream) - 1, POOL_SENTENCES)]
        for position in range(1, chain.shape[1]):
            state = chain[:, position - 1]
            degree = self.offsets[state + 1] - self.offsets[state]
            pick = self.offsets[state] + (rng.random(POOL_SENTENCES) * np.maximum(degree, 1)).astype(np.int64)
            successor = self.successors[np.minimum(pick, len(self.successors) - 1)]
            chain[:, position] = np.where(degree > 0, successor, rng.integers(0, len(vocabulary), POOL_SENTENCES))
        vocabulary = vocabulary.tolist()
        self.sentences = []
        for row, length in zip(chain.tolist(), lengths.tolist(), strict=True):
            sentence = " ".join(vocabulary[w] for w in row[:length])
            self.sentences.append(sentence[0].upper() + sentence[1:] + ".")


_POOL: SentencePool | None = None  # built once in the parent; forked workers share it


@dataclass(frozen=True)
class FileJob:
    path: str
    source: str
    seed: int
    size: int  # bytes to write, about


def write_file(job: FileJob) -> tuple[int, int]:
    """One JSONL file of about job.size bytes; returns (bytes, records)."""
    rng = np.random.default_rng(job.seed)
    sentences = _POOL.sentences
    recent: list[tuple[list[int], str]] = []  # earlier documents (sentence indices, text), to copy from
    lines, written, records = [], 0, 0
    while written < job.size:
        draw = rng.random()
        if job.source == "spam":
            repeated = [SPAM_LINES[i] for i in rng.integers(0, len(SPAM_LINES), 4)]
            text = "\n".join(repeated * int(rng.integers(5, 30)))
        elif job.source == "web" and recent and draw < NEAR_DUPLICATE + EXACT_COPY:
            original, text = recent[int(rng.integers(0, len(recent)))]
            if draw < NEAR_DUPLICATE:
                picked = list(original)
                for position in rng.choice(len(picked), max(1, len(picked) // 20), replace=False):
                    picked[position] = int(rng.integers(0, len(sentences)))
                text = _document(picked, sentences, rng)
        else:
            count = int(np.clip(rng.lognormal(3.2, 0.8), 6, 600))
            picked = rng.integers(0, len(sentences), count).tolist()
            text = _document(picked, sentences, rng)
            recent = (recent + [(picked, text)])[-1000:]
        if job.source == "web" and draw > 1 - MALFORMED:
            line = b'{"text": "a record cut short\n'
        else:
            line = orjson.dumps({"text": text, "url": f"https://{job.source}.example/{job.seed}/{records}"}) + b"\n"
        lines.append(line)
        written += len(line)
        records += 1
    with open(job.path, "wb") as handle:
        handle.write(b"".join(lines))
    return written, records


def _document(picked: list[int], sentences: list[str], rng: np.random.Generator) -> str:
    """Paragraphs of 2-6 sentences, one per line."""
    paragraphs, start = [], 0
    while start < len(picked):
        end = start + int(rng.integers(2, 7))
        paragraphs.append(" ".join(sentences[i] for i in picked[start:end]))
        start = end
    return "\n".join(paragraphs)


def write_corpus(directory: str, total_bytes: int, cores: int) -> dict[str, tuple[int, int]]:
    """The corpus's files, source by source; returns (bytes, records) per source."""
    global _POOL
    _POOL = SentencePool(seed=1)
    jobs = []
    for source, share in SHARES.items():
        os.makedirs(os.path.join(directory, source), exist_ok=True)
        files = math.ceil(total_bytes * share / FILE_BYTES)
        for index in range(files):
            path = os.path.join(directory, source, f"part-{index:05d}.jsonl")
            jobs.append(FileJob(path, source, seed=1000 + len(jobs), size=int(total_bytes * share / files)))
    with multiprocessing.get_context("fork").Pool(cores) as workers:
        results = workers.map(write_file, jobs, chunksize=1)
    totals: dict[str, tuple[int, int]] = {}
    for job, (size, records) in zip(jobs, results, strict=True):
        before = totals.get(job.source, (0, 0))
        totals[job.source] = (before[0] + size, before[1] + records)
    return totals


# ---------------------------------------------------------------- pipeline


def write_config(work: str, corpus: str, cores: int, memory: str) -> str:
    mix = {
        "name": "scale",
        "seq_len": 2048,
        "seed": 3,
        "shards": {"compression": "zstd", "hashes": ["sha1"], "size_limit": 64 * 1024 * 1024},
        # the stage's tokens are filled in once tokenize has counted them (see main)
        "stages": [{"name": "main", "tokens": 0, "components": [
            {"name": "web", "source": "web", "weight": 95, "max_epochs": 1},
            {"name": "curated", "source": "curated", "weight": 5, "max_epochs": 4},
        ]}],
    }  # fmt: skip
    with open(os.path.join(work, "mix.yaml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(mix, handle)
    config = {
        "lakehouse": {"root": os.path.join(work, "lakehouse")},
        "spark": {"master": f"local[{cores}]", "driver_memory": memory, "shuffle_partitions": 8 * cores},
        "sources": [{"name": name, "format": "jsonl", "paths": [os.path.join(corpus, name)]} for name in SHARES],
        "filter": {"quality": {"positive_sources": ["curated"], "negative_sources": ["spam"]}},
        "mds": {"mix": os.path.join(work, "mix.yaml")},
    }
    path = os.path.join(work, "scale.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle)
    return path


def set_stage_tokens(mix_path: str, web_tokens: int) -> None:
    """90% of the web's tokens (one epoch at most), curated upsampled to 5% of the stage."""
    with open(mix_path, encoding="utf-8") as handle:
        mix = yaml.safe_load(handle)
    mix["stages"][0]["tokens"] = int(web_tokens * 0.9 / 0.95)
    with open(mix_path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(mix, handle)


def table_totals(lakehouse: Lakehouse, table: TableSpec, where: str = "true", size: str = "octet_length(text)"):
    row = lakehouse.table(table).read().where(where).selectExpr("count(*) AS n", f"sum({size}) AS bytes").first()
    return int(row["n"]), int(row["bytes"] or 0)


@dataclass
class StageFigures:
    name: str
    seconds: float
    documents: int
    megabytes: float  # input (millions of tokens for MDS)

    def per_core(self, cores: int) -> float:
        return self.megabytes / self.seconds / cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="corpus size in GB (10^9 bytes)")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--memory", default="8g", help="Spark driver memory (local mode: the executors too)")
    parser.add_argument("--work", help="directory for the corpus and lakehouse (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--plan-from", help="no run: the capacity plan from an earlier run's output (its RESULT)")
    for name, value in vars(Plan()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value, help="capacity plan")
    args = parser.parse_args()
    plan = Plan(**{name: getattr(args, name) for name in vars(Plan())})
    if args.plan_from:
        rates, cores = rates_from_result(args.plan_from)
        text, core_hours = plan.format(rates)
        print(f"per-core rates of {args.plan_from} ({cores} cores)\n{text}")
        print(f"RESULT plan_core_hours={core_hours:.0f} plan_hours={core_hours / plan.cluster_cores:.1f}")
        return
    work = args.work or tempfile.mkdtemp(prefix="dataprep-scale-")
    os.makedirs(work, exist_ok=True)
    corpus = os.path.join(work, "corpus")
    try:
        started = time.perf_counter()
        sources = write_corpus(corpus, int(args.gb * 1e9), args.cores)
        raw_bytes, raw_records = sum(b for b, _ in sources.values()), sum(r for _, r in sources.values())
        print(f"corpus: {raw_bytes / 1e9:.2f} GB, {raw_records:,} records in {time.perf_counter() - started:.0f} s "
              f"({', '.join(f'{s} {b / 1e6:.0f} MB' for s, (b, _) in sources.items())})", flush=True)  # fmt: skip
        figures = run_pipeline(load_config(write_config(work, corpus, args.cores, args.memory)), raw_bytes)
        report(figures, args.cores, raw_bytes, plan)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def input_before(name: str, lakehouse: Lakehouse) -> tuple[int, float]:
    """(documents, MB) a stage is about to read, for the stages whose input is a table before they run."""
    if name == "filter":
        documents, size = table_totals(lakehouse, tables.BRONZE_DOCUMENTS)
    elif name == "dedup":
        documents, size = table_totals(lakehouse, tables.SILVER_DOCUMENTS, "keep")
    else:
        return 0, 0.0
    return documents, size / 1e6


def input_after(name: str, lakehouse: Lakehouse, summary: StageSummary, raw_bytes: int) -> tuple[int, float]:
    """(documents, MB) a stage read (millions of tokens for MDS), for the stages whose summary says it."""
    if name == "ingest":
        return sum(c.read for c in summary.sources.values()), raw_bytes / 1e6
    kept = lakehouse.table(tables.SILVER_DEDUP).read().where("keep").count() if name in ("tokenize", "mds") else 0
    if name == "tokenize":
        return kept, summary.bytes / 1e6
    if name == "mds":
        return kept, sum(stage.tokens_written for stage in summary.stages) / 1e6
    return 0, 0.0


def run_pipeline(config, raw_bytes: int) -> list[StageFigures]:
    """Every registered stage in order, timed, inside one pipeline run."""
    spark = get_spark(config.spark)
    spark_compat.quiet(spark)
    lakehouse = Lakehouse(spark, config.lakehouse)
    figures = []
    with pipeline(config):
        for spec in STAGES:
            documents, megabytes = input_before(spec.name, lakehouse)
            began = time.perf_counter()
            summary = run_stage(spec.name, spark, config)
            seconds = time.perf_counter() - began
            assert summary.reconciles, summary.format()
            after = input_after(spec.name, lakehouse, summary, raw_bytes)
            documents, megabytes = documents or after[0], megabytes or after[1]
            figures.append(StageFigures(spec.name, seconds, documents, megabytes))
            print(summary.format(), f"\n[{spec.name}: {seconds:.0f} s]", flush=True)
            if spec.name == "tokenize":  # the mix's budget follows what the corpus turned out to hold
                set_stage_tokens(config.mds.mix, sum(r["tokens"] for r in summary.by_slice if r["source"] == "web"))
    print_storage(lakehouse, config.mds.output)
    return figures


def print_storage(lakehouse: Lakehouse, mds_output: str) -> None:
    """Bytes on disk of each table (every version, as before VACUUM), the change feed's files among them, and of the
    MDS shards: the ratios of README's storage plan."""
    store = lakehouse.storage
    print(f"\n{'on disk':<26}{'MB':>10}{'change feed MB':>16}")
    specs = (tables.BRONZE_DOCUMENTS, tables.SILVER_DOCUMENTS, tables.SILVER_DEDUP, tables.SILVER_DEDUP_SIGNATURES,
             tables.GOLD_TOKENS)  # fmt: skip
    for spec in specs:
        files = store.list_files(lakehouse.table(spec).path)
        feed = sum(entry.size for entry in files if "/_change_data/" in entry.uri)
        print(f"{spec.name:<26}{sum(entry.size for entry in files) / 1e6:>10.0f}{feed / 1e6:>16.0f}")
    print(f"{'MDS shards':<26}{sum(entry.size for entry in store.list_files(mds_output)) / 1e6:>10.0f}")


@dataclass(frozen=True)
class Plan:
    """What a corpus of `tokens` tokens asks of each stage, in core-hours, given per-core rates like this run's.

    Yields are assumptions, not measurements (the synthetic corpus is cleaner than a crawl): the share of raw
    bytes the filter keeps and the share of those dedup keeps; FineWeb's published CommonCrawl figures are of
    this order. bytes_per_token: cl100k_base on real English prose (bench/tokenization.py: 100.5 MB, 22.8 M
    tokens) rather than this corpus's 5.3.
    """

    tokens: float = 12e12
    bytes_per_token: float = 4.4
    filter_keeps: float = 0.5
    dedup_keeps: float = 0.6
    cluster_cores: int = 2000

    def stage_inputs(self) -> dict[str, float]:
        """Each stage's input: MB of text, or millions of tokens for MDS."""
        gold = self.tokens * self.bytes_per_token / 1e6
        kept = gold / self.dedup_keeps
        raw = kept / self.filter_keeps
        return {"ingest": raw, "filter": raw, "dedup": kept, "tokenize": gold, "mds": self.tokens / 1e6}

    def format(self, per_core: dict[str, float]) -> tuple[str, float]:
        inputs = self.stage_inputs()
        lines = [
            f"capacity plan: {self.tokens / 1e12:g} T tokens kept = {inputs['tokenize'] / 1e6:,.0f} TB of text at "
            f"{self.bytes_per_token} bytes/token; the filter keeps {self.filter_keeps:.0%} of "
            f"{inputs['ingest'] / 1e6:,.0f} TB raw, dedup {self.dedup_keeps:.0%} of what it kept",
            f"{'stage':<10}{'input':>16}{'per core':>14}{'core-hours':>13}{f'hours on {self.cluster_cores} cores':>22}",
        ]
        total = 0.0
        for stage, amount in inputs.items():
            core_hours = amount / per_core[stage] / 3600
            total += core_hours
            unit = "T tok" if stage == "mds" else "TB"  # amounts are MB or millions of tokens
            shown = amount / 1e6
            lines.append(f"{stage:<10}{shown:>13,.1f} {unit:<5}{per_core[stage]:>9.2f}/s{core_hours:>13,.0f}"
                         f"{core_hours / self.cluster_cores:>22,.1f}")  # fmt: skip
        lines.append(f"{'total':<10}{'':>28}{total:>13,.0f}{total / self.cluster_cores:>22,.1f}")
        return "\n".join(lines), total


def rates_from_result(path: str) -> tuple[dict[str, float], int]:
    """Per-core rates from the RESULT line of an earlier run's output."""
    with open(path, encoding="utf-8") as handle:
        line = [line for line in handle if line.startswith("RESULT ")][-1]
    values = dict(pair.split("=", 1) for pair in line.split()[1:])
    rates = {stage: float(values[f"{stage}_{'mtok' if stage == 'mds' else 'mb'}_s_per_core"]) for stage in STAGE_NAMES}
    return rates, int(values["cores"])


def report(figures: list[StageFigures], cores: int, raw_bytes: int, plan: Plan) -> None:
    total = sum(f.seconds for f in figures)
    print(f"\n{'stage':<10}{'seconds':>9}{'documents':>12}{'input':>14}{'per s':>12}{'per s per core':>16}")
    for f in figures:
        unit = "M tokens" if f.name == "mds" else "MB"
        print(f"{f.name:<10}{f.seconds:>9.0f}{f.documents:>12,}{f.megabytes:>10.0f} {unit:<3}"
              f"{f.megabytes / f.seconds:>10.2f}{f.per_core(cores):>14.2f}")  # fmt: skip
    print(f"{'total':<10}{total:>9.0f}{'':>12}{raw_bytes / 1e6:>10.0f} MB {raw_bytes / 1e6 / total:>10.2f}"
          f"{raw_bytes / 1e6 / total / cores:>14.2f}")  # fmt: skip
    pairs = [f"gb={raw_bytes / 1e9:.2f}", f"cores={cores}", f"total_s={total:.0f}"]
    for f in figures:
        unit = "mtok" if f.name == "mds" else "mb"
        pairs += [f"{f.name}_s={f.seconds:.0f}", f"{f.name}_{unit}_s_per_core={f.per_core(cores):.3f}"]
    pairs.append(f"mb_s_per_core={raw_bytes / 1e6 / total / cores:.3f}")
    text, core_hours = plan.format({f.name: f.per_core(cores) for f in figures})
    print("\n" + text)
    pairs.append(f"plan_core_hours={core_hours:.0f}")
    print("RESULT " + " ".join(pairs))


if __name__ == "__main__":
    main()
