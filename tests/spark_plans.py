"""What Spark executed, read from the test session's event log: every physical plan (as started, and as adaptive
execution re-planned it), and the steps in them that would put a whole dataset into one task."""

from __future__ import annotations

import contextlib
import glob
import json
import os
from collections.abc import Iterator

_PLAN_EVENTS = (
    "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart",
    "org.apache.spark.sql.execution.ui.SparkListenerSQLAdaptiveExecutionUpdate",
)
_LIMITS = ("LocalLimit", "GlobalLimit", "CollectLimit", "TakeOrderedAndProject")


@contextlib.contextmanager
def executed_plans(events_directory: str) -> Iterator[list[dict]]:
    """The plan trees (`sparkPlanInfo`: nodeName, simpleString, children) of the SQL executions logged while the
    block ran. Spark flushes its event log at each SQL event, so the log's size before the block separates them."""
    plans: list[dict] = []
    path = _event_log(events_directory)
    start = os.path.getsize(path)
    yield plans
    with open(path, encoding="utf-8") as log:
        log.seek(start)
        for line in log:
            if not line.endswith("\n"):
                break  # an event still being written
            event = json.loads(line)
            if event.get("Event") in _PLAN_EVENTS:
                plans.append(event["sparkPlanInfo"])


def single_task_steps(plan: dict, allowed: tuple[str, ...] = ()) -> list[str]:
    """Operators that move a whole input into one partition: an exchange to a single partition (an unpartitioned
    window or sort, `repartition(1)`) or a coalesce to one partition, unless every row entering it comes out of
    a limit or an aggregate without grouping keys (O(partitions) rows), or an operator above it names one of the
    `allowed` functions (a step whose single partition is bounded by design, e.g. one shard written per task)."""
    found = []
    for node, ancestors in _nodes(plan, ()):
        name, text = node["nodeName"], node["simpleString"]
        single = (name == "Exchange" and text.startswith("Exchange SinglePartition")) or (
            name == "Coalesce" and text.strip() == "Coalesce 1"
        )
        if single and not all(_bounded(child) for child in node["children"]):
            if not any(marker in above for above in ancestors for marker in allowed):
                found.append(text)
    return found


def _bounded(node: dict) -> bool:
    """Every row this operator produces comes out of a limit or a global aggregate."""
    name, text = node["nodeName"], node["simpleString"]
    if name in _LIMITS or (name.endswith("Aggregate") and "keys=[]" in text):
        return True
    return bool(node["children"]) and all(_bounded(child) for child in node["children"])


def _nodes(plan: dict, ancestors: tuple[str, ...]) -> Iterator[tuple[dict, tuple[str, ...]]]:
    yield plan, ancestors
    for child in plan["children"]:
        yield from _nodes(child, (*ancestors, plan["simpleString"]))


def _event_log(directory: str) -> str:
    logs = glob.glob(os.path.join(directory, "*"))
    if len(logs) != 1:
        raise RuntimeError(f"{directory}: expected the test session's one event log, found {logs}")
    return logs[0]
