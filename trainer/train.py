"""The training loop: the model of the `train:` settings trained on the MDS curriculum of `mds.mix`, resumable step
for step.

One optimizer step: the global batch (train.batch_tokens) of the step's curriculum stage, each rank's share split
into micro batches (gradient accumulation). The loss is the cross-entropy summed over every target token of the
global batch and divided by their count, so the gradient does not depend on how the batch is split across micro
batches or ranks; the router's auxiliary losses are averaged over micro batches. Then clipping, AdamW, the
schedule, metrics, and every `checkpoint_every` steps (and at the end) a checkpoint. What a step reads and changes
is one `TrainState`.

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
import time
from dataclasses import dataclass, field

import mlflow
import torch

from pipelines import storage
from pipelines.mds.mixes import load_mix
from pipelines.mds.settings import MdsConfig
from pipelines.settings import ConfigError, MlflowConfig
from pipelines.storage import DEFAULT_STORAGE, Storage
from pipelines.tracking import stage_run
from trainer import checkpoint as checkpoints
from trainer.config import IGNORE_INDEX, ModelConfig, model_config
from trainer.data import Batch, CurriculumLoader, CurriculumStage, DataError, load_curriculum
from trainer.metrics import Progress, expert_imbalance, flops_per_token, peak_tflops
from trainer.model import Decoder
from trainer.optim import build_optimizer, build_scheduler
from trainer.parallel import (
    Placement,
    all_reduce_sum,
    close_placement,
    init_placement,
    parallelize,
    wait_for_all_ranks,
)
from trainer.settings import TrainConfig

# ModelConfig fields added after runs were fingerprinted, with their defaults: left out of the fingerprint while at
# the default, so those runs keep their directories and resume from their checkpoints.
_LATER_MODEL_FIELDS = {"depth_scaled_init": False}


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


@dataclass
class TrainState:
    """What a training step reads and changes: the settings, the model and its optimisation, the data position,
    where this rank runs, and what the run has done so far (`summary`, with its step counters)."""

    settings: TrainConfig
    model: Decoder
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: CurriculumLoader
    placement: Placement
    summary: TrainSummary
    store: Storage = DEFAULT_STORAGE  # where shards are read from and checkpoints written to


@dataclass(frozen=True)
class StepLosses:
    """One step's losses over the global batch: every micro batch of every rank."""

    loss: float  # cross-entropy per target token
    load_balance_loss: float  # weighted, as trained; mean over micro batches and ranks
    router_z_loss: float  # likewise
    expert_load: torch.Tensor  # (layers, experts): share of routed token copies per expert, mean likewise


def train(
    settings: TrainConfig, mds: MdsConfig, tracking: MlflowConfig, lakehouse: str, store: Storage = DEFAULT_STORAGE
) -> TrainSummary:
    """Trains (or resumes) on this process, or on this rank of a torchrun job: the model of `settings` on the MDS
    stages of the mix `mds.mix` under `mds.output`, as an MLflow run in `tracking` tagged with the `lakehouse` root.
    Shards are read and checkpoints written through `store` (pipelines/storage.py): local paths or object stores."""
    if not mds.mix:
        raise ConfigError("mds.mix: training needs the mix whose MDS stages it reads")
    placement = init_placement(settings.device, settings.precision)
    try:
        state = _start(settings, mds, placement, store)
        summary = state.summary
        with _tracking(state, tracking, lakehouse, mds.mix) as run:
            summary.run_id = run.info.run_id if run is not None else None
            if summary.start_step < summary.total_steps:
                _loop(state)
            if placement.is_main:
                mlflow.set_tags({"dataprep.checkpoint": summary.checkpoint, "dataprep.up_to_date": summary.up_to_date})
        # Ranks leave the process group together: a rank that tore it down while the main one was still ending its
        # MLflow run once aborted ("terminate called without an active exception"). Not on failure, where the other
        # ranks may never arrive.
        wait_for_all_ranks()
        return summary
    finally:
        close_placement()


