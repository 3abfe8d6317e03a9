"""The DBRX-style decoder against transformers' DbrxForCausalLM (4.57), expert paths, losses, interop.

Runs in the PyTorch environment (`$DATAPREP_TORCH_PYTHON -m pytest --noconftest tests/trainer`, from
scripts/test.sh), where torch and the transformers reference live.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import DbrxConfig, DbrxForCausalLM

from trainer.config import PRESETS, ModelConfig
from trainer.hf import export_state_dict, hf_config, import_state_dict
from trainer.model import Decoder, Output

TINY = ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=8, kv_heads=2, ffn_hidden=48, n_experts=8, top_k=3,
                   rope_theta=12_345.0, clip_qkv=0.3)  # fmt: skip


def models(config: ModelConfig, seed: int = 0) -> tuple[Decoder, DbrxForCausalLM]:
    torch.manual_seed(seed)
    ours = Decoder(config).eval()
    theirs = DbrxForCausalLM(DbrxConfig(**hf_config(config), attn_implementation="eager")).eval()
    theirs.load_state_dict(export_state_dict(ours.state_dict(), config))
    return ours, theirs


@pytest.mark.parametrize("experts", ["sorted", "reference"])
def test_logits_equal_transformers_dbrx_in_fp32(experts):
    config = TINY.replace(experts=experts)
    ours, theirs = models(config)
    tokens = torch.randint(0, config.vocab_size, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(tokens).logits
        got = ours(tokens).logits
    assert (got - expected).abs().max().item() < 1e-4
    # the clip and rope_theta matter: a different value changes the logits (so the comparison can fail)
    changed = Decoder(config.replace(rope_theta=10_000.0)).eval()
    changed.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert (changed(tokens).logits - expected).abs().max().item() > 1e-3


def language_model_loss(output: Output, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of the logits in fp32 plus the auxiliary router losses."""
    logits = output.logits.float()
    cross_entropy = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return cross_entropy + output.load_balance_loss + output.router_z_loss


def test_sorted_and_reference_experts_agree_in_values_and_gradients():
    sorted_model = Decoder(TINY.replace(experts="sorted"))
    reference = Decoder(TINY.replace(experts="reference"))
    reference.load_state_dict(sorted_model.state_dict())
    tokens = torch.randint(0, TINY.vocab_size, (2, 33), generator=torch.Generator().manual_seed(2))
    targets = tokens.roll(-1, dims=1)
    losses = []
    for model in (sorted_model, reference):
        loss = language_model_loss(model(tokens), targets)
        loss.backward()
        losses.append(loss.item())
    assert abs(losses[0] - losses[1]) < 1e-6
    for (name, a), (_, b) in zip(sorted_model.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_matrices_start_as_normal_with_init_std_and_layer_norm_gains_at_one():
    torch.manual_seed(0)
    model = Decoder(TINY.replace(init_std=0.05))
    for name, parameter in model.named_parameters():
        if name.endswith("norm.weight"):
            assert torch.equal(parameter, torch.ones_like(parameter)), name
        else:
            assert parameter.ndim == 2 and parameter.std().item() == pytest.approx(0.05, rel=0.15), name
            assert abs(parameter.mean().item()) < 4 * 0.05 / math.sqrt(parameter.numel()), name


def test_depth_scaled_init_shrinks_only_the_residual_projections_by_one_over_sqrt_two_layers():
    torch.manual_seed(0)
    plain = Decoder(TINY)
    torch.manual_seed(0)
    scaled = Decoder(TINY.replace(depth_scaled_init=True))
    factor = 1 / math.sqrt(2 * TINY.n_layers)
    for (name, before), after in zip(plain.named_parameters(), scaled.parameters(), strict=True):
        residual = name.endswith(("attn.out.weight", "moe.experts.w2"))
        expected = before * factor if residual else before
        assert torch.allclose(after, expected, rtol=1e-6, atol=1e-9), name


def test_load_balance_loss_equals_its_weight_at_perfect_balance_and_grows_when_skewed():
    config = TINY.replace(n_layers=1)
    model = Decoder(config)
    with torch.no_grad():
        model.layers[0].moe.router.layer.weight.zero_()  # uniform probabilities: every expert equally likely
    tokens = torch.randint(0, config.vocab_size, (4, 64))
    # uniform probabilities make topk pick the first k experts: skewed counts, but mean probability 1/E everywhere,
    # so the loss is still exactly the weight (MegaBlocks' loss is E/(Tk) sum_e count_e * mean_prob_e)
    assert model(tokens).load_balance_loss.item() == pytest.approx(config.load_balance_weight, rel=1e-5)
    moe = model.layers[0].moe
    same = torch.randn(config.d_model).expand(1, 64, config.d_model)  # every token alike
    with torch.no_grad():
        moe.router.layer.weight[0] = same[0, 0]  # expert 0 gets a large logit for all of them
        _, balance, _, load = moe(same)
    assert balance.item() > 1.5 and load[0].item() == pytest.approx(1 / config.top_k)


def test_document_mask_keeps_attention_inside_each_packed_document():
    model = Decoder(TINY).eval()
    first, second = torch.randint(0, TINY.vocab_size, (1, 10)), torch.randint(0, TINY.vocab_size, (1, 7))
    packed = torch.cat([first, second], dim=1)
    sequence_ids = torch.tensor([[0] * 10 + [1] * 7])
    with torch.no_grad():
        masked = model(packed, sequence_ids).logits[:, 10:]
        alone = model(second).logits
        unmasked = model(packed).logits[:, 10:]
    assert (masked - alone).abs().max().item() < 1e-4  # positions restart? no: RoPE is relative, so equal
    assert (unmasked - alone).abs().max().item() > 1e-3


def test_weights_round_trip_through_the_transformers_layout():
    ours, theirs = models(TINY, seed=3)
    back = import_state_dict(theirs.state_dict(), TINY)
    for name, value in ours.state_dict().items():
        assert torch.equal(value, back[name]), name


def test_presets_have_the_documented_sizes():
    total, active = PRESETS["dbrx"].parameter_counts()
    assert 130e9 < total < 134e9 and 35e9 < active < 37e9  # DBRX: 132B total, 36B active
    total, active = PRESETS["moe_a"].parameter_counts()
    assert 6.5e9 < total < 8e9 and 2e9 < active < 2.6e9
