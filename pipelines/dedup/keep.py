"""Which documents dedup keeps: greedy in keep order over the verified-edge graph, computed in Spark rounds.

Why not one document per connected component: components chain (A~B and B~C with A and C far apart), so keeping
only the component's first document removes C although nothing kept is a near-duplicate of it, and its content is
lost. The rule here is the sequential greedy one: going through the documents best-first (their `rank`), a document
is kept unless a verified edge joins it to a document already kept. Every removed document therefore has a kept
near-duplicate, and no two kept documents are joined by an edge (the lexicographically first maximal independent set
under the rank order).

The sequential pass is replaced by rounds that give the same result (Blelloch, Fineman and Shun 2012, "Greedy
sequential maximal independent set and matching are parallel on average"): in each round a document ranked before
every undecided neighbour is kept (nothing before it can still be kept), and every undecided neighbour of a document
kept this round is removed; documents whose neighbours are all decided, and never removed, are kept. Random ranks
need few rounds (logarithmic in the graph's size); a chain ranked in order along its length needs one round per two
documents, hence a cap that raises rather than a loop that might not end. Each round is materialised (local
checkpoint), as in components.py, so the plan never grows with the rounds; the choices are aggregations (min over
struct ranks), never windows or collects, so a hub document with 10,000 neighbours is combined map-side.
"""

from __future__ import annotations

import functools

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

# Only a chain of about 2 x MAX_ROUNDS near-duplicates ranked in order along its length reaches it; random ranks
# need a number of rounds logarithmic in the size of the graph.
MAX_ROUNDS = 512


def keep_decisions(edges: DataFrame, ranks: DataFrame, max_rounds: int = MAX_ROUNDS) -> DataFrame:
    """edges (src, dst) of verified near-duplicates; ranks (doc_id, rank): a distinct, orderable rank for every
    document of an edge, smaller = kept first (`keep_key`). -> (doc_id, duplicate_of) for every document of an edge:
    duplicate_of is null for a kept document and, for a removed one, its best-ranked kept neighbour.
    Documents without an edge are not in the result: they are kept, and cost no round."""
    arcs = _arcs(edges, ranks).localCheckpoint()
    undecided, removed = arcs, []
    for _ in range(max_rounds):
        if undecided.isEmpty():
            return _duplicate_of(arcs, removed)
        removed_now = _removed_this_round(undecided)
        undecided = _without(undecided, removed_now)
        removed.append(removed_now)
    if undecided.isEmpty():
        return _duplicate_of(arcs, removed)
    raise RuntimeError(
        f"dedup keep decision did not finish in {max_rounds} rounds: {undecided.count() // 2} edges between "
        "undecided documents remain (a chain of near-duplicates ranked in order along its length takes one round per "
        "two documents); pass a larger max_rounds"
    )


def _arcs(edges: DataFrame, ranks: DataFrame) -> DataFrame:
    """Both directions of every edge, without self-loops or repeats: (node, node_rank, neighbour, neighbour_rank)."""
    undirected = edges.where(F.col("src") != F.col("dst")).select(
        F.col("src").alias("node"), F.col("dst").alias("neighbour")
    )
    both = undirected.unionByName(undirected.select(F.col("neighbour").alias("node"), F.col("node").alias("neighbour")))
    node_ranks = ranks.select(F.col("doc_id").alias("node"), F.col("rank").alias("node_rank"))
    neighbour_ranks = ranks.select(F.col("doc_id").alias("neighbour"), F.col("rank").alias("neighbour_rank"))
    return both.distinct().join(node_ranks, "node").join(neighbour_ranks, "neighbour")


def _removed_this_round(undecided: DataFrame) -> DataFrame:
    """(node) of the documents removed this round: the undecided neighbours of the documents ranked before all their
    undecided neighbours, which are kept."""
    lowest = undecided.groupBy("node", "node_rank").agg(F.min("neighbour_rank").alias("lowest_neighbour_rank"))
    kept = lowest.where(F.col("node_rank") < F.col("lowest_neighbour_rank")).select("node")
    return undecided.join(kept, "node").select(F.col("neighbour").alias("node")).distinct().localCheckpoint()


def _without(undecided: DataFrame, removed: DataFrame) -> DataFrame:
    """The arcs between documents still undecided. Dropping the arcs of removed documents drops every arc of a kept
    one too (all its undecided neighbours were removed), and leaves documents whose neighbours were all removed
    without arcs: they are kept."""
    remaining = undecided.join(removed, "node", "left_anti").join(
        removed.select(F.col("node").alias("neighbour")), "neighbour", "left_anti"
    )
    return remaining.localCheckpoint()


def _duplicate_of(arcs: DataFrame, removed_by_round: list[DataFrame]) -> DataFrame:
    """Each removed document's best-ranked kept neighbour. Not the one that removed it: a neighbour ranked before it
    may be kept in a later round (after its own better neighbours were removed)."""
    nothing = arcs.select("node").where(F.lit(False))
    removed = functools.reduce(DataFrame.unionByName, removed_by_round, nothing)
    kept_neighbours = arcs.join(removed, "node", "left_semi").join(
        removed.select(F.col("node").alias("neighbour")), "neighbour", "left_anti"
    )
    best = kept_neighbours.groupBy("node").agg(
        F.min(F.struct("neighbour_rank", "neighbour"))["neighbour"].alias("duplicate_of")
    )
    nodes = arcs.select("node").distinct()
    return nodes.join(best, "node", "left").select(F.col("node").alias("doc_id"), "duplicate_of")