def _start(settings: TrainConfig, mds: MdsConfig, placement: Placement, store: Storage) -> TrainState:
    """The state the first step to train starts from: fresh, or restored from the run's newest checkpoint."""
    mix = load_mix(mds.mix)
    curriculum = load_curriculum(mix, mds.output, dict(settings.stage_tokens), store)
    model_settings = model_config(settings.model, dict(settings.model_overrides))
    _check_sequence_lengths(curriculum, model_settings)
    loader = _loader(settings, curriculum, placement)
    total_steps = min(loader.total_steps(), settings.max_steps or loader.total_steps())
    run_dir = storage.join(settings.checkpoint_dir, f"{mix.name}-{_fingerprint(settings, model_settings, curriculum)}")

    torch.manual_seed(settings.seed)
    model = Decoder(model_settings).to(placement.device)
    model = parallelize(model, placement, activation_checkpointing=settings.activation_checkpointing,
                        compile=settings.compile)  # fmt: skip
    optimizer = build_optimizer(model, settings.lr, settings.betas, settings.eps, settings.weight_decay)
    scheduler = build_scheduler(optimizer, settings.warmup_steps, total_steps, settings.min_lr_ratio)
    summary = TrainSummary(run_dir=run_dir, total_steps=total_steps, start_step=0)
    state = TrainState(settings, model, optimizer, scheduler, loader, placement, summary, store)
    _resume(state)
    return state


def _check_sequence_lengths(curriculum: list[CurriculumStage], model_settings: ModelConfig) -> None:
    longest = max(stage.seq_len for stage in curriculum)
    if longest > model_settings.max_seq_len:
        raise DataError(f"the curriculum has {longest}-token samples but the model's max_seq_len is "
                        f"{model_settings.max_seq_len} (set train.model_overrides.max_seq_len)")  # fmt: skip


def _loader(settings: TrainConfig, curriculum: list[CurriculumStage], placement: Placement) -> CurriculumLoader:
    return CurriculumLoader(
        curriculum,
        batch_tokens=settings.batch_tokens,
        micro_batch_tokens=settings.micro_batch_tokens or settings.batch_tokens // placement.world_size,
        seed=settings.seed,
        document_masking=settings.document_masking,
        shuffle_block=settings.shuffle_block,
        rank=placement.rank,
        world_size=placement.world_size,
    )


def _resume(state: TrainState) -> None:
    """Restores model, optimizer, schedule, RNG and data position from the newest checkpoint of the run, if any."""
    summary = state.summary
    saved = checkpoints.checkpoint_steps(summary.run_dir, state.store)
    if not saved:
        return
    summary.checkpoint = checkpoints.checkpoint_path(summary.run_dir, saved[-1])
    restored = checkpoints.load_checkpoint(
        summary.checkpoint, state.model, state.optimizer, state.scheduler, state.store
    )
    summary.start_step = restored["step"]
    state.loader.position.load_state_dict(restored["data"])


def _loop(state: TrainState) -> None:
    settings, summary = state.settings, state.summary
    log = _RunLog(state)
    started = time.monotonic()
    for step in range(summary.start_step, summary.total_steps):
        step_started = time.monotonic()
        batch = state.loader.next_batch(step)
        losses = accumulate_gradients(state, batch)
        grad_norm = optimizer_step(state)
        seconds = time.monotonic() - step_started
        summary.losses.append(losses.loss)
        summary.tokens += batch.tokens
        log.step(step, batch, losses, grad_norm, seconds)
        done = step + 1
        if done % settings.checkpoint_every == 0 or done == summary.total_steps:
            summary.checkpoint = _save(state, done)
    summary.seconds = time.monotonic() - started
    log.finish()


