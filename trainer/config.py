"""Model configuration of the DBRX-architecture decoder, with presets.

- `tiny`: a few hundred thousand parameters with DBRX's full vocabulary, for CPU tests and the demo.
- `moe_a`: a DBRX MoE-A-like size (fine-grained 16 experts, top-4; ~7 B total / ~2.3 B active, see
  `parameter_counts`).
- `dbrx`: DBRX itself (132 B total / 36 B active) as a specification: 40 layers, d_model 6144, 48 heads with 8 KV
  heads, 16 experts of 10,752 hidden units with top-4 routing, RoPE theta 500,000, QKV clipped at 8.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

VOCAB_SIZE = 100_352  # cl100k_base + DBRX specials, padded to 784 x 128
IGNORE_INDEX = -100  # target positions without a next token to learn (padding)


@dataclass(frozen=True)
class ModelConfig:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    kv_heads: int = 2
    ffn_hidden: int = 96  # hidden units of one expert
    n_experts: int = 4
    top_k: int = 2
    vocab_size: int = VOCAB_SIZE
    max_seq_len: int = 2048
    rope_theta: float = 10_000.0
    clip_qkv: float | None = 8.0
    norm_eps: float = 1e-5
    load_balance_weight: float = 0.05  # MegaBlocks-style; the auxiliary loss equals this at perfect balance
    router_z_loss_weight: float = 0.0
    experts: str = "sorted"  # sorted (tokens grouped by expert; grouped matmul on GPU) or reference (per expert)
    init_std: float = 0.02
    # GPT-2 / Megatron: the projections that write into the residual stream (attention's out, the experts' w2)
    # start at init_std / sqrt(2 n_layers), so the stream's variance does not grow with depth
    depth_scaled_init: bool = False

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads or self.n_heads % self.kv_heads:
            raise ValueError(f"d_model {self.d_model} / n_heads {self.n_heads} / kv_heads {self.kv_heads} must divide")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("the head dimension must be even for RoPE")
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k {self.top_k} must be between 1 and n_experts {self.n_experts}")
        if self.experts not in ("sorted", "reference"):
            raise ValueError(f"experts must be 'sorted' or 'reference', got {self.experts!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def parameter_counts(self) -> tuple[int, int]:
        """(total, active per token) parameters: embeddings and head, attention, norms, routers, experts."""
        attention = self.d_model * (self.d_model + 2 * self.kv_heads * self.head_dim) + self.d_model**2
        expert = 3 * self.d_model * self.ffn_hidden
        shared = self.n_layers * (attention + 2 * self.d_model + self.d_model * self.n_experts)
        outside = 2 * self.vocab_size * self.d_model + self.d_model
        total = outside + shared + self.n_layers * self.n_experts * expert
        active = outside + shared + self.n_layers * self.top_k * expert
        return total, active


PRESETS = {
    "tiny": ModelConfig(),
    "moe_a": ModelConfig(
        d_model=2048, n_layers=24, n_heads=16, kv_heads=4, ffn_hidden=2816, n_experts=16, top_k=4,
        max_seq_len=4096, rope_theta=500_000.0,
    ),
    "dbrx": ModelConfig(
        d_model=6144, n_layers=40, n_heads=48, kv_heads=8, ffn_hidden=10_752, n_experts=16, top_k=4,
        max_seq_len=32_768, rope_theta=500_000.0,
    ),
}  # fmt: skip


def model_config(preset: str, overrides: dict | None = None) -> ModelConfig:
    """A preset with some fields changed; unknown fields and wrong types are errors that name them."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; presets: {', '.join(PRESETS)}")
    base = PRESETS[preset]
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    changes = {}
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise ValueError(f"{key!r} is not a model setting; settings: {', '.join(fields)}")
        current = getattr(base, key)
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        allowed = (type(current),) if current is not None else (float, int)
        if isinstance(value, bool) != isinstance(current, bool) or not isinstance(value, allowed):
            raise ValueError(f"{key}: expected {type(current).__name__}, got {type(value).__name__} {value!r}")
        changes[key] = value
    return base.replace(**changes)
