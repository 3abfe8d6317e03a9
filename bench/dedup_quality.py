"""Near-duplicate detection quality of the dedup stage (Jaccard 0.8, 128 permutations, word 5-grams) on two
generated corpora, against the exact Jaccard similarity of every pair of documents' shingle sets.

    source scripts/env.sh && python bench/dedup_quality.py [--corpus standard|hard|both] [--seed 17]
        [--verify exact|signature|none] [--false-positive-weight W]

Both corpora by default (about 2.6 minutes on 2 cores); dedup settings not given are the stage's defaults.

Corpora (deterministic: fixed seeds, text that ships with Python):
  standard  up to 300 originals (222 fit) of 150-600 words, non-overlapping pieces of Python's pydoc topics and
            module docstrings, each with 0-4 variants made by substituted, deleted and inserted words at rates from
            0.5% to 15%.
  hard      120 originals (seed 17 by default) of 800-2,500 words (pydoc topics and every module, class and function
            docstring of the standard library), each with 3-10 variants derived from a random earlier member of the
            family (the original or another variant): word edits, a cut at the start or end, or word edits plus a
            moved block, each sized so that its Jaccard with the parent is drawn uniformly from 0.70-0.92, that is
            on both sides of 0.8 and mostly close to it; siblings and cousins fall further below.

Ground truth: every pair of documents in the corpus whose exact Jaccard (distinct word 5-grams, the stage's shingles)
is >= 0.8, found over all pairs that share a shingle (not only inside families). The figures, per corpus:
  precision          what dedup asserts: every removed document names the kept document it duplicates
                     (silver.dedup.duplicate_of); precision = the share of those pairs (removed, duplicate_of) that
                     are true pairs.
  recall             what dedup finds: the share of true pairs whose two documents share a cluster (cluster_id, the
                     connected components of the verified edges).
  doc_recall         of the documents that have a near-duplicate (a true pair with some other document), the share
                     that dedup recognised as one: its cluster holds at least one of its true near-duplicates.
  doc_precision      of the documents dedup removed, the share whose cluster holds one of their true
                     near-duplicates (so each had one in the corpus). Must be 1.0: removing a unique document
                     loses data.
  rep_precision      of the removed documents, the share whose duplicate_of is a KEPT document and a true
                     near-duplicate: the content of each removed document is still in the data. Equal to precision
                     when every duplicate_of is kept, which the stage guarantees; this checks it.
  cluster_precision  pairs of documents put in one cluster that are true pairs / clustered pairs. Clusters are
                     connected components, so a chain A~B~C puts A and C together even below 0.8 and this counts
                     such pairs as errors although every edge was a true pair: its ceiling (every true pair an edge)
                     is printed beside it. It describes the families, no longer what is removed.
  candidates_per_doc LSH candidate pairs (star edges from each bucket's best-ranked member, what verification reads)
                     per document: the cost of the band choice.
One `RESULT corpus=<name> ...` line per corpus, then a last `RESULT corpus=all ...` line with the lowest of each
quality figure and the highest candidates_per_doc.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import os
import random
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pydoc_data.topics import topics

import numpy as np
from filters import _docstrings
from scipy import sparse

from dataprep.config import parse_config
from dataprep.runner import run_stage
from pipelines import spark_compat
from pipelines.dedup.lsh import candidate_probability
from pipelines.dedup.minhash import Shingling
from pipelines.lakehouse import Lakehouse
from pipelines.settings import SparkConfig
from pipelines.spark import get_spark

THRESHOLD = 0.8
EDIT_RATES = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15)
CORPORA = ("standard", "hard")


def standard_corpus(count: int = 300) -> list[str]:
    """Originals of 150-600 words, each followed by 0-4 edited copies (the corpus of earlier versions, unchanged)."""
    rng = random.Random(9)
    documents = []
    for text in _pieces(_standard_words(), count, 150, 600, random.Random(5)):
        documents += [text] + [_edited(text, rng.choice(EDIT_RATES), rng) for _ in range(rng.randint(0, 4))]
    return documents


def hard_corpus(count: int = 120, seed: int = 17) -> list[str]:
    """Originals of 800-2,500 words, each followed by 3-10 variants of earlier members at Jaccard 0.70-0.92."""
    rng = random.Random(seed)
    documents = []
    for text in _pieces(_hard_words(), count, 800, 2500, random.Random(seed - 4)):
        family = [text]
        for _ in range(rng.randint(3, 10)):
            family.append(_variant_near(rng.choice(family), rng.uniform(0.70, 0.92), rng))
        documents += family
    return documents


def _standard_words() -> list[str]:
    return " ".join([text for _, text in sorted(topics.items())] + _docstrings()).split()


def _hard_words() -> list[str]:
    """pydoc topics, then every distinct module, class and function docstring (> 200 characters) of the stdlib."""
    root, seen, texts = sysconfig.get_paths()["stdlib"], set(), [text for _, text in sorted(topics.items())]
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d not in ("test", "tests", "site-packages", "idlelib"))
        for name in sorted(f for f in files if f.endswith(".py")):
            try:
                tree = ast.parse(open(os.path.join(directory, name), "rb").read())
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) > 200 and doc not in seen:
                        seen.add(doc)
                        texts.append(doc)
    return " ".join(texts).split()


def _pieces(words: list[str], count: int, shortest: int, longest: int, rng: random.Random) -> list[str]:
    """Up to `count` consecutive, non-overlapping runs of `shortest`-`longest` words (fewer when the text ends)."""
    pieces, position = [], 0
    while len(pieces) < count and position < len(words) - longest:
        length = rng.randint(shortest, longest)
        pieces.append(" ".join(words[position : position + length]))
        position += length
    return pieces


def _edited(text: str, rate: float, rng: random.Random) -> str:
    """Each word substituted, deleted or followed by an inserted word with probability rate / 3 each."""
    out = []
    for word in text.split():
        roll = rng.random()
        if roll < rate / 3:
            out.append(f"sub{rng.randrange(10**6)}")
        elif roll < 2 * rate / 3:
            continue
        elif roll < rate:
            out += [word, f"ins{rng.randrange(10**6)}"]
        else:
            out.append(word)
    return " ".join(out)


def _variant_near(text: str, similarity: float, rng: random.Random) -> str:
    """An edit of `text` whose Jaccard with it is close to `similarity`. A word edit breaks about 5 shingles of each
    side, so a share 2J/(1+J) of shingles survives when a word survives with probability (2J/(1+J))^(1/5)."""
    shared = 2 * similarity / (1 + similarity)
    kind = rng.choice(("words", "cut", "moved"))
    if kind == "cut":  # the variant is a part of the parent: Jaccard = its share of the parent's shingles
        words = text.split()
        keep = round(len(words) * similarity)
        start = rng.choice((0, len(words) - keep))
        return " ".join(words[start : start + keep])
    edited = _edited(text, 1 - shared ** (1 / 5), rng).split()
    if kind == "moved":  # and a block of 5-15% of the words moved elsewhere (breaks a dozen shingles)
        length = rng.randint(len(edited) // 20, len(edited) // 7)
        start = rng.randrange(len(edited) - length)
        block, rest = edited[start : start + length], edited[:start] + edited[start + length :]
        at = rng.randrange(len(rest))
        edited = rest[:at] + block + rest[at:]
    return " ".join(edited)


def shingle_sets(documents: dict[str, str]) -> dict[str, set[bytes]]:
    shingling = Shingling()
    return {doc_id: set(shingling.shingles(text)[0]) for doc_id, text in documents.items()}


def true_pairs(shingles: dict[str, set[bytes]]) -> set[tuple[str, str]]:
    """Every pair (a < b) with exact Jaccard >= THRESHOLD, over all pairs sharing a shingle: one sparse product of
    the document x shingle incidence matrix gives every intersection size."""
    ids = sorted(shingles)
    vocabulary: dict[bytes, int] = {}
    columns = [[vocabulary.setdefault(s, len(vocabulary)) for s in shingles[doc_id]] for doc_id in ids]
    rows = np.repeat(np.arange(len(ids)), [len(c) for c in columns])
    incidence = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int32), (rows, np.concatenate(columns))), shape=(len(ids), len(vocabulary))
    )
    common = sparse.triu(incidence @ incidence.T, k=1).tocoo()
    sizes = np.array([len(shingles[doc_id]) for doc_id in ids])
    union = sizes[common.row] + sizes[common.col] - common.data
    similar = common.data >= THRESHOLD * union
    return {(ids[a], ids[b]) for a, b in zip(common.row[similar], common.col[similar], strict=True)}


def clustering_ceiling(truth: set[tuple[str, str]]) -> float:
    """Pair precision if every true pair were an edge: the connected components of the true pairs hold pairs below
    the threshold through chains, so no band choice reaches a higher precision at full recall."""
    parent: dict[str, str] = {}

    def root(doc_id: str) -> str:
        while parent.setdefault(doc_id, doc_id) != doc_id:
            parent[doc_id] = parent[parent[doc_id]]
            doc_id = parent[doc_id]
        return doc_id

    for a, b in truth:
        parent[max(root(a), root(b))] = min(root(a), root(b))
    sizes: dict[str, int] = {}
    for doc_id in list(parent):
        sizes[root(doc_id)] = sizes.get(root(doc_id), 0) + 1
    pairs = sum(n * (n - 1) // 2 for n in sizes.values())
    return len(truth) / pairs if pairs else 1.0


@dataclass
class Decisions:
    cluster: dict[str, str]  # doc_id -> cluster_id
    kept: set[str]
    duplicate_of: dict[str, str]  # removed doc_id -> the kept doc_id it duplicates
    candidate_pairs: int
    bands: int
    rows: int
    seconds: float


@dataclass
class Quality:
    precision: float
    recall: float
    doc_recall: float
    doc_precision: float
    rep_precision: float
    cluster_precision: float
    candidates_per_doc: float
    true_pairs: int
    clustered_pairs: int
    with_duplicate: int
    removed: int

    def figures(self) -> dict[str, float]:
        """What the RESULT line reports."""
        names = (
            "precision",
            "recall",
            "doc_recall",
            "doc_precision",
            "rep_precision",
            "cluster_precision",
            "candidates_per_doc",
        )
        return {name: getattr(self, name) for name in names}


def quality(decisions: Decisions, truth: set[tuple[str, str]]) -> Quality:
    """The figures of the module docstring, from the stage's clusters, keep flags and duplicate_of."""
    members: dict[str, list[str]] = {}
    for doc_id, cluster_id in decisions.cluster.items():
        members.setdefault(cluster_id, []).append(doc_id)
    clustered = {tuple(sorted(p)) for group in members.values() for p in itertools.combinations(group, 2)}
    neighbours: dict[str, set[str]] = {}
    for a, b in truth:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    cluster = decisions.cluster
    recognised = {d for d, near in neighbours.items() if any(cluster[n] == cluster[d] for n in near)}
    removed = [d for d in cluster if d not in decisions.kept]
    asserted = [tuple(sorted((d, decisions.duplicate_of.get(d, "")))) for d in removed]
    true_asserted = sum(pair in truth for pair in asserted)
    beside_kept = sum(
        decisions.duplicate_of.get(d) in decisions.kept and decisions.duplicate_of[d] in neighbours.get(d, ())
        for d in removed
    )
    return Quality(
        precision=true_asserted / len(asserted) if asserted else 1.0,
        recall=len(clustered & truth) / len(truth) if truth else 1.0,
        doc_recall=len(recognised) / len(neighbours) if neighbours else 1.0,
        doc_precision=sum(d in recognised for d in removed) / len(removed) if removed else 1.0,
        rep_precision=beside_kept / len(removed) if removed else 1.0,
        cluster_precision=len(clustered & truth) / len(clustered) if clustered else 1.0,
        candidates_per_doc=decisions.candidate_pairs / len(cluster),
        true_pairs=len(truth),
        clustered_pairs=len(clustered),
        with_duplicate=len(neighbours),
        removed=len(removed),
    )