def accumulate_gradients(state: TrainState, batch: Batch) -> StepLosses:
    """Forward and backward over this rank's micro batches of `batch`, adding into the parameters' gradients. Each
    micro batch's cross-entropy sum is divided by the global batch's target count (times the ranks, which the
    gradient reduction averages over), so the summed gradient is that of the global mean cross-entropy."""
    placement = state.placement
    device = placement.device
    micro_batches = len(batch.inputs)
    targets_here = torch.tensor(float((batch.targets != IGNORE_INDEX).sum()), device=device)
    global_targets = all_reduce_sum(targets_here).clamp(min=1.0)
    totals = torch.zeros(3, device=device)  # cross-entropy sum, balance loss, z-loss
    load = None
    for index in range(micro_batches):
        inputs, targets, sequence_ids = _micro_batch(batch, index, device)
        with _autocast(placement):
            output = state.model(inputs, sequence_ids, targets)
        cross_entropy = output.cross_entropy_sum
        auxiliary = (output.load_balance_loss + output.router_z_loss) / micro_batches
        (cross_entropy * placement.world_size / global_targets + auxiliary).backward()
        totals += torch.stack([cross_entropy.detach(), output.load_balance_loss.detach(),
                               output.router_z_loss.detach()]) / torch.tensor([1.0, micro_batches, micro_batches],
                                                                              device=device)  # fmt: skip
        load = output.expert_load if load is None else load + output.expert_load
    return _global_losses(totals, load / micro_batches, global_targets, placement.world_size)


