"""`dataprep` command line: thin shells over the stage functions (the same ones jobs and notebooks call).

    dataprep demo [--lakehouse DIR]         build the demo corpus and run the pipeline on it
    dataprep run --config FILE [--mix MIX.yaml] [--from STAGE]   every stage below, in order, under one MLflow run
    dataprep ingest --config FILE [--source NAME ...]
    dataprep filter --config FILE [--retrain-quality]
    dataprep dedup --config FILE
    dataprep tokenize --config FILE
    dataprep mds write --config FILE [--mix MIX.yaml]
    dataprep train --config FILE [--mix MIX.yaml] [--max-steps N] [--nproc N|auto]   the MoE model on the curriculum
    dataprep report [--config FILE] [--run ID] [--compare [ID]]   latest pipeline run, or what changed since another
    dataprep mds verify DIR               check an MDS directory: hashes, counts, token ids, manifest
    dataprep redecide --config FILE [--dry-run]
    dataprep validate --config FILE         check a config and print what it resolves to

Exit codes: 0 done; 2 bad config or missing input (nothing was read); 3 the run's counts do not reconcile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from importlib import resources

from pipelines.config import ConfigError, PipelineConfig, load_config
from pipelines.ingest.planning import MissingInputError

EXIT_BAD_INPUT = 2
EXIT_NOT_RECONCILED = 3
PIPELINE_STAGES = ("ingest", "filter", "dedup", "tokenize", "mds")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.handler(args)
    except (ConfigError, MissingInputError) as error:
        print(f"dataprep: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dataprep", description="LLM pretraining data factory on Spark + Delta")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="build the demo corpus and run the pipeline end to end")
    demo.add_argument("--train-steps", type=int, help="train the tiny model this many steps (0: skip training); "
                      "default: the whole demo curriculum")  # fmt: skip
    demo.add_argument("--lakehouse", default=os.environ.get("DATAPREP_LAKEHOUSE", "./lakehouse"))
    demo.set_defaults(handler=_demo)

    run = commands.add_parser("run", help="ingest, filter, dedup, tokenize, mds in order, under one MLflow run")
    run.add_argument("--config", required=True)
    run.add_argument("--mix", help="mixes/*.yaml (default: the config's mds.mix)")
    run.add_argument("--from", dest="first_stage", choices=PIPELINE_STAGES, default=PIPELINE_STAGES[0],
                     help="start at this stage (after a failed run: the stages before it are done)")  # fmt: skip
    run.set_defaults(handler=_run)

    ingest = commands.add_parser("ingest", help="ingest the configured sources into bronze tables")
    ingest.add_argument("--config", required=True)
    ingest.add_argument("--source", action="append", help="only this source (repeatable)")
    ingest.set_defaults(handler=_ingest)

    filtering = commands.add_parser("filter", help="signals, language ID, quality score and decisions into silver")
    filtering.add_argument("--config", required=True)
    filtering.add_argument("--retrain-quality", action="store_true", help="train a new quality classifier")
    filtering.set_defaults(handler=_filter)

    dedup = commands.add_parser("dedup", help="MinHash near-deduplication of the kept documents into silver.dedup")
    dedup.add_argument("--config", required=True)
    dedup.set_defaults(handler=_dedup)

    tokenize = commands.add_parser("tokenize", help="cl100k_base tokens of the kept, deduplicated documents into gold")
    tokenize.add_argument("--config", required=True)
    tokenize.set_defaults(handler=_tokenize)

    mds_parser = commands.add_parser("mds", help="curriculum mixtures as MDS shards; verify MDS directories")
    mds_commands = mds_parser.add_subparsers(dest="mds_command", required=True)
    mds_write = mds_commands.add_parser("write", help="write every stage of a mix from gold.tokens")
    mds_write.add_argument("--config", required=True)
    mds_write.add_argument("--mix", help="mixes/*.yaml (default: the config's mds.mix)")
    mds_write.set_defaults(handler=_mds_write)
    mds_verify = mds_commands.add_parser("verify", help="hashes, sample counts, token ids, manifest totals")
    mds_verify.add_argument("directory")
    mds_verify.set_defaults(handler=_mds_verify)

    train = commands.add_parser("train", help="train the MoE model on the mix's MDS curriculum (resumes if it can)")
    config_source = train.add_mutually_exclusive_group(required=True)
    config_source.add_argument("--config")
    config_source.add_argument("--demo-lakehouse", help="use the demo's config for this lakehouse (what `demo` runs)")
    train.add_argument("--mix", help="mixes/*.yaml whose MDS stages to train on (default: the config's mds.mix)")
    train.add_argument("--max-steps", type=int, help="stop after this many steps (overrides train.max_steps)")
    train.add_argument("--nproc", default="1", help="processes on this node, one per GPU ('auto': every GPU); "
                       "more than one runs under torchrun with FSDP2")  # fmt: skip
    train.set_defaults(handler=_train)

    report = commands.add_parser("report", help="the latest pipeline run's report, or what changed between two")
    report.add_argument("--config", help="the pipeline's config (default: the demo's, over --lakehouse)")
    report.add_argument("--lakehouse", default=os.environ.get("DATAPREP_LAKEHOUSE", "./lakehouse"))
    report.add_argument("--run", help="a pipeline run id (or its prefix); default: the latest")
    report.add_argument(
        "--compare", nargs="?", const="previous", help="compare with this run id (default: the run before it)"
    )
    report.set_defaults(handler=_report_runs)

    redecide = commands.add_parser("redecide", help="re-apply the config's rules to stored signals (no recompute)")
    redecide.add_argument("--config", required=True)
    redecide.add_argument("--dry-run", action="store_true", help="report the flips without writing them")
    redecide.set_defaults(handler=_redecide)

    validate = commands.add_parser("validate", help="validate a config file and print it resolved")
    validate.add_argument("--config", required=True)
    validate.set_defaults(handler=_validate)
    return parser


def demo_config(lakehouse: str) -> PipelineConfig:
    """The packaged demo config with its variables filled in for this machine."""
    from pipelines.demo import python_stdlib

    root = os.path.abspath(lakehouse)
    variables = {
        "DATAPREP_LAKEHOUSE": root,
        "PYTHON_STDLIB": python_stdlib(),
        "DEMO_CORPUS": os.path.join(root, "demo_corpus"),
        "DATAPREP_MIXES": os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mixes"),
    }
    with resources.as_file(resources.files("pipelines") / "defaults" / "demo.yaml") as path:
        return load_config(path, variables)


def _demo(args: argparse.Namespace) -> int:
    from pipelines.demo import build_demo_corpus

    config = demo_config(args.lakehouse)
    sizes = build_demo_corpus(os.path.join(config.lakehouse.root, "demo_corpus"))
    stdlib = config.source("python_stdlib").paths[0]
    print(f"demo corpus: {sizes} prose documents, plus the standard library at {stdlib}")
    if args.train_steps == 0:
        return _run_pipeline(config, None)
    train_argv = ["train", "--demo-lakehouse", config.lakehouse.root]
    if args.train_steps is not None:
        train_argv += ["--max-steps", str(args.train_steps)]
    return _run_pipeline(config, None, then=lambda: main(train_argv))


def _run(args: argparse.Namespace) -> int:
    return _run_pipeline(load_config(args.config), args.mix, first_stage=args.first_stage)


def _run_pipeline(config: PipelineConfig, mix_path: str | None, then=None, first_stage: str = "ingest") -> int:
    """The stages from `first_stage` on, in order, as children of one MLflow pipeline run; stops at the first stage
    that fails. `then` (the demo's training) runs last, inside the same parent run."""
    import mlflow

    from pipelines.tracking import pipeline_run

    stages = {
        "ingest": lambda: _run_ingest(config, None),
        "filter": lambda: _run_filter(config, retrain_quality=False),
        "dedup": lambda: _run_dedup(config),
        "tokenize": lambda: _run_tokenize(config),
        "mds": lambda: _run_mds(config, mix_path),
    }
    with pipeline_run(config):
        mlflow.set_tag("dataprep.first_stage", first_stage)  # the report then expects no earlier stage
        for name in PIPELINE_STAGES[PIPELINE_STAGES.index(first_stage) :]:
            exit_code = stages[name]()
            if exit_code:
                return exit_code
        return then() if then else 0


def _ingest(args: argparse.Namespace) -> int:
    return _run_ingest(load_config(args.config), args.source)


def _filter(args: argparse.Namespace) -> int:
    return _run_filter(load_config(args.config), args.retrain_quality)


def _dedup(args: argparse.Namespace) -> int:
    return _run_dedup(load_config(args.config))


def _run_dedup(config: PipelineConfig) -> int:
    from pipelines.dedup.stage import run_dedup

    return _report(config, run_dedup(_spark(config), config))


def _tokenize(args: argparse.Namespace) -> int:
    return _run_tokenize(load_config(args.config))


def _run_tokenize(config: PipelineConfig) -> int:
    from pipelines.tokenize.stage import run_tokenize

    return _report(config, run_tokenize(_spark(config), config))


def _report_runs(args: argparse.Namespace) -> int:
    from pipelines import run_report

    config = load_config(args.config) if args.config else demo_config(args.lakehouse)
    current = run_report.find(config, args.run)
    if args.compare is None:
        print(run_report.summary(current))
        return 0
    if args.compare == "previous":
        runs = [run.run_id for run in run_report.pipeline_runs(config)]
        position = runs.index(current.run_id)
        if position + 1 >= len(runs):
            raise ConfigError(f"pipeline run {current.run_id} is the oldest: nothing to compare it with")
        older = run_report.find(config, runs[position + 1])
    else:
        older = run_report.find(config, args.compare)
    print(run_report.compare(older, current))
    return 0


def _mds_write(args: argparse.Namespace) -> int:
    return _run_mds(load_config(args.config), args.mix)


def _run_mds(config: PipelineConfig, mix_path: str | None) -> int:
    from pipelines.mds.mixes import load_mix
    from pipelines.mds.stage import run_mds

    path = mix_path or config.mds.mix
    if not path:
        raise ConfigError("mds.mix: no mix given (set it in the config or pass --mix)")
    return _report(config, run_mds(_spark(config), config, load_mix(path), config.mds.output))


def _train(args: argparse.Namespace) -> int:
    from trainer.launch import delegate

    config = demo_config(args.demo_lakehouse) if args.demo_lakehouse else load_config(args.config)
    exit_code = delegate(args.argv, args.nproc)
    if exit_code is not None:
        return exit_code
    from trainer.train import train

    if args.mix:
        config = dataclasses.replace(config, mds=dataclasses.replace(config.mds, mix=args.mix))
    if args.max_steps is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, max_steps=args.max_steps))
    summary = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary.format())
    return 0


