"""The training loop: the config's model trained on the MDS curriculum of `mds.mix`, resumable step for step.

One optimizer step: the global batch (train.batch_tokens) of the step's curriculum stage, each rank's share split
into micro batches (gradient accumulation). The loss is the cross-entropy summed over every target token of the
global batch and divided by their count, so the gradient does not depend on how the batch is split across micro
batches or ranks; the router's auxiliary losses are averaged over micro batches. Then clipping, AdamW, the
schedule, metrics, and every `checkpoint_every` steps (and at the end) a checkpoint.

Checkpoints go to `<checkpoint_dir>/<mix>-<fingerprint>/`, the fingerprint covering everything that shapes the
trajectory (model, optimisation, batch, curriculum data and budget). A run with the same fingerprint resumes from
the newest checkpoint and continues exactly as the uninterrupted run would have; once the last step is saved, a
rerun has nothing to do. A changed setting trains afresh in its own directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field

import mlflow
import torch

from pipelines.config import ConfigError, PipelineConfig
from pipelines.mds.mixes import load_mix
from pipelines.tracking import stage_run
from trainer import checkpoint as checkpoints
from trainer.config import IGNORE_INDEX, ModelConfig, model_config
from trainer.data import Batch, CurriculumLoader, CurriculumStage, DataError, load_curriculum
from trainer.metrics import Progress, expert_imbalance, flops_per_token, peak_tflops
from trainer.model import Decoder
from trainer.optim import build_optimizer, build_scheduler
from trainer.parallel import Placement, all_reduce_sum, close_placement, init_placement, parallelize


@dataclass
class TrainSummary:
    run_dir: str
    total_steps: int
    start_step: int  # 0, or the step of the checkpoint this run resumed from
    losses: list[float] = field(default_factory=list)  # cross-entropy of each step trained by this invocation
    tokens: int = 0
    seconds: float = 0.0
    checkpoint: str | None = None
    run_id: str | None = None

    @property
    def up_to_date(self) -> bool:
        return not self.losses and self.start_step >= self.total_steps

    def format(self) -> str:
        if self.up_to_date:
            return f"train: up to date ({self.total_steps} steps done, {self.checkpoint})"
        rate = self.tokens / self.seconds if self.seconds else 0.0
        window = min(10, len(self.losses))
        first, last = sum(self.losses[:window]) / window, sum(self.losses[-window:]) / window
        return (
            f"train: steps {self.start_step + 1}-{self.start_step + len(self.losses)} of {self.total_steps}, "
            f"{self.tokens:,} tokens in {self.seconds:.1f}s ({rate:,.0f} tok/s); mean loss of the first and last "
            f"{window} steps {first:.3f} -> {last:.3f}; checkpoint {self.checkpoint}"
        )


def train(config: PipelineConfig) -> TrainSummary:
    """Trains (or resumes) on this process, or on this rank of a torchrun job."""
    settings = config.train
    placement = init_placement(settings.device, settings.precision)
    try:
        return _train(config, placement)
    finally:
        close_placement()


def _train(config: PipelineConfig, placement: Placement) -> TrainSummary:
    settings = config.train
    if not config.mds.mix:
        raise ConfigError("mds.mix: training needs the mix whose MDS stages it reads")
    mix = load_mix(config.mds.mix)
    curriculum = load_curriculum(mix, config.mds.output, dict(settings.stage_tokens))
    model_settings = model_config(settings.model, dict(settings.model_overrides))
    longest = max(stage.seq_len for stage in curriculum)
    if longest > model_settings.max_seq_len:
        raise DataError(f"the curriculum has {longest}-token samples but the model's max_seq_len is "
                        f"{model_settings.max_seq_len} (set train.model_overrides.max_seq_len)")  # fmt: skip
    loader = CurriculumLoader(
        curriculum,
        batch_tokens=settings.batch_tokens,
        micro_batch_tokens=settings.micro_batch_tokens or settings.batch_tokens // placement.world_size,
        seed=settings.seed,
        document_masking=settings.document_masking,
        shuffle_block=settings.shuffle_block,
        rank=placement.rank,
        world_size=placement.world_size,
    )
    total_steps = min(loader.total_steps(), settings.max_steps or loader.total_steps())
    run_dir = os.path.join(settings.checkpoint_dir, f"{mix.name}-{_fingerprint(config, model_settings, curriculum)}")

    torch.manual_seed(settings.seed)
    model = Decoder(model_settings).to(placement.device)
    model = parallelize(model, placement, activation_checkpointing=settings.activation_checkpointing,
                        compile=settings.compile)  # fmt: skip
    optimizer = build_optimizer(model, settings.lr, settings.betas, settings.eps, settings.weight_decay)
    scheduler = build_scheduler(optimizer, settings.warmup_steps, total_steps, settings.min_lr_ratio)

    summary = TrainSummary(run_dir=run_dir, total_steps=total_steps, start_step=0)
    saved = checkpoints.checkpoint_steps(run_dir)
    if saved:
        summary.checkpoint = checkpoints.checkpoint_path(run_dir, saved[-1])
        state = checkpoints.load_checkpoint(summary.checkpoint, model, optimizer, scheduler)
        summary.start_step = state["step"]
        loader.position.load_state_dict(state["data"])
    tracking = _tracking(config, model_settings, placement, loader, total_steps, run_dir, summary.start_step)
    with tracking as run:
        summary.run_id = run.info.run_id if run is not None else None
        if summary.start_step < total_steps:
            _loop(config, model, optimizer, scheduler, loader, placement, summary)
        if placement.is_main:
            mlflow.set_tags({"dataprep.checkpoint": summary.checkpoint, "dataprep.up_to_date": summary.up_to_date})
    return summary


def _loop(config, model, optimizer, scheduler, loader, placement, summary) -> None:
    settings = config.train
    model_settings = model.config
    progress = Progress(summary.total_steps, summary.start_step, settings.log_every)
    peak = peak_tflops(placement.device, settings.peak_tflops)
    window = _Window()
    load_history = []  # per logged step, each layer's share of routed tokens per expert
    started = time.monotonic()
    for step in range(summary.start_step, summary.total_steps):
        step_started = time.monotonic()
        batch = loader.next_batch(step)
        result = _optimizer_step(model, optimizer, batch, placement, settings.grad_clip)
        scheduler.step()
        elapsed = time.monotonic() - step_started
        summary.losses.append(result["loss"])
        summary.tokens += batch.tokens
        window.add(result, batch, elapsed)
        tokens_per_s = batch.tokens / elapsed
        lr = optimizer.param_groups[0]["lr"]
        done = step + 1
        if placement.is_main:
            progress.update(step, batch.stage, result["loss"], lr, tokens_per_s)
            if done % settings.log_every == 0 or done == summary.total_steps:
                seq_len = batch.inputs.shape[-1] + 1
                mlflow.log_metrics(window.metrics(lr, model_settings, seq_len, peak, placement.world_size), step=done)
                load_history.append({"step": done, "load": result["expert_load"].tolist()})
                window = _Window()
        if done % settings.checkpoint_every == 0 or done == summary.total_steps:
            summary.checkpoint = checkpoints.save_checkpoint(
                summary.run_dir, done, model, optimizer, scheduler, loader.position.state_dict(),
                {"model_config": dataclasses.asdict(model_settings)}, settings.keep_checkpoints,
            )  # fmt: skip
    summary.seconds = time.monotonic() - started
    if placement.is_main:
        mlflow.log_metrics({"final_loss": summary.losses[-1], "trained_tokens": summary.tokens,
                            "seconds": summary.seconds})  # fmt: skip
        mlflow.log_dict({"losses": summary.losses, "first_step": summary.start_step + 1}, "losses.json")
        mlflow.log_dict({"experts": model_settings.n_experts, "history": load_history}, "expert_load.json")


def _optimizer_step(model, optimizer, batch: Batch, placement: Placement, grad_clip: float) -> dict:
    device = placement.device
    micro_batches = len(batch.inputs)
    targets_here = torch.tensor(float((batch.targets != IGNORE_INDEX).sum()), device=device)
    global_targets = all_reduce_sum(targets_here.clone()).clamp(min=1.0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if placement.bf16 and placement.world_size == 1 \
        else contextlib.nullcontext()  # fmt: skip
    totals = torch.zeros(3, device=device)  # cross-entropy sum, balance loss, z-loss
    load = None
    for index in range(micro_batches):
        inputs = torch.from_numpy(batch.inputs[index]).to(device)
        targets = torch.from_numpy(batch.targets[index]).to(device)
        sequence_ids = None if batch.sequence_ids is None else torch.from_numpy(batch.sequence_ids[index]).to(device)
        with autocast:
            output = model(inputs, sequence_ids, targets)
        cross_entropy = output.cross_entropy_sum
        auxiliary = (output.load_balance_loss + output.router_z_loss) / micro_batches
        (cross_entropy * placement.world_size / global_targets + auxiliary).backward()
        totals += torch.stack([cross_entropy.detach(), output.load_balance_loss.detach(),
                               output.router_z_loss.detach()]) / torch.tensor([1.0, micro_batches, micro_batches],
                                                                              device=device)  # fmt: skip
        load = output.expert_load if load is None else load + output.expert_load
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    reduced = all_reduce_sum(torch.cat([totals, (load / micro_batches).reshape(-1)]))
    ranks = placement.world_size
    return {
        "loss": float(reduced[0] / global_targets),
        "load_balance_loss": float(reduced[1] / ranks),
        "router_z_loss": float(reduced[2] / ranks),
        "grad_norm": float(norm),
        "expert_load": (reduced[3:] / ranks).reshape(load.shape).cpu(),
    }


class _Window:
    """Sums between two metric logs."""

    def __init__(self) -> None:
        self.steps, self.tokens, self.seconds, self.loss = 0, 0, 0.0, 0.0
        self.last: dict = {}

    def add(self, result: dict, batch: Batch, seconds: float) -> None:
        self.steps += 1
        self.tokens += batch.tokens
        self.seconds += seconds
        self.loss += result["loss"]
        self.last = result

    def metrics(self, lr: float, model: ModelConfig, seq_len: int, peak: float | None, world_size: int) -> dict:
        tokens_per_s = self.tokens / self.seconds if self.seconds else 0.0
        metrics = {
            "loss": self.loss / self.steps,
            "lr": lr,
            "grad_norm": self.last["grad_norm"],
            "load_balance_loss": self.last["load_balance_loss"],
            "router_z_loss": self.last["router_z_loss"],
            "tokens_per_s": tokens_per_s,
        }
        if peak:
            metrics["mfu"] = flops_per_token(model, seq_len) * tokens_per_s / (peak * 1e12 * world_size)
        for layer, imbalance in enumerate(expert_imbalance(self.last["expert_load"])):
            metrics[f"expert_imbalance.layer_{layer:02d}"] = imbalance
        return metrics


def _tracking(config, model_settings, placement, loader, total_steps, run_dir, start_step):
    if not placement.is_main:
        return contextlib.nullcontext()
    total, active = model_settings.parameter_counts()
    params = {
        **{f"model.{k}": v for k, v in dataclasses.asdict(model_settings).items()},
        **{f"train.{k}": v for k, v in dataclasses.asdict(config.train).items()},
        "mix": config.mds.mix,
        "parameters_total": total,
        "parameters_active": active,
        "total_steps": total_steps,
        "steps_per_stage": loader.steps_per_stage(),
        "world_size": placement.world_size,
        "device": str(placement.device),
        "bf16": placement.bf16,
        "run_dir": run_dir,
        "resumed_from_step": start_step,
    }
    return stage_run(config, "train", params)


def _fingerprint(config: PipelineConfig, model_settings: ModelConfig, curriculum: list[CurriculumStage]) -> str:
    """What the trajectory depends on: model, optimisation, batch, the data (each stage's manifest key) and budget.
    Logging, checkpoint cadence, device and parallelism layout are left out: they do not change the numbers, up to
    floating-point reassociation and the balance loss, which (as in MegaBlocks) is computed per micro batch."""
    settings = dataclasses.asdict(config.train)
    for key in ("checkpoint_dir", "checkpoint_every", "keep_checkpoints", "log_every", "peak_tflops", "device",
                "compile", "activation_checkpointing", "micro_batch_tokens"):  # fmt: skip
        settings.pop(key)
    data = []
    for stage in curriculum:
        with open(os.path.join(stage.directory, "manifest.json"), encoding="utf-8") as handle:
            data.append([stage.name, json.load(handle)["key"], stage.train_tokens])
    text = json.dumps({"model": dataclasses.asdict(model_settings), "train": settings, "data": data},
                      sort_keys=True, default=str)  # fmt: skip
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
