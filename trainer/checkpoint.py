"""Checkpoints: model, optimizer, scheduler, RNG states and data position in one file per saved step.

Model and optimizer are gathered as full (unsharded, FQN-keyed) state dicts through torch.distributed.checkpoint's
state-dict helpers, which work the same on a plain module and on an FSDP2-sharded one: a checkpoint written by 8
ranks loads into 1 and the other way round, and its model part is what `trainer.hf.export_state_dict` reads.
Rank 0 writes `step-XXXXXXXX.pt` to local scratch and stores it under the checkpoint directory (a local path or an
object store URI, pipelines/storage.py) as one whole-file write, so a crash leaves either the whole file or none;
older checkpoints beyond `keep` are removed after the new one is in place.
"""

from __future__ import annotations

import random
import re

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from pipelines import storage
from pipelines.storage import DEFAULT_STORAGE, Storage

_NAME = re.compile(r"^step-(\d{8})\.pt$")


def checkpoint_steps(directory: str, store: Storage = DEFAULT_STORAGE) -> list[int]:
    """Steps of the complete checkpoints in `directory`, ascending."""
    return sorted(int(m.group(1)) for m in map(_NAME.match, store.children(directory)) if m)


def checkpoint_path(directory: str, step: int) -> str:
    return storage.join(directory, f"step-{step:08d}.pt")


def save_checkpoint(
    directory: str,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data_state: dict,
    extra: dict,
    keep: int,
    store: Storage = DEFAULT_STORAGE,
) -> str:
    """Collective: every rank calls it (the gather needs them all); rank 0 writes."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = {
        "step": step,
        "model": get_model_state_dict(model, options=options),
        "optimizer": get_optimizer_state_dict(model, optimizer, options=options),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
        "data": data_state,
        **extra,
    }
    path = checkpoint_path(directory, step)
    if _rank() == 0:
        with storage.local_scratch() as scratch:
            local = f"{scratch}/{storage.basename(path)}"
            torch.save(state, local)
            store.upload(local, path)
        for old in checkpoint_steps(directory, store)[:-keep]:
            store.delete(checkpoint_path(directory, old))
    if dist.is_initialized():
        dist.barrier()
    return path


def load_checkpoint(
    path: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    store: Storage = DEFAULT_STORAGE,
) -> dict:
    """Restores model, optimizer, scheduler and RNG in place; returns the whole checkpoint (step, data, extra)."""
    with storage.local_scratch() as scratch:
        state = torch.load(store.fetched(path, scratch), map_location="cpu", weights_only=False)
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, state["model"], options=options)
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=options)
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return state


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