def _mds_verify(args: argparse.Namespace) -> int:
    from pipelines.mds.verify import verify

    result = verify(args.directory)
    print(result.format())
    return 0 if result.ok else EXIT_NOT_RECONCILED


def _run_ingest(config: PipelineConfig, sources: list[str] | None) -> int:
    from pipelines.ingest.stage import run_ingest

    return _report(config, run_ingest(_spark(config), config, sources))


def _run_filter(config: PipelineConfig, retrain_quality: bool) -> int:
    from pipelines.filter.stage import run_filter

    return _report(config, run_filter(_spark(config), config, retrain_quality))


def _redecide(args: argparse.Namespace) -> int:
    from pipelines.filter.stage import redecide

    config = load_config(args.config)
    to_drop, to_keep, reasons = redecide(_spark(config), config, dry_run=args.dry_run)
    verb = "would flip" if args.dry_run else "flipped"
    print(f"{verb}: {to_drop} keep->drop, {to_keep} drop->keep")
    for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0])):
        print(f"  dropped by {reason}: {count}")
    return 0


def _spark(config: PipelineConfig):
    from pipelines.spark import get_spark

    return get_spark(config.spark)


def _report(config: PipelineConfig, summary) -> int:
    """Prints a stage summary; a summary that does not reconcile is a failed run."""
    print(summary.format())
    print(f"lakehouse: {config.lakehouse.root}   mlflow: {config.mlflow.tracking_uri}")
    if not summary.reconciles:
        print("dataprep: the counts do not reconcile (see the summary above)", file=sys.stderr)
        return EXIT_NOT_RECONCILED
    return 0


def _validate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(json.dumps(dataclasses.asdict(config), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
