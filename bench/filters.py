"""Our Gopher / C4 / FineWeb rules against datatrove's filters on the same documents, in one run:
keep/drop agreement per rule, and documents per second on one core.

    source scripts/env.sh && python bench/filters.py [--docs 2000]

The corpus is real prose that ships with Python (pydoc topics and module docstrings) cut into documents of 300 to
8,000 characters. datatrove runs in its own cached virtualenv (bench/peers/datatrove.txt), single-process, all four
of its filters on every document; we compute every stored signal of every document and apply all rules, also on one
core. Per-rule agreement compares each of our rules with a datatrove filter that has only the matching check on.
The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import sysconfig
import time
from pydoc_data.topics import topics

from peer_env import run_peer_script
from pipelines.filter.rules import DEFAULT_RULES
from pipelines.filter.signals import document_signals

RULES = {rule.name: rule for rule in DEFAULT_RULES}
# datatrove checks '#' and ellipses against one threshold; ours are two rules.
COMBINED = {"gopher_symbol_ratio": ("gopher_hash_ratio", "gopher_ellipsis_ratio")}


def corpus(count: int, seed: int = 11) -> list[str]:
    sources = [text for _, text in sorted(topics.items())] + _docstrings()
    prose = "\n\n".join(sources)
    rng = random.Random(seed)
    documents = []
    while len(documents) < count:
        start = rng.randrange(0, len(prose) - 9000)
        documents.append(prose[start : start + rng.randint(300, 8000)])
    return documents


def _docstrings() -> list[str]:
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for name in sorted(os.listdir(root)):
        if name.endswith(".py"):
            try:
                doc = ast.get_docstring(ast.parse(open(os.path.join(root, name), "rb").read()))
            except (SyntaxError, ValueError):
                continue
            if doc and len(doc) > 200:
                found.append(doc)
    return found


def our_verdicts(texts: list[str]) -> tuple[float, dict[str, list[bool]]]:
    started = time.perf_counter()
    signals = [document_signals(text, "text") for text in texts]
    verdicts = {
        name: [not rule.drops(s, "text", "en") for s in signals]
        for name, rule in RULES.items()
        if rule.kinds == ("text",) and name not in ("language_score", "quality_score")
    }
    seconds = time.perf_counter() - started
    for combined, parts in COMBINED.items():
        verdicts[combined] = [all(verdicts[p][i] for p in parts) for i in range(len(texts))]
    return seconds, verdicts


def datatrove_verdicts(texts: list[str]) -> tuple[float, dict[str, list[bool]]]:
    result = run_peer_script("datatrove", "_datatrove_filters.py", texts)
    return result["seconds"], result["verdicts"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    args = parser.parse_args()
    texts = corpus(args.docs)
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    ours_seconds, ours = our_verdicts(texts)
    theirs_seconds, theirs = datatrove_verdicts(texts)
    print(f"{len(texts)} documents, {megabytes:.1f} MB, one core each")
    print(f"{'rule':<32}{'agree':>8}{'ours drop':>11}{'datatrove drop':>16}")
    agreements = {}
    for rule in sorted(theirs):
        agree = sum(a == b for a, b in zip(ours[rule], theirs[rule], strict=True)) / len(texts)
        agreements[rule] = agree
        print(f"{rule:<32}{agree:>8.3f}{ours[rule].count(False):>11}{theirs[rule].count(False):>16}")
    ours_rate, theirs_rate = len(texts) / ours_seconds, len(texts) / theirs_seconds
    print(f"ours: {ours_rate:.0f} docs/s ({megabytes / ours_seconds:.2f} MB/s); datatrove: {theirs_rate:.0f} docs/s")
    worst = min(agreements, key=agreements.get)
    print(
        f"RESULT docs_s_per_core={ours_rate:.0f} datatrove_docs_s_per_core={theirs_rate:.0f} "
        f"x_vs_datatrove={ours_rate / theirs_rate:.2f} mean_agreement={sum(agreements.values()) / len(agreements):.4f} "
        f"min_agreement={agreements[worst]:.4f} min_agreement_rule={worst}"
    )


if __name__ == "__main__":
    main()
