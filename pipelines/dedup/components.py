"""Connected components of a doc_id graph in Spark, without collecting it: alternating large-star and small-star
(Kiveris et al. 2014, "Connected Components in MapReduce and Beyond").

Each round rewires edges toward the smallest label in a neighbourhood; when a round changes nothing every edge is
(node, component) with component = the smallest doc_id of the component. Each round's edges are
materialised (local checkpoint), so the plan never grows with the number of rounds, and convergence is read from a
fingerprint (count and order-free hashes) instead of a set difference.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def connected_components(edges: DataFrame, max_rounds: int = 64) -> DataFrame:
    """edges (src, dst) of strings -> (node, component) for every node that has an edge; component = min node."""
    current = _normalised(edges).localCheckpoint()
    fingerprint = _fingerprint(current)
    for _ in range(max_rounds):
        # Materialised every round: the convergence check and the next round both read it.
        updated = _small_star(_large_star(current)).localCheckpoint()
        updated_fingerprint = _fingerprint(updated)
        if updated_fingerprint == fingerprint:
            return _labels(updated)
        current, fingerprint = updated, updated_fingerprint
    raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")


def _normalised(edges: DataFrame) -> DataFrame:
    """Undirected, no self-loops, no duplicates, oriented (larger, smaller)."""
    return (
        edges.where(F.col("src") != F.col("dst"))
        .select(F.greatest("src", "dst").alias("u"), F.least("src", "dst").alias("v"))
        .distinct()
    )


def _large_star(edges: DataFrame) -> DataFrame:
    """For each node u: connect every larger neighbour to the smallest of u's neighbourhood (u included)."""
    both = edges.select("u", "v").unionByName(edges.select(F.col("v").alias("u"), F.col("u").alias("v")))
    smallest = both.groupBy("u").agg(F.least(F.min("v"), F.first("u")).alias("m"))
    larger = both.where(F.col("v") > F.col("u")).join(smallest, "u")
    return larger.select(F.col("v").alias("u"), F.col("m").alias("v")).where(F.col("u") != F.col("v")).distinct()


def _small_star(edges: DataFrame) -> DataFrame:
    """For each node u with its smaller neighbours N: connect u and every node of N to the smallest of N and u."""
    smallest = edges.groupBy("u").agg(F.least(F.min("v"), F.first("u")).alias("m"))
    members = edges.select("u", "v").unionByName(smallest.select("u", F.col("u").alias("v")))
    rewired = members.join(smallest, "u").select(F.col("v").alias("u"), F.col("m").alias("v"))
    oriented = rewired.select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v"))
    return oriented.where(F.col("u") != F.col("v")).distinct()


def _fingerprint(edges: DataFrame) -> tuple[int, int, int]:
    """Count and two order-free 64-bit sums of the (distinct) edges: equal fingerprints mean an unchanged set."""
    row = edges.agg(
        F.count("*").alias("n"),
        F.sum(F.xxhash64("u", "v").cast("decimal(38,0)")).alias("h1"),
        F.sum(F.xxhash64("v", "u", F.lit(7)).cast("decimal(38,0)")).alias("h2"),
    ).first()
    return row["n"], int(row["h1"] or 0), int(row["h2"] or 0)


def _labels(edges: DataFrame) -> DataFrame:
    """After convergence each edge is (node, component); the component's own row is added."""
    members = edges.select(F.col("u").alias("node"), F.col("v").alias("component"))
    roots = edges.select(F.col("v").alias("node"), F.col("v").alias("component"))
    return members.unionByName(roots).groupBy("node").agg(F.min("component").alias("component"))
