"""What changed in a source table since a stage last caught up with it, read from Delta's change data feed.

A stage that derives its table from a source table (the filter: silver.documents from bronze.documents) records, in
its own table's properties, the source version it has caught up with and a fingerprint of what its rows depend on
besides the source (the filter: the versions of its signals). The next run reads the feed of the commits since then,
never the whole source. When it cannot, `catch_up` says why and the stage reads the whole source as before: nothing
recorded yet, another fingerprint, a source that was replaced (its version went back), or a feed that does not reach
back that far (turned on later, or older than the history VACUUM keeps, whose change files it deletes). The record is
written after the stage's own commits, so a run that dies reads the same changes again, which the stages' MERGEs make
harmless.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.lakehouse import CHANGE_FEED, Table, retry_on_conflict

_PROPERTY = "dataprep.caughtUp."  # + the source's label: "<version> <fingerprint>"
_PRESENT = ("insert", "update_postimage")  # change types after which the row is in the table
_FEED_COLUMNS = ("_change_type", "_commit_version", "_commit_timestamp")
# VACUUM goes by a file's age, and a long MERGE writes its change files before it commits: they are older than their
# commit by up to the job's length, so a commit a little younger than the retention may have lost them already.
_VACUUM_MARGIN_HOURS = 24


@dataclass(frozen=True)
class CatchUp:
    """What a run reads of its source: versions `start` to `end` of the feed, or (`start` None) the whole table."""

    end: int  # the source's version when the run began: what it catches up to
    start: int | None  # first version whose commits are read; end + 1 when no row changed
    reason: str = ""  # why the whole source is read
    recorded: str | None = None  # the progress the target recorded when the run began

    @property
    def whole(self) -> bool:
        return self.start is None

    @property
    def unchanged(self) -> bool:
        """No commit to the source's rows since the version recorded (upkeep at most): nothing to read."""
        return self.start is not None and self.start > self.end

    def describe(self, source: Table) -> str:
        if self.whole:
            return f"all of {source.label} ({self.reason})"
        if self.unchanged:
            return f"nothing of {source.label} (caught up with version {self.end})"
        return f"the changes to {source.label} in versions {self.start}-{self.end}"


def catch_up(target: Table, source: Table, fingerprint: str, retain_hours: float | None = None) -> CatchUp:
    """Where a run deriving `target` from `source` under `fingerprint` starts reading. With `retain_hours` (how much
    history `dataprep maintain`'s VACUUM keeps: lakehouse.maintain.retain_hours), a first commit to read older than
    that, less a day's margin, means the whole source: VACUUM deletes the change files of such commits while the log
    still lists them, and a read of the feed would fail half-way through instead of here."""
    end = source.version()
    if source.detail().properties.get(CHANGE_FEED) != "true":
        return CatchUp(end, None, f"{source.label} has no change data feed (`dataprep maintain` turns it on)")
    recorded = target.detail().properties.get(_PROPERTY + source.label)
    if recorded is None:
        return CatchUp(end, None, f"{target.label} records no version of {source.label} yet")
    plan = functools.partial(CatchUp, end, recorded=recorded)
    version_text, _, seen = recorded.partition(" ")
    if seen != fingerprint:
        return plan(None, f"{target.label} was derived under {seen!r}, now {fingerprint!r}")
    version = int(version_text)
    if version > end:
        return plan(None, f"{source.label} is at version {end}, before the {version} last read: replaced")
    if version == end or source.data_version() <= version:  # nothing since, or upkeep only (OPTIMIZE, VACUUM)
        return plan(end + 1)
    if retain_hours is not None:
        age_hours = _age_hours(source, version + 1, end)
        if age_hours >= retain_hours - _VACUUM_MARGIN_HOURS:
            reason = (f"version {version + 1} of {source.label} was committed {age_hours:.0f} h ago, near or beyond "
                      f"the {retain_hours} h of history VACUUM keeps: its change files may be gone")  # fmt: skip
            return plan(None, reason)
    try:
        # A feed that does not cover the range fails when its files are listed (this reads one file at most).
        source.changes(version + 1, end).limit(1).count()
    except AnalysisException as error:  # DELTA_MISSING_CHANGE_DATA, or versions no longer in the log
        return plan(None, f"the change feed of {source.label} does not cover versions {version + 1}-{end} "
                          f"({error.getCondition() or str(error).splitlines()[0]})")  # fmt: skip
    return plan(version + 1)


