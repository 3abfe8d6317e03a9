"""The training loop on a toy MDS curriculum: loss falls, resume is exact, splits of the batch agree, MLflow."""

import dataclasses
import glob
import os
import subprocess
import sys

import mlflow
import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import DbrxConfig, DbrxForCausalLM

from dataprep.config import PipelineConfig
from pipelines.settings import ConfigError
from pipelines.tracking import configure
from trainer.checkpoint import checkpoint_steps
from trainer.config import IGNORE_INDEX, model_config
from trainer.hf import export_state_dict, hf_config
from trainer.loss import linear_cross_entropy
from trainer.model import Decoder
from trainer.optim import build_optimizer, lr_factor
from trainer.train import TrainSummary, train


def train_on(config: PipelineConfig) -> TrainSummary:
    return train(config.train, config.mds, config.mlflow, config.lakehouse.root)


@pytest.fixture
def curriculum(tmp_path, write_curriculum) -> tuple[str, str]:
    """The toy curriculum written under `tmp_path`: (root, mix path)."""
    return str(tmp_path), write_curriculum(str(tmp_path))


@pytest.fixture
def no_balance_model(toy) -> dict:
    """The toy model without the load-balance loss: that loss is computed per forward pass, so it changes when the
    batch is split, and the tests that compare splits of a batch turn it off."""
    return {**toy.model_overrides, "load_balance_weight": 0.0}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_linear_cross_entropy_equals_cross_entropy_of_the_logits(dtype):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(300, 16, generator=generator).to(dtype).requires_grad_()
    weight = torch.randn(1000, 16, generator=generator).mul(0.1).requires_grad_()
    targets = torch.randint(0, 1000, (300,), generator=generator)
    targets[::7] = IGNORE_INDEX
    got = linear_cross_entropy(hidden, weight, targets, chunk_tokens=64)
    (2 * got).backward()
    got_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    logits = (hidden @ weight.to(dtype).T).float()
    expected = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    (2 * expected).backward()
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    assert abs(got.item() - expected.item()) / expected.item() < tolerance
    assert torch.allclose(got_grads[0].float(), hidden.grad.float(), atol=tolerance, rtol=tolerance)
    assert torch.allclose(got_grads[1], weight.grad, atol=tolerance * 10, rtol=tolerance)


def test_schedule_warms_up_linearly_then_decays_to_the_floor():
    factors = [lr_factor(step, warmup_steps=4, total_steps=20, min_lr_ratio=0.1) for step in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))
    assert factors[-1] == pytest.approx(0.1)


def test_weight_decay_falls_on_the_matrices_and_not_on_the_layer_norm_gains():
    with torch.device("meta"):  # DBRX's parameters by shape, without allocating its 132 B of them
        model = Decoder(model_config("dbrx"))
    decayed, plain = build_optimizer(model, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1).param_groups
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert {names[id(p)] for p in plain["params"]} == {name for name in names.values() if name.endswith("norm.weight")}
    assert len(decayed["params"]) + len(plain["params"]) == len(names)


def test_loss_falls_on_the_curriculum(curriculum, toy_config):
    root, mix = curriculum
    summary = train_on(toy_config(root, mix, stage_tokens={"warm": 96 * 32 * 4}, lr=0.02))
    assert len(summary.losses) == summary.total_steps == 96 + 12
    first, last = sum(summary.losses[:8]) / 8, sum(summary.losses[-8:]) / 8
    assert first > 6.0 and last < first - 1.0, (first, last)


def test_training_without_a_mix_is_a_config_error_that_names_mds_mix(curriculum, toy_config):
    root, mix = curriculum
    config = toy_config(root, mix)
    with pytest.raises(ConfigError, match="mds.mix"):
        train(config.train, dataclasses.replace(config.mds, mix=None), config.mlflow, config.lakehouse.root)


def test_a_resumed_run_reproduces_the_uninterrupted_trajectory_and_a_finished_one_is_up_to_date(curriculum, toy_config):
    root, mix = curriculum
    config = toy_config(root, mix, checkpoint_every=10, keep_checkpoints=5)
    straight = train_on(config)
    assert checkpoint_steps(straight.run_dir) == [10, 20, 30, 36]
    # a crash after step 20's checkpoint: the later ones never got written
    for step in (30, 36):
        os.remove(os.path.join(straight.run_dir, f"step-{step:08d}.pt"))
    resumed = train_on(config)
    assert resumed.start_step == 20 and resumed.run_dir == straight.run_dir
    assert resumed.losses == straight.losses[20:]
    again = train_on(config)
    assert again.up_to_date and again.losses == [] and "up to date" in again.format()


def test_a_changed_setting_trains_afresh_in_its_own_directory(curriculum, toy_config, toy):
    root, mix = curriculum
    first = train_on(toy_config(root, mix, max_steps=4))
    changed = train_on(toy_config(root, mix, max_steps=4, lr=0.005))
    assert changed.run_dir != first.run_dir and changed.start_step == 0
    # logging and checkpoint cadence do not change the numbers, so they keep the directory
    same = train_on(toy_config(root, mix, max_steps=4, log_every=1, checkpoint_every=2))
    assert same.run_dir == first.run_dir and same.up_to_date
    deeper_model = {**toy.model_overrides, "depth_scaled_init": True}
    deeper = train_on(toy_config(root, mix, max_steps=4, model_overrides=deeper_model))
    assert deeper.run_dir != first.run_dir and deeper.start_step == 0


