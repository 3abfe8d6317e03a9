"""Near-duplicate detection quality of the dedup stage with its defaults (Jaccard 0.8, 128 permutations, word
5-grams): precision and recall of "same cluster" pairs against exact Jaccard similarity of the shingle sets.

    source scripts/env.sh && python bench/dedup_quality.py [--originals 300] [--verify signature|exact|none]

Originals are non-overlapping pieces of real prose (Python's pydoc topics and module docstrings, 150-600 words).
Each gets 0-4 variants made by controlled edits (substituted, deleted and inserted words at rates from 0.5% to 15%),
so pair similarities spread across the threshold. Ground truth: every pair inside a family with exact Jaccard >= 0.8;
documents of different families share no text by construction (checked on every predicted pair anyway, since
precision uses the exact Jaccard of each predicted pair). The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import itertools
import random
import tempfile
from pydoc_data.topics import topics

from filters import _docstrings

from dataprep.config import parse_config
from dataprep.runner import run_stage
from pipelines import spark_compat
from pipelines.dedup.minhash import Shingling
from pipelines.dedup.settings import DedupConfig
from pipelines.lakehouse import Lakehouse
from pipelines.settings import SparkConfig
from pipelines.spark import get_spark

EDIT_RATES = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15)


def originals(count: int) -> list[str]:
    words = " ".join([text for _, text in sorted(topics.items())] + _docstrings()).split()
    rng = random.Random(5)
    pieces, position = [], 0
    while len(pieces) < count and position < len(words) - 600:
        length = rng.randint(150, 600)
        pieces.append(" ".join(words[position : position + length]))
        position += length
    return pieces


def variant(text: str, rate: float, rng: random.Random) -> str:
    words = text.split()
    out = []
    for word in words:
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


def jaccard(a: set[bytes], b: set[bytes]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=300)
    parser.add_argument("--verify", default=DedupConfig.verify, choices=("signature", "exact", "none"))
    parser.add_argument("--false-positive-weight", type=float, default=DedupConfig.false_positive_weight)
    args = parser.parse_args()
    rng = random.Random(9)
    documents, family = [], {}
    for index, text in enumerate(originals(args.originals)):
        members = [text] + [variant(text, rng.choice(EDIT_RATES), rng) for _ in range(rng.randint(0, 4))]
        for member in members:
            doc_id = f"doc{len(documents):06d}"
            documents.append((doc_id, member))
            family[doc_id] = index
    shingling = Shingling()
    shingles = {doc_id: set(shingling.shingles(text)[0]) for doc_id, text in documents}
    by_family: dict[int, list[str]] = {}
    for doc_id, index in family.items():
        by_family.setdefault(index, []).append(doc_id)
    truth = {
        (a, b)
        for members in by_family.values()
        for a, b in itertools.combinations(members, 2)
        if jaccard(shingles[a], shingles[b]) >= 0.8
    }

    spark = get_spark(SparkConfig(master="local[*]", shuffle_partitions=4))
    spark_compat.quiet(spark)
    with tempfile.TemporaryDirectory() as work:
        config = parse_config(
            {
                "lakehouse": {"root": work},
                "sources": [{"name": "b", "format": "text", "paths": [work]}],
                "dedup": {"verify": args.verify, "false_positive_weight": args.false_positive_weight},
            }
        )
        rows = [(doc_id, text, len(text), 0.5, True) for doc_id, text in documents]
        schema = "doc_id string, text string, n_chars long, quality_score double, keep boolean"
        Lakehouse(spark, config.lakehouse).table("silver.documents").overwrite(spark.createDataFrame(rows, schema))
        run_stage("dedup", spark, config)
        clusters: dict[str, list[str]] = {}
        for row in Lakehouse(spark, config.lakehouse).table("silver.dedup").read().collect():
            clusters.setdefault(row.cluster_id, []).append(row.doc_id)
    predicted = {tuple(sorted(pair)) for members in clusters.values() for pair in itertools.combinations(members, 2)}
    true_positive = sum(jaccard(shingles[a], shingles[b]) >= 0.8 for a, b in predicted)
    precision = true_positive / len(predicted) if predicted else 1.0
    recall = len(truth & predicted) / len(truth) if truth else 1.0
    print(f"{len(documents)} documents in {len(by_family)} families; {len(truth)} true pairs at Jaccard >= 0.8")
    print(f"predicted pairs {len(predicted)}: precision {precision:.4f}, recall {recall:.4f}")
    print(
        f"RESULT precision={precision:.4f} recall={recall:.4f} true_pairs={len(truth)} predicted_pairs={len(predicted)}"
    )


if __name__ == "__main__":
    main()
