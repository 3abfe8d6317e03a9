"""AdamW with decoupled weight decay on the matrices only, and a linear-warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(
    model: nn.Module, lr: float, betas: tuple[float, float], eps: float, weight_decay: float
) -> torch.optim.AdamW:
    """Fused AdamW with weight decay on the weight matrices only (see `is_decayed`)."""
    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    groups = [
        {"params": [p for p in trained if is_decayed(p)], "weight_decay": weight_decay},
        {"params": [p for p in trained if not is_decayed(p)], "weight_decay": 0.0},
    ]
    # fused: one kernel per parameter for the whole update (CPU and CUDA), instead of a handful of elementwise passes
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)


def is_decayed(parameter: torch.Tensor) -> bool:
    """Matrices (embedding, projections, router, experts) are decayed; vectors (LayerNorm gains, biases) are not:
    decaying a gain towards 0 only fights the model. Decided by shape, which a sharded DTensor keeps."""
    return parameter.ndim >= 2


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate at 0-based `step`: linear warmup to 1, then cosine down to min_lr_ratio
    at the last step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, min_lr_ratio)
    )
