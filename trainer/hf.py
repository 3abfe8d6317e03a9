"""Weights to and from `transformers`' DbrxForCausalLM layout (its config.json and state-dict names).

Nothing here imports transformers: the mapping is names and a config dict, so a checkpoint can be exported on a
machine without it and loaded with `DbrxForCausalLM.from_pretrained` (or `DbrxConfig(**hf_config(...))`) elsewhere.
"""

from __future__ import annotations

import torch

from trainer.config import ModelConfig

_LAYER = {
    "attn_norm.weight": "norm_attn_norm.norm_1.weight",
    "attn.qkv.weight": "norm_attn_norm.attn.Wqkv.weight",
    "attn.out.weight": "norm_attn_norm.attn.out_proj.weight",
    "moe_norm.weight": "norm_attn_norm.norm_2.weight",
    "moe.router.layer.weight": "ffn.router.layer.weight",
    "moe.experts.w1": "ffn.experts.mlp.w1",
    "moe.experts.v1": "ffn.experts.mlp.v1",
    "moe.experts.w2": "ffn.experts.mlp.w2",
}
_OUTSIDE = {"embed.weight": "transformer.wte.weight", "final_norm.weight": "transformer.norm_f.weight",
            "lm_head.weight": "lm_head.weight"}  # fmt: skip


def hf_config(config: ModelConfig) -> dict:
    """DbrxConfig keyword arguments (= config.json) describing the same model."""
    return {
        "d_model": config.d_model,
        "n_heads": config.n_heads,
        "n_layers": config.n_layers,
        "max_seq_len": config.max_seq_len,
        "vocab_size": config.vocab_size,
        "attn_config": {"kv_n_heads": config.kv_heads, "clip_qkv": config.clip_qkv, "rope_theta": config.rope_theta},
        "ffn_config": {
            "ffn_hidden_size": config.ffn_hidden,
            "moe_num_experts": config.n_experts,
            "moe_top_k": config.top_k,
            "moe_normalize_expert_weights": 1.0,
            "moe_loss_weight": config.load_balance_weight,
            "ffn_act_fn": {"name": "silu"},
        },
        "tie_word_embeddings": False,
        "initializer_range": config.init_std,
    }


def _names(config: ModelConfig) -> dict[str, str]:
    names = dict(_OUTSIDE)
    for layer in range(config.n_layers):
        for ours, theirs in _LAYER.items():
            names[f"layers.{layer}.{ours}"] = f"transformer.blocks.{layer}.{theirs}"
    return names


def export_state_dict(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    names = _names(config)
    missing = set(names) - set(state)
    if missing:
        raise KeyError(f"not a model of this config: missing {sorted(missing)[:5]}")
    return {names[key]: value for key, value in state.items() if key in names}


def import_state_dict(hf_state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    reverse = {theirs: ours for ours, theirs in _names(config).items()}
    missing = set(reverse) - set(hf_state)
    if missing:
        raise KeyError(f"not a DbrxForCausalLM of this config: missing {sorted(missing)[:5]}")
    return {reverse[key]: value for key, value in hf_state.items() if key in reverse}
