"""The registry of the data stages, in pipeline order: the one list the command line (its subcommands,
`run --from`), the failpoint names, the scale benchmark and the bundle's tests derive from.

A new stage is its module (a run function returning a StageSummary) plus one line here.
"""

from __future__ import annotations

from pipelines import tables
from pipelines.stage import Option, StageSpec
from pipelines.tables import TableSpec

STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "ingest",
        "ingest the configured sources into bronze tables",
        reads=(),
        writes=(tables.BRONZE_DOCUMENTS, tables.BRONZE_QUARANTINE),
        sections=("sources", "ingest"),
        run="pipelines.ingest.stage:run_ingest",
        options=(Option("--source", "only", "only this source (repeatable)", "append", metavar="NAME"),),
    ),
    StageSpec(
        "filter",
        "signals, language ID, quality score and decisions into silver",
        reads=(tables.BRONZE_DOCUMENTS,),
        writes=(tables.SILVER_DOCUMENTS,),
        sections=("filter",),
        run="pipelines.filter.stage:run_filter",
        options=(Option("--retrain-quality", "retrain_quality", "train a new quality classifier", "store_true"),),
    ),
    StageSpec(
        "dedup",
        "MinHash near-deduplication of the kept documents into silver.dedup",
        reads=(tables.SILVER_DOCUMENTS,),
        writes=(tables.SILVER_DEDUP, tables.SILVER_DEDUP_SIGNATURES),
        sections=("dedup",),
        run="pipelines.dedup.stage:run_dedup",
    ),
    StageSpec(
        "tokenize",
        "cl100k_base tokens of the kept, deduplicated documents into gold",
        reads=(tables.SILVER_DOCUMENTS, tables.SILVER_DEDUP),
        writes=(tables.GOLD_TOKENS, tables.GOLD_TOKEN_STATS),
        sections=("tokenize",),
        run="pipelines.tokenize.stage:run_tokenize",
    ),
    StageSpec(
        "mds",
        "curriculum mixtures as MDS shards (every stage of a mix) from gold.tokens",
        reads=(tables.GOLD_TOKENS, tables.SILVER_DOCUMENTS),
        writes=(),
        sections=("mds",),
        run="pipelines.mds.stage:run_mds",
        preflight="pipelines.mds.stage:chosen_mix",
        options=(Option("--mix", "mix", "mixes/*.yaml (default: the config's mds.mix)", metavar="MIX.yaml"),),
    ),
)

STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)


def stage(name: str) -> StageSpec:
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise KeyError(f"no stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


def stages_from(first: str) -> tuple[StageSpec, ...]:
    """The stages from `first` on, in order (what `dataprep run --from` runs)."""
    return STAGES[STAGE_NAMES.index(stage(first).name) :]


def writer_of(table: TableSpec) -> str:
    """The stage that writes a table (what to run when it is missing)."""
    for spec in STAGES:
        if table in spec.writes:
            return spec.name
    raise KeyError(f"no registered stage writes {table.name}")