def _micro_batch(
    batch: Batch, index: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Inputs, targets and sequence ids (None without document masking) of one micro batch, on the device."""
    inputs = torch.from_numpy(batch.inputs[index]).to(device)
    targets = torch.from_numpy(batch.targets[index]).to(device)
    sequence_ids = None if batch.sequence_ids is None else torch.from_numpy(batch.sequence_ids[index]).to(device)
    return inputs, targets, sequence_ids


def _autocast(placement: Placement) -> contextlib.AbstractContextManager:
    """bf16 autocast in one process; sharded ranks compute in bf16 through FSDP2's mixed-precision policy instead."""
    if placement.bf16 and placement.world_size == 1:
        return torch.autocast(placement.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _global_losses(totals: torch.Tensor, load: torch.Tensor, global_targets: torch.Tensor, ranks: int) -> StepLosses:
    """This rank's loss sums and expert load, summed over the ranks in one all-reduce."""
    reduced = all_reduce_sum(torch.cat([totals, load.reshape(-1)]))
    return StepLosses(
        loss=float(reduced[0] / global_targets),
        load_balance_loss=float(reduced[1] / ranks),
        router_z_loss=float(reduced[2] / ranks),
        expert_load=(reduced[3:] / ranks).reshape(load.shape).cpu(),
    )


def optimizer_step(state: TrainState) -> float:
    """Clips the accumulated gradients (train.grad_clip; 0: not at all), applies AdamW, clears the gradients and
    advances the schedule; returns the global gradient norm before clipping."""
    grad_clip = state.settings.grad_clip
    norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    if hasattr(norm, "full_tensor"):  # a DTensor when the parameters are sharded
        norm = norm.full_tensor()
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    return float(norm)


def _save(state: TrainState, step: int) -> str:
    """Collective: the checkpoint that step `step` + 1 resumes from; returns its path."""
    return checkpoints.save_checkpoint(
        state.summary.run_dir, step, state.model, state.optimizer, state.scheduler, state.loader.position.state_dict(),
        {"model_config": dataclasses.asdict(state.model.config)}, state.settings.keep_checkpoints, state.store,
    )  # fmt: skip


class _RunLog:
    """What the main rank reports while training: a progress line each step, MLflow metrics every `log_every` steps
    (means since the last log), and at the end the loss curve and the expert-load history. Other ranks report
    nothing."""

    def __init__(self, state: TrainState) -> None:
        self.state = state
        self.enabled = state.placement.is_main
        self.progress = Progress(state.summary.total_steps, state.summary.start_step, state.settings.log_every)
        self.peak = peak_tflops(state.placement.device, state.settings.peak_tflops)
        self.window = _Window()
        self.load_history: list[dict] = []  # per logged step, each layer's share of routed tokens per expert

    def step(self, step: int, batch: Batch, losses: StepLosses, grad_norm: float, seconds: float) -> None:
        if not self.enabled:
            return
        state = self.state
        lr = state.optimizer.param_groups[0]["lr"]  # after the schedule's step: the rate of the next step
        self.window.add(losses, grad_norm, batch, seconds)
        self.progress.update(step, batch.stage, losses.loss, lr, batch.tokens / seconds)
        done = step + 1
        if done % state.settings.log_every == 0 or done == state.summary.total_steps:
            seq_len = batch.inputs.shape[-1] + 1
            metrics = self.window.metrics(lr, state.model.config, seq_len, self.peak, state.placement.world_size)
            mlflow.log_metrics(metrics, step=done)
            self.load_history.append({"step": done, "load": losses.expert_load.tolist()})
            self.window = _Window()

    def finish(self) -> None:
        if not self.enabled:
            return
        summary = self.state.summary
        mlflow.log_metrics({"final_loss": summary.losses[-1], "trained_tokens": summary.tokens,
                            "seconds": summary.seconds})  # fmt: skip
        mlflow.log_dict({"losses": summary.losses, "first_step": summary.start_step + 1}, "losses.json")
        experts = self.state.model.config.n_experts
        mlflow.log_dict({"experts": experts, "history": self.load_history}, "expert_load.json")


class _Window:
    """Sums between two metric logs."""

    def __init__(self) -> None:
        self.steps, self.tokens, self.seconds, self.loss = 0, 0, 0.0, 0.0
        self.last: StepLosses | None = None
        self.last_grad_norm = 0.0

    def add(self, losses: StepLosses, grad_norm: float, batch: Batch, seconds: float) -> None:
        self.steps += 1
        self.tokens += batch.tokens
        self.seconds += seconds
        self.loss += losses.loss
        self.last, self.last_grad_norm = losses, grad_norm

    def metrics(self, lr: float, model: ModelConfig, seq_len: int, peak: float | None, world_size: int) -> dict:
        tokens_per_s = self.tokens / self.seconds if self.seconds else 0.0
        metrics = {
            "loss": self.loss / self.steps,
            "lr": lr,
            "grad_norm": self.last_grad_norm,
            "load_balance_loss": self.last.load_balance_loss,
            "router_z_loss": self.last.router_z_loss,
            "tokens_per_s": tokens_per_s,
        }
        if peak:
            metrics["mfu"] = flops_per_token(model, seq_len) * tokens_per_s / (peak * 1e12 * world_size)
        for layer, imbalance in enumerate(expert_imbalance(self.last.expert_load)):
            metrics[f"expert_imbalance.layer_{layer:02d}"] = imbalance
        return metrics


def _tracking(state: TrainState, tracking: MlflowConfig, lakehouse: str, mix: str) -> contextlib.AbstractContextManager:
    """The run's MLflow stage run on the main rank (its parameters: model, settings, sizes, layout), else nothing."""
    if not state.placement.is_main:
        return contextlib.nullcontext()
    model_settings, summary, placement = state.model.config, state.summary, state.placement
    total, active = model_settings.parameter_counts()
    params = {
        **{f"model.{k}": v for k, v in dataclasses.asdict(model_settings).items()},
        **{f"train.{k}": v for k, v in dataclasses.asdict(state.settings).items()},
        "mix": mix,
        "parameters_total": total,
        "parameters_active": active,
        "total_steps": summary.total_steps,
        "steps_per_stage": state.loader.steps_per_stage(),
        "world_size": placement.world_size,
        "device": str(placement.device),
        "bf16": placement.bf16,
        "run_dir": summary.run_dir,
        "resumed_from_step": summary.start_step,
    }
    return stage_run(tracking, lakehouse, "train", params)


def _fingerprint(settings: TrainConfig, model_settings: ModelConfig, curriculum: list[CurriculumStage]) -> str:
    """What the trajectory depends on: model, optimisation, batch, the data (each stage's manifest key) and budget.
    Logging, checkpoint cadence, device and parallelism layout are left out: they do not change the numbers, up to
    floating-point reassociation and the balance loss, which (as in MegaBlocks) is computed per micro batch."""
    train = dataclasses.asdict(settings)
    for key in ("checkpoint_dir", "checkpoint_every", "keep_checkpoints", "log_every", "peak_tflops", "device",
                "compile", "activation_checkpointing", "micro_batch_tokens"):  # fmt: skip
        train.pop(key)
    model = dataclasses.asdict(model_settings)
    for key, default in _LATER_MODEL_FIELDS.items():
        if model[key] == default:
            del model[key]
    data = []
    for stage in curriculum:
        data.append([stage.name, stage.manifest_key, stage.train_tokens])
    text = json.dumps({"model": model, "train": train, "data": data}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
