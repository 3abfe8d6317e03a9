"""Connected components in Spark against a plain union-find."""

import random

import pytest

from pipelines.dedup.components import connected_components


def union_find_components(edges: list[tuple[str, str]]) -> dict[str, str]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {node: find(node) for node in parent}


@pytest.mark.parametrize("seed", [1, 2])
def test_components_equal_union_find_on_random_graphs(spark, seed):
    rng = random.Random(seed)
    nodes = [f"d{i:04d}" for i in range(300)]
    edges = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(220)]
    edges += [(nodes[i], nodes[i + 1]) for i in range(100, 130)]  # one long chain: many rounds of label passing
    frame = spark.createDataFrame(edges, "src string, dst string")
    got = {row.node: row.component for row in connected_components(frame).collect()}
    expected = union_find_components([e for e in edges if e[0] != e[1]])
    assert got == expected


def test_a_10000_node_star_and_a_path_converge(spark):
    star = [("hub", f"leaf{i:05d}") for i in range(10_000)]
    path = [(f"p{i:03d}", f"p{i + 1:03d}") for i in range(60)]
    frame = spark.createDataFrame(star + path, "src string, dst string")
    got = {row.node: row.component for row in connected_components(frame).collect()}
    assert {got[f"leaf{i:05d}"] for i in range(10_000)} == {"hub"} and got["hub"] == "hub"
    assert {got[f"p{i:03d}"] for i in range(61)} == {"p000"}
