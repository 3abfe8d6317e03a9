"""Cross-entropy of the output projection without materialising the logits of the whole batch.

With DBRX's 100,352-entry vocabulary the logits dominate memory (4 bytes x vocab per token, three times over for
logits, log-softmax and their gradient) and, on small models, time. `linear_cross_entropy` computes the summed
loss chunk by chunk of tokens, and since the loss is a scalar, each chunk's gradients with respect to the hidden
states and the projection weight are computed right there (softmax minus one-hot, two matmuls) and kept; backward
only scales them by the incoming gradient. Softmax and the loss run in fp32 whatever the matmul dtype.
"""

from __future__ import annotations

import torch


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index: int, chunk_tokens: int):
        # hidden (tokens, d_model), weight (vocab, d_model), targets (tokens,)
        needs_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        # The matmuls run in autocast's dtype when it is on (bf16 is 2-4x faster, on CPUs with AVX-512 BF16 too);
        # the weight is cast once, not once per matmul.
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        matmul_weight = weight.to(dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for start in range(0, len(hidden), chunk_tokens):
            rows = hidden[start : start + chunk_tokens].to(dtype)
            labels = targets[start : start + chunk_tokens]
            valid = labels != ignore_index
            safe = torch.where(valid, labels, 0)
            logits = (rows @ matmul_weight.T).float()  # (chunk, vocab)
            picked = logits.gather(1, safe[:, None]).squeeze(1)
            # log-sum-exp by hand, in place, so that exp runs once per logit and its result is reused: it is the
            # softmax numerator the gradient needs.
            peak = logits.amax(dim=-1, keepdim=True)
            exponentials = logits.sub_(peak).exp_()
            sums = exponentials.sum(dim=-1)
            total += ((peak.squeeze(1) + sums.log() - picked) * valid).sum()
            if not needs_grad:
                continue
            # d(sum of losses)/d(logits) = softmax - one_hot(target), zero on ignored rows; computed in place.
            probabilities = exponentials.mul_((valid / sums)[:, None])
            probabilities[torch.arange(len(rows), device=rows.device), safe] -= valid.to(probabilities.dtype)
            gradient = probabilities.to(dtype)
            grad_hidden[start : start + chunk_tokens] = gradient @ matmul_weight
            if gradient.dtype == torch.float32:
                grad_weight.addmm_(gradient.T, rows)
            else:
                grad_weight.add_(gradient.T @ rows)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_output.to(torch.float32)
        return (grad_hidden * scale.to(grad_hidden.dtype), (grad_weight * scale).to(ctx.weight_dtype), None, None,
                None)  # fmt: skip


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
    chunk_tokens: int = 1024,
) -> torch.Tensor:  # fmt: skip
    """Sum over tokens of cross_entropy(hidden @ weight.T, targets), ignoring `ignore_index` targets."""
    return _LinearCrossEntropy.apply(
        hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1), ignore_index, chunk_tokens
    )
