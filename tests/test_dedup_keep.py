"""The keep rule in Spark rounds (pipelines/dedup/keep.py) against a plain sequential greedy pass in keep order."""

import itertools
import random

import pytest

from pipelines.dedup.keep import keep_decisions

RANK = "doc_id string, rank struct<score:int, doc_id:string>"


def greedy_keep(ranks: dict[str, tuple], edges: list[tuple[str, str]]) -> dict[str, str | None]:
    """Best-first, a document is kept unless an edge joins it to a document already kept; a removed document's
    duplicate_of is its best-ranked kept neighbour. Every document with an edge -> duplicate_of (None: kept)."""
    neighbours: dict[str, set[str]] = {}
    for a, b in edges:
        if a != b:
            neighbours.setdefault(a, set()).add(b)
            neighbours.setdefault(b, set()).add(a)
    kept: set[str] = set()
    for node in sorted(neighbours, key=ranks.__getitem__):
        if not neighbours[node] & kept:
            kept.add(node)
    return {node: None if node in kept else min(neighbours[node] & kept, key=ranks.__getitem__) for node in neighbours}


def decide(spark, ranks: dict[str, tuple], edges: list[tuple[str, str]], partitions: int = 1, **options) -> dict:
    edge_frame = spark.createDataFrame(edges, "src string, dst string").repartition(partitions)
    rank_frame = spark.createDataFrame(list(ranks.items()), RANK).repartition(partitions)
    return {row.doc_id: row.duplicate_of for row in keep_decisions(edge_frame, rank_frame, **options).collect()}


@pytest.mark.parametrize("seed, shuffle_partitions, input_partitions", [(1, 1, 1), (2, 5, 3)])
def test_the_rounds_keep_what_the_sequential_greedy_pass_keeps(spark, seed, shuffle_partitions, input_partitions):
    rng = random.Random(seed)
    nodes = [f"d{i:03d}" for i in range(120)]
    ranks = {node: (rng.randint(0, 9), node) for node in nodes}  # ties on score: the doc_id decides
    edges = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(130)]  # self-loops and repeats included
    # Chains ranked in order along their length (one round per two documents), against it, and at random.
    for name, scores in [("up", range(10)), ("down", range(10, 0, -1)), ("mixed", rng.sample(range(10), 10))]:
        chain = [f"{name}{i}" for i in range(10)]
        ranks |= {node: (score, node) for node, score in zip(chain, scores, strict=True)}
        edges += list(itertools.pairwise(chain))
    edges += [("d000", f"leaf{i:02d}") for i in range(40)]  # a hub with 40 leaves, ranked before or after it
    ranks |= {f"leaf{i:02d}": (rng.randint(0, 9), f"leaf{i:02d}") for i in range(40)}
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions))
    try:
        got = decide(spark, ranks, edges, input_partitions)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)
    assert got == greedy_keep(ranks, edges)
    assert got["up0"] is None and got["up1"] == "up0" and got["up2"] is None  # kept, removed, kept along the chain


def test_a_removed_document_names_its_best_kept_neighbour_even_if_kept_in_a_later_round(spark):
    """e < d < c < a < b, edges e-d, d-c, c-b, a-b: round one keeps e and a and removes d and b; c, left without an
    undecided neighbour, is kept after. b is removed by a, but c is its best-ranked kept neighbour."""
    ranks = {name: (score, name) for score, name in enumerate("edcab")}
    got = decide(spark, ranks, [("e", "d"), ("d", "c"), ("c", "b"), ("a", "b")])
    assert got == {"e": None, "a": None, "c": None, "d": "e", "b": "c"}


def test_a_chain_longer_than_the_round_cap_raises(spark):
    chain = [f"c{i}" for i in range(8)]
    ranks = {node: (i, node) for i, node in enumerate(chain)}
    with pytest.raises(RuntimeError, match="did not finish in 2 rounds: 3 edges between undecided documents remain"):
        decide(spark, ranks, list(itertools.pairwise(chain)), max_rounds=2)
