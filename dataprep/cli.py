"""`dataprep` command line: thin shells over the stage functions (the same ones jobs and notebooks call).

    dataprep demo [--lakehouse DIR]         build the demo corpus and run the pipeline on it
    dataprep run --config FILE [--mix MIX.yaml] [--from STAGE]   every stage below, in order, under one MLflow run
    dataprep ingest --config FILE [--source NAME ...]
    dataprep filter --config FILE [--retrain-quality]
    dataprep dedup --config FILE
    dataprep tokenize --config FILE
    dataprep mds --config FILE [--mix MIX.yaml]
    dataprep train --config FILE [--mix MIX.yaml] [--max-steps N] [--nproc N|auto]   the MoE model on the curriculum
    dataprep report [--config FILE] [--run ID] [--compare [ID]]   latest pipeline run, or what changed since another
    dataprep verify URI                   check an MDS directory: hashes, counts, token ids, manifest
    dataprep redecide --config FILE [--dry-run]
    dataprep maintain --config FILE         every table: declared layout, OPTIMIZE, VACUUM (pipelines/maintain.py)
    dataprep validate --config FILE         check a config and print what it resolves to

Every command taking --config also takes --var NAME=VALUE (repeatable): the value of ${NAME} in the config, before
the environment's.

The stage commands (ingest ... mds) and `run --from` come from the stage registry, pipelines/stages.py.

Exit codes: 0 done; 2 bad config, a missing input path or table (nothing was read); 3 the run's counts do not
reconcile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, NoReturn

from dataprep.config import PipelineConfig, load_config
from pipelines import storage
from pipelines.ingest.planning import MissingInputError
from pipelines.settings import ConfigError
from pipelines.stage import MissingTableError, StageSummary
from pipelines.stages import STAGE_NAMES, STAGES, stages_from

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

EXIT_BAD_INPUT = 2
EXIT_NOT_RECONCILED = 3


def entry_point() -> NoReturn:
    """The console script: exits with main()'s status. A Databricks wheel task calls this function and ignores what
    it returns, so a bad config or an unreconciled run must end the process with its non-zero status to fail the
    task (and stop the tasks after it)."""
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.handler(args)
    except (ConfigError, MissingInputError, MissingTableError, storage.UnsupportedPath) as error:
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

    run = commands.add_parser("run", help=f"{', '.join(STAGE_NAMES)} in order, under one MLflow run")
    run.add_argument("--config", required=True)
    _add_variables(run)
    run.add_argument("--mix", help="mixes/*.yaml (default: the config's mds.mix)")
    run.add_argument("--from", dest="first_stage", choices=STAGE_NAMES, default=STAGE_NAMES[0],
                     help="start at this stage (after a failed run: the stages before it are done)")  # fmt: skip
    run.set_defaults(handler=_run)

    for spec in STAGES:
        stage = commands.add_parser(spec.name, help=spec.help)
        stage.add_argument("--config", required=True)
        _add_variables(stage)
        for option in spec.options:
            metavar = {"metavar": option.metavar} if option.metavar else {}
            stage.add_argument(option.flag, dest=option.dest, action=option.action, help=option.help, **metavar)
        stage.set_defaults(handler=_stage, stage=spec)

    train = commands.add_parser("train", help="train the MoE model on the mix's MDS curriculum (resumes if it can)")
    config_source = train.add_mutually_exclusive_group(required=True)
    config_source.add_argument("--config")
    config_source.add_argument("--demo-lakehouse", help="use the demo's config for this lakehouse (what `demo` runs)")
    _add_variables(train)
    train.add_argument("--mix", help="mixes/*.yaml whose MDS stages to train on (default: the config's mds.mix)")
    train.add_argument("--max-steps", type=int, help="stop after this many steps (overrides train.max_steps)")
    train.add_argument("--nproc", default="1", help="processes on this node, one per GPU ('auto': every GPU); "
                       "more than one runs under torchrun with FSDP2")  # fmt: skip
    train.set_defaults(handler=_train)

    report = commands.add_parser("report", help="the latest pipeline run's report, or what changed between two")
    report.add_argument("--config", help="the pipeline's config (default: the demo's, over --lakehouse)")
    report.add_argument("--lakehouse", default=os.environ.get("DATAPREP_LAKEHOUSE", "./lakehouse"))
    _add_variables(report)
    report.add_argument("--run", help="a pipeline run id (or its prefix); default: the latest")
    report.add_argument(
        "--compare", nargs="?", const="previous", help="compare with this run id (default: the run before it)"
    )
    report.set_defaults(handler=_report_runs)

    verify = commands.add_parser("verify", help="check an MDS directory: hashes, sample counts, token ids, manifest")
    verify.add_argument("directory", help="a local path or an object store URI (s3://bucket/mds/mix/stage)")
    verify.add_argument("--config", help="take the object store's endpoint from this config's spark.conf")
    _add_variables(verify)
    verify.set_defaults(handler=_verify)

    redecide = commands.add_parser("redecide", help="re-apply the config's rules to stored signals (no recompute)")
    redecide.add_argument("--config", required=True)
    _add_variables(redecide)
    redecide.add_argument("--dry-run", action="store_true", help="report the flips without writing them")
    redecide.set_defaults(handler=_redecide)

    maintain = commands.add_parser(
        "maintain", help="every table: declared layout, OPTIMIZE (compact, cluster), VACUUM (lakehouse.maintain)"
    )
    maintain.add_argument("--config", required=True)
    _add_variables(maintain)
    maintain.set_defaults(handler=_maintain)

    validate = commands.add_parser("validate", help="validate a config file and print it resolved")
    validate.add_argument("--config", required=True)
    _add_variables(validate)
    validate.set_defaults(handler=_validate)
    return parser


def _add_variables(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--var",
        dest="variables",
        action="append",
        type=_variable,
        default=[],
        metavar="NAME=VALUE",
        help="a value for ${NAME} in the config, before the environment's (repeatable); how a Databricks task "
        "without environment variables (serverless) passes its catalog and schema",
    )


def _variable(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def _config(args: argparse.Namespace) -> PipelineConfig:
    """The --config file, its ${...} filled from --var first, then the environment."""
    return load_config(args.config, dict(args.variables))


def demo_config(lakehouse: str) -> PipelineConfig:
    """The packaged demo config with its variables filled in for this machine."""
    from dataprep.demo import python_stdlib

    root = os.path.abspath(lakehouse)
    variables = {
        "DATAPREP_LAKEHOUSE": root,
        "PYTHON_STDLIB": python_stdlib(),
        "DEMO_CORPUS": os.path.join(root, "demo_corpus"),
        "DATAPREP_MIXES": os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mixes"),
    }
    with resources.as_file(resources.files("dataprep") / "defaults" / "demo.yaml") as path:
        return load_config(path, variables)


def _demo(args: argparse.Namespace) -> int:
    from dataprep.demo import build_demo_corpus

    config = demo_config(args.lakehouse)
    sizes = build_demo_corpus(storage.join(config.lakehouse.root, "demo_corpus"))
    stdlib = config.source("python_stdlib").paths[0]
    print(f"demo corpus: {sizes} prose documents, plus the standard library at {stdlib}")
    if args.train_steps == 0:
        return _run_pipeline(config)
    train_argv = ["train", "--demo-lakehouse", config.lakehouse.root]
    if args.train_steps is not None:
        train_argv += ["--max-steps", str(args.train_steps)]
    return _run_pipeline(config, then=lambda: main(train_argv))


def _run(args: argparse.Namespace) -> int:
    return _run_pipeline(_config(args), first_stage=args.first_stage, mix=args.mix)


def _run_pipeline(
    config: PipelineConfig,
    first_stage: str = STAGE_NAMES[0],
    mix: str | None = None,
    then: Callable[[], int] | None = None,
) -> int:
    """Every stage from `first_stage` on, in one pipeline run; stops at the first that does not reconcile. `then`
    (the demo's training) runs last, inside the same pipeline run."""
    from dataprep.runner import check_stages, pipeline, run_stage

    options = {"mds": {"mix": mix}} if mix else {}
    check_stages(config, first_stage, options)
    with pipeline(config, first_stage):
        for spec in stages_from(first_stage):
            if not _report(config, run_stage(spec.name, _spark(config), config, **options.get(spec.name, {}))):
                return EXIT_NOT_RECONCILED
        return then() if then else 0


def _stage(args: argparse.Namespace) -> int:
    """One registered stage, with its command-line options."""
    from dataprep.runner import run_stage

    config = _config(args)
    options = {option.dest: getattr(args, option.dest) for option in args.stage.options}
    summary = run_stage(args.stage.name, _spark(config), config, **options)
    return 0 if _report(config, summary) else EXIT_NOT_RECONCILED


def _report_runs(args: argparse.Namespace) -> int:
    from pipelines import run_report

    config = _config(args) if args.config else demo_config(args.lakehouse)
    current = run_report.find(config.mlflow, args.run)
    if args.compare is None:
        print(run_report.summary(current))
        return 0
    if args.compare == "previous":
        runs = [run.run_id for run in run_report.pipeline_runs(config.mlflow)]
        position = runs.index(current.run_id)
        if position + 1 >= len(runs):
            raise ConfigError(f"pipeline run {current.run_id} is the oldest: nothing to compare it with")
        older = run_report.find(config.mlflow, runs[position + 1])
    else:
        older = run_report.find(config.mlflow, args.compare)
    print(run_report.compare(older, current))
    return 0


def _train(args: argparse.Namespace) -> int:
    from trainer.launch import delegate

    config = demo_config(args.demo_lakehouse) if args.demo_lakehouse else _config(args)
    exit_code = delegate(args.argv, args.nproc)
    if exit_code is not None:
        return exit_code
    from trainer.train import train

    mds, settings = config.mds, config.train
    if args.mix:
        mds = dataclasses.replace(mds, mix=args.mix)
    if args.max_steps is not None:
        settings = dataclasses.replace(settings, max_steps=args.max_steps)
    # Object stores are reached as the config's Spark settings tell Spark to (spark.hadoop.fs.s3a.endpoint, ...).
    store = storage.Storage.from_mapping(dict(config.spark.conf))
    summary = train(settings, mds, config.mlflow, config.lakehouse.root, store)
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary.format())
    return 0


