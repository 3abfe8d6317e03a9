"""Training throughput: our trainer's step against transformers' DbrxForCausalLM on the same model, weights, batch.

    source scripts/env.sh && ensure_torch_env && $DATAPREP_TORCH_PYTHON bench/train.py [--steps 8]
    $DATAPREP_TORCH_PYTHON bench/train.py --gpu [--steps 20] [--compile]    # on a GPU: a ~1 B-parameter MoE, MFU

A step is what training does: forward, next-token cross-entropy plus the router's load-balancing loss, backward,
AdamW. Both sides get the same config (DBRX's 100,352-token vocabulary), the same initial weights (through
trainer.hf) and the same token batches; the first step's cross-entropy is checked equal before anything is timed.
CPU mode uses a small config in fp32 on every core torch is given; GPU mode a ~1 B-parameter MoE (16 experts,
top-4) in bf16 autocast, reporting MFU against the device's dense bf16 peak. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import DbrxConfig, DbrxForCausalLM

from trainer.config import ModelConfig
from trainer.hf import export_state_dict, hf_config
from trainer.metrics import flops_per_token, peak_tflops
from trainer.model import Decoder
from trainer.optim import build_optimizer

CPU_CONFIG = ModelConfig(d_model=256, n_layers=4, n_heads=8, kv_heads=2, ffn_hidden=512, n_experts=8, top_k=2)
GPU_CONFIG = ModelConfig(
    d_model=1024, n_layers=16, n_heads=16, kv_heads=4, ffn_hidden=1408, n_experts=16, top_k=4,
    rope_theta=500_000.0,
)  # fmt: skip


def our_step(model: Decoder, optimizer, tokens: torch.Tensor, bf16: bool) -> float:
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    with torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=bf16):
        output = model(inputs, None, targets)
    cross_entropy = output.cross_entropy_sum / targets.numel()
    (cross_entropy + output.load_balance_loss + output.router_z_loss).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return cross_entropy.item()


def their_step(model: DbrxForCausalLM, optimizer, tokens: torch.Tensor, bf16: bool) -> float:
    with torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=bf16):
        output = model(input_ids=tokens, labels=tokens, output_router_logits=True)
    output.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return (output.loss - model.moe_loss_weight * output.aux_loss).item()


def timed(sides: list, batches: list[torch.Tensor], bf16: bool, warmup: int) -> list[tuple[float, float]]:
    """Per side (step function, model, optimizer): (first step's cross-entropy, seconds of the timed steps). The
    sides take turns step by step, so that a machine slowing down or speeding up (shared hosts do) hits both."""
    results = [[0.0, 0.0] for _ in sides]
    for index, tokens in enumerate(batches):
        for side, (step, model, optimizer) in enumerate(sides):
            _synchronize(tokens.device)
            started = time.perf_counter()
            cross_entropy = step(model, optimizer, tokens, bf16)
            _synchronize(tokens.device)
            if index == 0:
                results[side][0] = cross_entropy
            if index >= warmup:
                results[side][1] += time.perf_counter() - started
    return [tuple(result) for result in results]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="the ~1 B MoE on the first GPU, bf16, with MFU")
    parser.add_argument("--steps", type=int, default=8, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--batch", type=int, default=None, help="sequences per step (default 4 on CPU, 8 on GPU)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 512 CPU, 2048 GPU)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on CPU too (always on GPU)")
    parser.add_argument("--vocab", type=int, default=100_352, help="vocabulary (default DBRX's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile our blocks (GPU mode)")
    parser.add_argument("--skip-transformers", action="store_true", help="time ours only (e.g. too big for HF)")
    args = parser.parse_args()
    device = torch.device("cuda" if args.gpu else "cpu")
    config = (GPU_CONFIG if args.gpu else CPU_CONFIG).replace(max_seq_len=4096, vocab_size=args.vocab)
    batch, seq_len = args.batch or (8 if args.gpu else 4), args.seq_len or (2048 if args.gpu else 512)
    warmup = 2
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, args.vocab, (batch, seq_len + 1), generator=generator).to(device)
               for _ in range(warmup + args.steps)]  # fmt: skip

    torch.manual_seed(0)
    ours = Decoder(config).to(device)
    sides = [(our_step, ours, build_optimizer(ours, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1))]
    if not args.skip_transformers:
        theirs = DbrxForCausalLM(DbrxConfig(**hf_config(config), attn_implementation="sdpa")).to(device).train()
        theirs.load_state_dict(export_state_dict(ours.state_dict(), config))
        # fused AdamW on both sides: the optimizer is not what is compared
        their_optimizer = torch.optim.AdamW(
            theirs.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True
        )
        sides.append((their_step, theirs, their_optimizer))
    if args.compile:
        for block in ours.layers:
            block.compile()
    bf16 = args.gpu or args.bf16
    results = timed(sides, batches, bf16, warmup)
    tokens = batch * seq_len * args.steps
    total, active = config.parameter_counts()
    print(f"model: {total / 1e6:,.0f} M parameters ({active / 1e6:,.0f} M active), vocabulary {config.vocab_size:,}, "
          f"{batch} x {seq_len} tokens a step, {device}, {'bf16' if bf16 else 'fp32'}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    rates = [tokens / seconds for _, seconds in results]
    for name, (first, _), rate in zip(("ours", "transformers"), results, rates, strict=False):
        print(f"{name + ':':13} {rate:,.0f} tokens/s  (first-step cross-entropy {first:.4f})")
    result = {"tokens_per_s": f"{rates[0]:.0f}"}
    if len(results) == 2:
        tolerance = 5e-2 if bf16 else 1e-3
        assert abs(results[0][0] - results[1][0]) < tolerance, "the two models disagree: not the same computation"
        result["x_vs_transformers"] = f"{rates[0] / rates[1]:.2f}"
    peak = peak_tflops(device, None)
    if peak:
        mfu = flops_per_token(config, seq_len) * rates[0] / (peak * 1e12)
        print(f"MFU: {mfu:.1%} of {peak:.0f} TFLOP/s ({torch.cuda.get_device_name(device)})")
        result["mfu"] = f"{mfu:.3f}"
    print("RESULT " + " ".join(f"{key}={value}" for key, value in result.items()))


if __name__ == "__main__":
    main()