def test_runs_fingerprinted_before_a_model_setting_was_added_keep_their_directory(curriculum, toy_config):
    # the fingerprint this run had before ModelConfig.depth_scaled_init existed: a new setting at its default must
    # not move existing runs away from their checkpoints
    root, mix = curriculum
    summary = train_on(toy_config(root, mix, max_steps=4))
    assert os.path.basename(summary.run_dir) == "toy-0a7f138d41b9"


def test_gradient_accumulation_and_activation_checkpointing_match_one_pass(curriculum, toy_config, no_balance_model):
    root, mix = curriculum
    whole = train_on(toy_config(root, mix, max_steps=6, model_overrides=no_balance_model))
    for name, changes in (("accumulation", {"micro_batch_tokens": 64}), ("ac", {"activation_checkpointing": True})):
        # these settings do not change the run's fingerprint, so each trains in a directory of its own
        other = train_on(toy_config(root, mix, max_steps=6, model_overrides=no_balance_model,
                                    checkpoint_dir=f"{root}/{name}", **changes))  # fmt: skip
        assert other.losses == pytest.approx(whole.losses, abs=1e-5), changes
        assert _max_weight_difference(whole.checkpoint, other.checkpoint) < 1e-4


def test_compiled_blocks_give_the_same_losses(curriculum, toy_config):
    # torch.compile's CPU backend generates and builds C++ for the blocks: about a minute on 2 cores, once
    root, mix = curriculum
    plain = train_on(toy_config(root, mix, max_steps=3))
    compiled = train_on(toy_config(root, mix, max_steps=3, compile=True, checkpoint_dir=f"{root}/compiled"))
    assert compiled.losses == pytest.approx(plain.losses, abs=1e-5)


def test_two_fsdp2_ranks_under_torchrun_match_one_process(curriculum, tmp_path, toy_config, no_balance_model):
    root, mix = curriculum
    raw = {"lakehouse": {"root": root}, "sources": [{"name": "toy", "format": "text", "paths": [root]}],
           "mds": {"mix": mix},
           "train": {"model": "tiny", "model_overrides": no_balance_model, "batch_tokens": 128, "lr": 0.01,
                     "warmup_steps": 3, "device": "cpu", "max_steps": 6, "checkpoint_dir": f"{root}/fsdp"}}  # fmt: skip
    path = tmp_path / "fsdp.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "dataprep.cli", "train", "--config", str(path), "--nproc", "2"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "steps 1-6 of 6" in result.stdout
    sharded = glob.glob(f"{root}/fsdp/*/step-00000006.pt")
    single = train_on(toy_config(root, mix, max_steps=6, model_overrides=no_balance_model))
    assert len(sharded) == 1 and _max_weight_difference(sharded[0], single.checkpoint) < 1e-4


def test_metrics_parameters_and_the_parent_run_are_recorded_in_mlflow(curriculum, monkeypatch, toy_config):
    root, mix = curriculum
    config = toy_config(root, mix, max_steps=6)
    experiment = configure(config.mlflow)  # the store and experiment (with its artifact location) the trainer will use
    parent = mlflow.MlflowClient().create_run(experiment, run_name="pipeline").info.run_id
    monkeypatch.setenv("DATAPREP_PARENT_RUN_ID", parent)
    summary = train_on(config)
    client = mlflow.MlflowClient()
    run = client.get_run(summary.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["dataprep.stage"] == "train"
    assert run.data.params["model.d_model"] == "32" and run.data.params["total_steps"] == "6"
    for metric in ("loss", "lr", "tokens_per_s", "grad_norm", "load_balance_loss", "expert_imbalance.layer_00"):
        history = client.get_metric_history(summary.run_id, metric)
        assert [point.step for point in history] == [2, 4, 6], metric
    loss_points = client.get_metric_history(summary.run_id, "loss")
    assert loss_points[0].value == pytest.approx(sum(summary.losses[:2]) / 2)
    artifacts = {a.path for a in client.list_artifacts(summary.run_id)}
    assert {"losses.json", "expert_load.json"} <= artifacts


def test_a_checkpoint_loads_into_transformers_dbrx_with_the_same_logits(curriculum, toy_config, toy):
    root, mix = curriculum
    summary = train_on(toy_config(root, mix, max_steps=3))
    state = torch.load(summary.checkpoint, weights_only=False)
    config = model_config("tiny", state["model_config"] | {})
    ours = Decoder(config).eval()
    ours.load_state_dict(state["model"])
    theirs = DbrxForCausalLM(DbrxConfig(**hf_config(config), attn_implementation="eager")).eval()
    theirs.load_state_dict(export_state_dict(state["model"], config))
    tokens = torch.randint(0, toy.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(tokens).logits - theirs(tokens).logits).abs().max().item() < 1e-4


def _max_weight_difference(path_a: str, path_b: str) -> float:
    a, b = (torch.load(p, weights_only=False)["model"] for p in (path_a, path_b))
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)