def run_dedup(spark, documents: dict[str, str], dedup: dict) -> Decisions:
    """The dedup stage, with the `dedup:` section given, on `documents` (all kept by the filter, equal quality)."""
    with tempfile.TemporaryDirectory() as work:
        config = parse_config(
            {"lakehouse": {"root": work}, "sources": [{"name": "b", "format": "text", "paths": [work]}], "dedup": dedup}
        )
        rows = [(doc_id, text, len(text), 0.5, True) for doc_id, text in documents.items()]
        schema = "doc_id string, text string, n_chars long, quality_score double, keep boolean"
        Lakehouse(spark, config.lakehouse).table("silver.documents").overwrite(spark.createDataFrame(rows, schema))
        started = time.monotonic()
        summary = run_stage("dedup", spark, config)
        seconds = time.monotonic() - started
        result = Lakehouse(spark, config.lakehouse).table("silver.dedup").read().collect()
    return Decisions(
        cluster={row.doc_id: row.cluster_id for row in result},
        kept={row.doc_id for row in result if row.keep},
        duplicate_of={row.doc_id: row.duplicate_of for row in result if not row.keep},
        candidate_pairs=summary.candidate_pairs,
        bands=summary.bands,
        rows=summary.rows,
        seconds=seconds,
    )


def result_line(corpus: str, figures: dict[str, float], **extra: int) -> str:
    values = [f"{key}={value:.{3 if key == 'candidates_per_doc' else 4}f}" for key, value in figures.items()]
    return " ".join(["RESULT", f"corpus={corpus}", *values, *(f"{key}={value}" for key, value in extra.items())])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="both", choices=(*CORPORA, "both"))
    parser.add_argument("--originals", type=int, help="originals of the standard corpus (default 300)")
    parser.add_argument("--families", type=int, help="originals of the hard corpus (default 120)")
    parser.add_argument("--seed", type=int, default=17, help="seed of the hard corpus (default 17)")
    parser.add_argument("--verify", choices=("exact", "signature", "none"))
    parser.add_argument("--false-positive-weight", type=float)
    args = parser.parse_args()
    dedup = {"verify": args.verify, "false_positive_weight": args.false_positive_weight}
    dedup = {key: value for key, value in dedup.items() if value is not None}
    builders = {
        "standard": lambda: standard_corpus(args.originals or 300),
        "hard": lambda: hard_corpus(args.families or 120, args.seed),
    }
    spark = get_spark(SparkConfig(master="local[*]", shuffle_partitions=4))
    spark_compat.quiet(spark)
    figures = []
    for corpus in CORPORA if args.corpus == "both" else (args.corpus,):
        documents = {f"doc{i:06d}": text for i, text in enumerate(builders[corpus]())}
        truth = true_pairs(shingle_sets(documents))
        decisions = run_dedup(spark, documents, dedup)
        q = quality(decisions, truth)
        figures.append(q.figures())
        words = sum(len(text.split()) for text in documents.values())
        at_threshold = candidate_probability(THRESHOLD, decisions.bands, decisions.rows)
        print(
            f"{corpus}: {len(documents)} documents ({words / len(documents):.0f} words on average), "
            f"{q.with_duplicate} with a near-duplicate, {q.true_pairs} true pairs at Jaccard >= {THRESHOLD}"
        )
        print(
            f"{corpus}: LSH {decisions.bands} bands x {decisions.rows} rows (dedup: {dedup or 'defaults'}; a pair at "
            f"{THRESHOLD} is a candidate with probability {at_threshold:.4f}), stage {decisions.seconds:.1f} s; "
            f"{decisions.candidate_pairs} candidate pairs, {q.candidates_per_doc:.3f} per document"
        )
        print(
            f"{corpus}: {q.removed} removed: precision {q.precision:.4f} (removed, duplicate_of pairs that are true), "
            f"rep precision {q.rep_precision:.4f}, doc precision {q.doc_precision:.4f}; recall {q.recall:.4f}, doc "
            f"recall {q.doc_recall:.4f}; {q.clustered_pairs} clustered pairs: cluster precision "
            f"{q.cluster_precision:.4f} (every true pair an edge: {clustering_ceiling(truth):.4f})"
        )
        print(result_line(corpus, q.figures(), bands=decisions.bands, rows=decisions.rows, true_pairs=q.true_pairs))
    if len(figures) > 1:
        worst = {key: (max if key == "candidates_per_doc" else min)(f[key] for f in figures) for key in figures[0]}
        print(result_line("all", worst))


if __name__ == "__main__":
    main()