def _age_hours(source: Table, version: int, end: int) -> float:
    """Hours since `source` committed `version` (reading the log's commits back to it, no data)."""
    age_seconds = F.current_timestamp().cast("double") - F.col("timestamp").cast("double")
    # DESCRIBE HISTORY counts back from the latest version, which a writer may have moved past `end` meanwhile: then
    # once more from the latest.
    for latest in (end, source.version()):
        row = source.history(latest - version + 1).where(F.col("version") == version).select(age_seconds).first()
        if row is not None:
            return float(row[0]) / 3600
    return float("inf")  # no longer in the log: as old as can be


def record(target: Table, source: Table, caught_up: CatchUp, fingerprint: str) -> None:
    """Notes on `target` that it is derived from `source` up to `caught_up.end` under `fingerprint` (no commit when
    that is what it already says: a run that found nothing new leaves the table as it was)."""
    set_properties(target, progress(source, caught_up, fingerprint))


def progress(source: Table, caught_up: CatchUp, fingerprint: str) -> dict[str, str]:
    """The property `record` sets, for a stage that commits it with others (one commit); empty when the target
    already says so."""
    value = f"{caught_up.end} {fingerprint}"
    return {} if value == caught_up.recorded else {_PROPERTY + source.label: value}


def set_properties(target: Table, properties: dict[str, str]) -> None:
    """Sets `properties` on `target` in one commit, none when empty; retried on a conflicting concurrent commit."""
    if properties:
        retry_on_conflict(lambda: target.set_properties(properties), f"progress of {target.label}")


def forget(target: Table, source: Table) -> None:
    """Drops `target`'s record of `source`: its next run reads the whole source. For a target edited outside its
    stage (an UPDATE by hand), whose rows the record no longer describes."""
    target.unset_property(_PROPERTY + source.label)


def changed_keys(source: Table, caught_up: CatchUp, key: str) -> DataFrame:
    """The distinct `key`s of every row the commits of `caught_up` inserted, updated or deleted (one column)."""
    if caught_up.unchanged:
        return source.read().select(key).limit(0)
    return source.changes(caught_up.start, caught_up.end).select(key).distinct()


def net_changes(source: Table, caught_up: CatchUp, key: str) -> tuple[DataFrame, DataFrame]:
    """(present, removed) over the commits of `caught_up`: the newest image of every row they inserted or updated
    that is in the table at `end` (the source's columns), and the `key`s they took out of it. A key changed several
    times counts once, as it ended."""
    if caught_up.unchanged:
        empty = source.read().limit(0)
        return empty, empty.select(key)
    feed = source.changes(caught_up.start, caught_up.end)
    # Per key, its last change: the newest commit, and in it the image that stays (an update's postimage).
    last = F.max(F.struct(F.col("_commit_version"), F.col("_change_type").isin(*_PRESENT).alias("present")))
    # Materialised (one row per changed key): both results and every action on them would otherwise read the feed
    # and aggregate it again.
    ends = feed.groupBy(key).agg(last.alias("last")).select(key, "last.*").localCheckpoint()
    present_keys = ends.where("present").select(key, "_commit_version")
    images = feed.where(F.col("_change_type").isin(*_PRESENT)).join(present_keys, [key, "_commit_version"])
    removed = ends.where(~F.col("present")).select(key)
    return images.drop(*_FEED_COLUMNS), removed
