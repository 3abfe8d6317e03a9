"""What a training run reports: FLOPs per token and MFU, expert load, and a progress line."""

from __future__ import annotations

import sys
import time

import torch

from trainer.config import ModelConfig

# Dense bf16 tensor-core peaks per device (vendor data sheets), matched against torch.cuda.get_device_name().
_PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0), ("B200", 2250.0))


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward): 6 x active parameters outside the embedding lookup, plus
    attention's 12 x layers x d_model x seq_len (PaLM's estimate, appendix B)."""
    _, active = config.parameter_counts()
    matmul_parameters = active - config.vocab_size * config.d_model
    return 6.0 * matmul_parameters + 12.0 * config.n_layers * config.d_model * seq_len


def peak_tflops(device: torch.device, configured: float | None) -> float | None:
    """Per-device peak for MFU: the configured figure, else a known GPU's bf16 peak, else None (no MFU)."""
    if configured is not None:
        return configured
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in _PEAK_BF16_TFLOPS if key in name), None)


def expert_imbalance(load: torch.Tensor) -> list[float]:
    """Per layer, the busiest expert's share of routed tokens times the number of experts (1.0 = perfect balance,
    E = one expert takes everything)."""
    return (load.max(dim=-1).values * load.shape[-1]).tolist()


class Progress:
    """A one-line progress report: redrawn in place on a terminal, printed every `every` steps otherwise."""

    def __init__(self, total_steps: int, first_step: int, every: int) -> None:
        self.total, self.first, self.every = total_steps, first_step, every
        self.started = time.monotonic()
        self.interactive = sys.stderr.isatty()

    def update(self, step: int, stage: str, loss: float, lr: float, tokens_per_s: float) -> None:
        done = step + 1
        if not self.interactive and done % self.every and done != self.total:
            return
        elapsed = time.monotonic() - self.started
        remaining = elapsed / max(1, done - self.first) * (self.total - done)
        filled = int(20 * done / self.total)
        line = (
            f"[train] [{'#' * filled}{'.' * (20 - filled)}] step {done}/{self.total} {stage} loss {loss:.3f} "
            f"lr {lr:.2e} {tokens_per_s:,.0f} tok/s eta {remaining:.0f}s"
        )
        if self.interactive:
            print("\r" + line, end="\n" if done == self.total else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)
