"""A DBRX-architecture decoder in plain PyTorch (no JAX): pre-norm blocks of attention and a mixture of experts.

- LayerNorm without bias; fused QKV projection clipped to +-clip_qkv; RoPE (rotate-half convention, computed in
  fp32); grouped-query attention through `scaled_dot_product_attention`, causal, optionally masked across the
  documents packed into one sample.
- Router: a bias-free linear layer, softmax in fp32, top-k of E experts, the k weights renormalised to sum to one.
- Experts: SwiGLU (silu(x W1^T) * (x V1^T)) W2, dropless: every routed token is computed. Two implementations with
  the same results: `sorted` (token copies sorted by expert, one contiguous matmul per expert, or torch's grouped
  matmul on GPU) and `reference` (a mask per expert, as transformers does it).
- Auxiliary losses in fp32: MegaBlocks' load-balancing loss (equal to its weight at perfect balance, summed over
  layers and divided by their number) and the optional router z-loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import IGNORE_INDEX, ModelConfig
from trainer.loss import linear_cross_entropy


@dataclass
class Output:
    logits: torch.Tensor | None  # (batch, length, vocab); None when the loss was computed from hidden states
    cross_entropy_sum: torch.Tensor | None  # summed over target tokens, when targets were given
    load_balance_loss: torch.Tensor
    router_z_loss: torch.Tensor
    expert_load: torch.Tensor  # (layers, experts): share of routed token copies per expert


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.qkv = nn.Linear(config.d_model, config.d_model + 2 * config.kv_heads * config.head_dim, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None
    ) -> torch.Tensor:
        c = self.config
        batch, length, _ = x.shape
        qkv = self.qkv(x)
        if c.clip_qkv is not None:
            qkv = qkv.clamp(-c.clip_qkv, c.clip_qkv)
        q, k, v = qkv.split([c.d_model, c.kv_heads * c.head_dim, c.kv_heads * c.head_dim], dim=-1)
        q = q.view(batch, length, c.n_heads, c.head_dim).transpose(1, 2)
        k = k.view(batch, length, c.kv_heads, c.head_dim).transpose(1, 2)
        v = v.view(batch, length, c.kv_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        # Query head h reads KV head h // (n_heads / kv_heads).
        repeat = c.n_heads // c.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(batch, length, c.d_model))


def rope_tables(config: ModelConfig, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (batch, 1, length, head_dim), in fp32."""
    inverse = 1.0 / (
        config.rope_theta ** (torch.arange(0, config.head_dim, 2, device=positions.device).float() / config.head_dim)
    )
    angles = positions.float()[..., None] * inverse
    angles = torch.cat([angles, angles], dim=-1)[:, None]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    cos, sin = rope
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class Router(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.top_k = config.top_k
        self.layer = nn.Linear(config.d_model, config.n_experts, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits fp32, probabilities fp32, top-k weights renormalised, top-k expert ids) per token."""
        logits = self.layer(x).float()
        probabilities = logits.softmax(dim=-1)
        weights, experts = probabilities.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return logits, probabilities, weights, experts


class Experts(nn.Module):
    """E SwiGLU experts stored as DBRX stores them: w1, v1, w2 of shape (E * ffn_hidden, d_model)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        shape = (config.n_experts * config.ffn_hidden, config.d_model)
        self.w1, self.v1, self.w2 = (nn.Parameter(torch.empty(shape)) for _ in range(3))

    def per_expert(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shape = (self.config.n_experts, self.config.ffn_hidden, self.config.d_model)
        return self.w1.view(shape), self.v1.view(shape), self.w2.view(shape)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        if self.config.experts == "reference":
            return self._reference(x, weights, experts)
        return self._sorted(x, weights, experts)

    def _sorted(self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """Each token copied once per chosen expert, copies sorted by expert, each expert's rows computed together."""
        dtype = _compute_dtype(x)
        w1, v1, w2 = (w.to(dtype) for w in self.per_expert())
        flat = experts.reshape(-1)
        order = flat.argsort(stable=True)
        token = order // self.config.top_k
        rows = x[token].to(dtype)
        counts = torch.bincount(flat, minlength=self.config.n_experts)
        if _grouped_mm_available(rows):
            offsets = counts.cumsum(0).to(torch.int32)
            gate = torch._grouped_mm(rows, w1.transpose(1, 2), offs=offsets)
            up = torch._grouped_mm(rows, v1.transpose(1, 2), offs=offsets)
            produced = torch._grouped_mm(F.silu(gate) * up, w2, offs=offsets)
        else:
            pieces = []
            for expert, chunk in enumerate(rows.split(counts.tolist())):
                if len(chunk):
                    pieces.append((F.silu(chunk @ w1[expert].T) * (chunk @ v1[expert].T)) @ w2[expert])
            produced = torch.cat(pieces) if pieces else rows
        scale = weights.reshape(-1)[order].to(produced.dtype)[:, None]
        # summed in x's dtype: fp32 under autocast, where the experts' matmuls ran in bf16
        return torch.zeros_like(x).index_add_(0, token, (produced * scale).to(x.dtype))

    def _reference(self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        w1, v1, w2 = self.per_expert()
        out = torch.zeros_like(x)
        for expert in range(self.config.n_experts):
            token, slot = torch.where(experts == expert)
            if len(token):
                chunk = x[token]
                produced = (F.silu(chunk @ w1[expert].T) * (chunk @ v1[expert].T)) @ w2[expert]
                out.index_add_(0, token, (produced * weights[token, slot, None].to(produced.dtype)).to(x.dtype))
        return out


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The matmul dtype: autocast's when it is on (torch._grouped_mm is not an autocast op, so we cast), else x's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _grouped_mm_available(rows: torch.Tensor) -> bool:
    return rows.is_cuda and rows.dtype == torch.bfloat16 and hasattr(torch, "_grouped_mm")


class MoE(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.router = Router(config)
        self.experts = Experts(config)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(output, load-balance term, z-loss term, expert load) for one layer."""
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        logits, probabilities, weights, experts = self.router(tokens)
        out = self.experts(tokens, weights, experts).reshape(shape)
        c = self.config
        routed = torch.bincount(experts.reshape(-1), minlength=c.n_experts).float()
        # MegaBlocks: E / (T k) * sum_e routed_e * mean_prob_e, which is 1 at perfect balance.
        balance = c.n_experts / (len(tokens) * c.top_k) * (routed * probabilities.mean(dim=0)).sum()
        z_loss = torch.logsumexp(logits, dim=-1).square().mean()
        return out, balance, z_loss, routed / routed.sum()


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=False)
        self.attn = Attention(config)
        self.moe_norm = nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=False)
        self.moe = MoE(config)

    def forward(self, x, rope, mask):
        x = x + self.attn(self.attn_norm(x), rope, mask)
        out, balance, z_loss, load = self.moe(self.moe_norm(x))
        return x + out, balance, z_loss, load


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=False)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Every weight matrix (embedding, projections, router, experts) drawn from normal(0, init_std), the
        LayerNorm gains set to one; with `depth_scaled_init` the residual-stream writers start smaller (see
        `residual_projections`). Matrices are drawn in registration order (that of `named_parameters`), so a seed
        gives the same draws with depth scaling on or off."""
        scaled_std = self.config.init_std / math.sqrt(2 * self.config.n_layers)
        residual = {id(weight) for weight in residual_projections(self)} if self.config.depth_scaled_init else set()
        for module in self.modules():
            for weight in _initialised_matrices(module):
                std = scaled_std if id(weight) in residual else self.config.init_std
                with torch.no_grad():
                    weight.normal_(0.0, std, generator=generator)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)

    def forward(
        self, tokens: torch.Tensor, sequence_ids: torch.Tensor | None = None, targets: torch.Tensor | None = None
    ) -> Output:
        """tokens (batch, length); sequence_ids (batch, length) keep attention inside each packed document. With
        targets (batch, length; IGNORE_INDEX where there is none) the summed cross-entropy is computed chunk by
        chunk (trainer/loss.py) instead of returning the logits."""
        batch, length = tokens.shape
        positions = torch.arange(length, device=tokens.device).expand(batch, length)
        mask = None
        if sequence_ids is not None:
            same = sequence_ids[:, :, None] == sequence_ids[:, None, :]
            causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
            mask = (same & causal)[:, None]
        rope = rope_tables(self.config, positions)
        x = self.embed(tokens)
        balances, z_losses, loads = [], [], []
        for layer in self.layers:
            x, balance, z_loss, load = layer(x, rope, mask)
            balances.append(balance)
            z_losses.append(z_loss)
            loads.append(load)
        hidden = self.final_norm(x)
        logits, cross_entropy_sum = None, None
        if targets is None:
            logits = self.lm_head(hidden)
        else:
            cross_entropy_sum = linear_cross_entropy(hidden, self.lm_head.weight, targets, IGNORE_INDEX)
        c = self.config
        return Output(
            logits=logits,
            cross_entropy_sum=cross_entropy_sum,
            load_balance_loss=c.load_balance_weight * torch.stack(balances).mean(),
            router_z_loss=c.router_z_loss_weight * torch.stack(z_losses).mean(),
            expert_load=torch.stack(loads).detach(),
        )


def _initialised_matrices(module: nn.Module) -> tuple[torch.Tensor, ...]:
    """The weight matrices a module owns directly (not its children's), in registration order."""
    if isinstance(module, nn.Linear | nn.Embedding):
        return (module.weight,)
    if isinstance(module, Experts):
        return module.w1, module.v1, module.w2
    return ()


def residual_projections(model: nn.Module) -> list[torch.Tensor]:
    """The weights whose outputs are added to the residual stream, two per block (attention's out projection,
    the experts' down projection w2); wrappers around the blocks do not hide them."""
    projections = []
    for module in model.modules():
        if isinstance(module, Attention):
            projections.append(module.out.weight)
        elif isinstance(module, Experts):
            projections.append(module.w2)
    return projections
