"""The trainer's config section (`train:`): model, budget, optimisation, checkpoints. Plain Python, no torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines import storage
from pipelines.settings import ConfigError, LakehouseConfig, Section, storage_path
from trainer.config import PRESETS, model_config


@dataclass(frozen=True)
class TrainConfig:
    """The embedded MoE trainer (trainer/) on the curriculum of `mds.mix`: model, budget, optimisation, checkpoints."""

    model: str = "tiny"  # a preset of trainer.config.PRESETS
    model_overrides: Mapping[str, Any] = field(default_factory=dict)  # ModelConfig fields changed from the preset
    stage_tokens: Mapping[str, int] = field(default_factory=dict)  # training budget per stage; default one pass
    batch_tokens: int = 65_536  # tokens per optimizer step, all ranks together
    micro_batch_tokens: int | None = None  # tokens per forward pass of one rank; default batch_tokens / ranks
    max_steps: int | None = None  # stop the curriculum early (the schedule then spans max_steps)
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    device: str = "auto"  # auto: cuda when available
    compile: bool = False  # torch.compile each block
    activation_checkpointing: bool = False
    document_masking: bool = True  # attention stays inside each packed document
    seed: int = 17
    shuffle_block: int = 1 << 16  # samples shuffled together (trainer/data.py)
    checkpoint_dir: str | None = None  # default: <lakehouse root>/checkpoints
    checkpoint_every: int = 500  # steps; the last step is always saved
    keep_checkpoints: int = 2
    log_every: int = 10
    peak_tflops: float | None = None  # per device, for MFU; known GPUs are recognised


def parse_train(section: Section, lakehouse: LakehouseConfig) -> TrainConfig:
    d = TrainConfig()
    train = TrainConfig(
        model=section.take("model", str, default=d.model, choices=tuple(PRESETS)),
        model_overrides=section.take("model_overrides", dict, default={}),
        stage_tokens=section.take("stage_tokens", dict, default={}),
        batch_tokens=section.take("batch_tokens", int, default=d.batch_tokens, minimum=2),
        micro_batch_tokens=section.take("micro_batch_tokens", int, minimum=2),
        max_steps=section.take("max_steps", int, minimum=1),
        lr=section.take_number("lr", d.lr),
        betas=tuple(float(b) for b in section.take("betas", list, default=list(d.betas))),
        eps=section.take_number("eps", d.eps),
        weight_decay=section.take_number("weight_decay", d.weight_decay),
        warmup_steps=section.take("warmup_steps", int, default=d.warmup_steps, minimum=0),
        min_lr_ratio=section.take_number("min_lr_ratio", d.min_lr_ratio),
        grad_clip=section.take_number("grad_clip", d.grad_clip),
        precision=section.take("precision", str, default=d.precision, choices=("auto", "fp32", "bf16")),
        device=section.take("device", str, default=d.device, choices=("auto", "cpu", "cuda")),
        compile=section.take("compile", bool, default=d.compile),
        activation_checkpointing=section.take("activation_checkpointing", bool, default=d.activation_checkpointing),
        document_masking=section.take("document_masking", bool, default=d.document_masking),
        seed=section.take("seed", int, default=d.seed),
        shuffle_block=section.take("shuffle_block", int, default=d.shuffle_block, minimum=1),
        checkpoint_dir=storage_path(
            section.where("checkpoint_dir"),
            section.take("checkpoint_dir", str, default=storage.join(lakehouse.root, "checkpoints")),
        ),
        checkpoint_every=section.take("checkpoint_every", int, default=d.checkpoint_every, minimum=1),
        keep_checkpoints=section.take("keep_checkpoints", int, default=d.keep_checkpoints, minimum=1),
        log_every=section.take("log_every", int, default=d.log_every, minimum=1),
        peak_tflops=section.take_number("peak_tflops"),
    )
    section.reject_unknown()
    where = section.path
    if len(train.betas) != 2 or not all(0 <= b < 1 for b in train.betas):
        raise ConfigError(f"{where}.betas: expected two numbers in [0, 1), got {list(train.betas)}")
    if train.lr <= 0 or not 0 <= train.min_lr_ratio <= 1 or train.weight_decay < 0 or train.eps <= 0:
        raise ConfigError(f"{where}: lr and eps must be positive, min_lr_ratio in [0, 1], weight_decay >= 0")
    if train.grad_clip < 0:
        raise ConfigError(f"{where}.grad_clip: {train.grad_clip} must be >= 0 (0 turns clipping off)")
    for stage, tokens in train.stage_tokens.items():
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise ConfigError(f"{where}.stage_tokens.{stage}: expected a positive number of tokens, got {tokens!r}")
    try:
        model_config(train.model, train.model_overrides)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}.model_overrides: {error}") from error
    return train
