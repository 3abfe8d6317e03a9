"""The MDS stage's config section (`mds:`): which mix, and where its shards go."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines import storage
from pipelines.settings import LakehouseConfig, Section, local_path, storage_path


@dataclass(frozen=True)
class MdsConfig:
    """Where the curriculum mixture is defined and where its MDS shards go."""

    mix: str | None = None  # path of a mixes/*.yaml file
    output: str | None = None  # default: <lakehouse root>/mds (must be a path every Spark worker can write)


def parse_mds(section: Section, lakehouse: LakehouseConfig) -> MdsConfig:
    mix = section.take("mix", str)
    output = section.take("output", str, default=storage.join(lakehouse.root, "mds"))
    section.reject_unknown()
    return MdsConfig(
        mix=local_path(section.where("mix"), mix) if mix else None, output=storage_path(section.where("output"), output)
    )
