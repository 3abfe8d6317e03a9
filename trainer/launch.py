"""Where `dataprep train` runs. Nothing here imports torch, so the data environment can hand training over:

- in this interpreter when it has torch (a Databricks ML runtime, the PyTorch environment, a torchrun rank);
- else in the PyTorch environment's interpreter, $DATAPREP_TORCH_PYTHON (scripts/env.sh: ensure_torch_env), with
  the open MLflow run passed on so the training run is its child;
- under `torchrun --standalone` when more than one process per node is asked for and this is not a rank already.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from pipelines.settings import ConfigError
from pipelines.tracking import PARENT_RUN_ENV


def resolve_nproc(nproc: str) -> int:
    """`auto` is every visible GPU (at least one process); otherwise a positive number."""
    if nproc == "auto":
        if not _has_torch():
            return 1
        import torch

        return max(1, torch.cuda.device_count())
    if not nproc.isdigit() or int(nproc) < 1:
        raise ConfigError(f"--nproc: expected a positive number or 'auto', got {nproc!r}")
    return int(nproc)


def delegate(argv: list[str], nproc: str) -> int | None:
    """Runs `dataprep <argv>` where it can train and returns its exit code; None: train in this process."""
    if not _has_torch():
        python = os.environ.get("DATAPREP_TORCH_PYTHON")
        if not python:
            raise ConfigError(
                "training needs PyTorch, which this Python lacks: install the extra (pip install 'dataprep[train]') "
                "or point DATAPREP_TORCH_PYTHON at an interpreter that has it (scripts/demo.sh and scripts/test.sh "
                "build one)"
            )
        return _run([python, "-m", "dataprep.cli", *argv])
    processes = resolve_nproc(nproc)
    if processes > 1 and "LOCAL_RANK" not in os.environ:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   "-m", "dataprep.cli", *_without_nproc(argv)]  # fmt: skip
        return _run(command)
    return None


def _without_nproc(argv: list[str]) -> list[str]:
    """The ranks' arguments: torchrun would take `--nproc` for an abbreviation of its own option."""
    kept, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument == "--nproc":
            skip = True
        elif not argument.startswith("--nproc="):
            kept.append(argument)
    return kept


def _has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def _run(command: list[str]) -> int:
    import mlflow

    environment = dict(os.environ)
    active = mlflow.active_run()
    if active is not None:
        environment[PARENT_RUN_ENV] = active.info.run_id
    return subprocess.run(command, env=environment, check=False).returncode