def _verify(args: argparse.Namespace) -> int:
    from pipelines.mds.verify import verify
    conf = dict(_config(args).spark.conf) if args.config else {}
    result = verify(storage.normalized(args.directory), store=storage.Storage.from_mapping(conf))
    print(result.format())
    return 0 if result.ok else EXIT_NOT_RECONCILED


def _redecide(args: argparse.Namespace) -> int:
    from pipelines.filter.stage import redecide
    from pipelines.lakehouse import Lakehouse

    config = _config(args)
    lakehouse = Lakehouse(_spark(config), config.lakehouse)
    to_drop, to_keep, reasons = redecide(lakehouse, config.filter, dry_run=args.dry_run)
    verb = "would flip" if args.dry_run else "flipped"
    print(f"{verb}: {to_drop} keep->drop, {to_keep} drop->keep")
    for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0])):
        print(f"  dropped by {reason}: {count}")
    return 0


def _maintain(args: argparse.Namespace) -> int:
    from pipelines.maintain import run_maintain

    config = _config(args)
    summary = run_maintain(_spark(config), config.lakehouse, config.mlflow)
    return 0 if _report(config, summary) else EXIT_NOT_RECONCILED


def _spark(config: PipelineConfig) -> SparkSession:
    from pipelines.spark import get_spark

    return get_spark(config.spark)


def _report(config: PipelineConfig, summary: StageSummary) -> bool:
    """Prints a stage summary; False (a failed run) when it does not reconcile."""
    print(summary.format())
    print(f"lakehouse: {config.lakehouse.root}   mlflow: {config.mlflow.tracking_uri}")
    if not summary.reconciles:
        print("dataprep: the counts do not reconcile (see the summary above)", file=sys.stderr)
    return summary.reconciles


def _validate(args: argparse.Namespace) -> int:
    config = _config(args)
    print(json.dumps(dataclasses.asdict(config), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
