"""How the unchanged model is run: process group, device, activation checkpointing, torch.compile and FSDP2.

Under `torchrun` (WORLD_SIZE > 1) every block and then the root are sharded with FSDP2's `fully_shard` (NCCL on
GPUs, gloo on CPU); a single process runs the plain module. Parameter names do not change with any of these
(checkpoint wrappers and compiled modules are unwrapped by the state-dict helpers), so checkpoints move freely
between layouts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from trainer.model import Decoder


@dataclass(frozen=True)
class Placement:
    rank: int
    world_size: int
    device: torch.device
    bf16: bool  # bf16 compute: autocast in one process, FSDP2's mixed precision when sharded

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_placement(device: str, precision: str) -> Placement:
    """Joins the torchrun process group when there is one; picks the device and precision."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but torch sees no GPU")
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    bf16 = precision == "bf16" or (precision == "auto" and use_cuda)
    return Placement(rank=rank, world_size=world_size, device=target, bf16=bf16)


def parallelize(model: Decoder, placement: Placement, *, activation_checkpointing: bool, compile: bool) -> Decoder:
    """Wraps the model's blocks in place (torchtitan's order: checkpointing, then compile, then FSDP)."""
    for index, block in enumerate(model.layers):
        if activation_checkpointing:
            block = checkpoint_wrapper(block, preserve_rng_state=False)
        if compile:
            block.compile()
        model.layers[index] = block
    if placement.world_size > 1:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if placement.bf16 \
            else MixedPrecisionPolicy()  # fmt: skip
        for block in model.layers:
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
    return model


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def wait_for_all_ranks() -> None:
    """Returns once every rank has called it (no-op on one process)."""
    if dist.is_initialized():
        dist.barrier()


def close_placement() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
