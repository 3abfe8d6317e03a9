"""A small MDS curriculum written without Spark, and the config that trains on it (for the trainer's tests).

The documents follow learnable rules (arithmetic progressions modulo 500 over a 512-token vocabulary), so a tiny
model's loss falls within a few dozen steps. EOS is 511 and <|pad|> 510, as each stage's manifest says.

Tests reach these through fixtures (`toy`, `write_curriculum`, `toy_config`), never by importing this file; the
fixtures return constants and pure functions, so they are session-scoped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
import yaml

from dataprep.config import PipelineConfig, parse_config
from pipelines.mds.format import ShardSettings, write_samples

EOS, PAD, VOCAB = 511, 510, 512
STAGES = (("warm", 32, 96), ("hot", 64, 24))  # name, seq_len, samples
TOY_MODEL = {"vocab_size": VOCAB, "d_model": 32, "n_heads": 4, "kv_heads": 2, "ffn_hidden": 32}  # overrides of `tiny`


@dataclass(frozen=True)
class ToyCurriculum:
    """The token ids every stage's manifest declares, and the model the toy config trains."""

    eos: int
    pad: int
    vocab_size: int
    model_overrides: Mapping[str, Any]  # read-only: spread it into a new dict (`{**toy.model_overrides, ...}`)


@pytest.fixture(scope="session")
def toy() -> ToyCurriculum:
    """The toy curriculum's EOS, pad id and vocabulary size, and the toy model's overrides of `tiny` (a read-only
    view, so that no test can change the overrides the session's other tests train with)."""
    return ToyCurriculum(eos=EOS, pad=PAD, vocab_size=VOCAB, model_overrides=MappingProxyType(TOY_MODEL))


def documents(rng: np.random.Generator, tokens: int) -> np.ndarray:
    """EOS-joined progressions, `tokens` long."""
    pieces, total = [], 0
    while total < tokens:
        start, stride, length = rng.integers(0, 500), rng.integers(1, 7), rng.integers(5, 40)
        doc = np.append((start + stride * np.arange(length)) % 500, EOS)
        pieces.append(doc)
        total += len(doc)
    return np.concatenate(pieces)[:tokens].astype(np.int32)


@pytest.fixture(scope="session")
def write_curriculum() -> Callable[..., str]:
    """`write_curriculum(root, stages=(("warm", 32, 96), ("hot", 64, 24)), short_last=False)`: MDS stages (name,
    seq_len, samples) and their manifests under <root>/mds/toy/, and the mix file; returns the mix path. The same
    arguments write the same tokens; `short_last` cuts each stage's last sample to half its length."""

    def write(root: str, stages: tuple[tuple[str, int, int], ...] = STAGES, short_last: bool = False) -> str:
        rng = np.random.default_rng(0)
        mix = {"name": "toy", "seq_len": 32, "stages": []}
        for name, seq_len, count in stages:
            stream = documents(rng, seq_len * count).reshape(count, seq_len)
            samples = list(stream)
            if short_last:
                samples[-1] = samples[-1][: seq_len // 2]
            directory = os.path.join(root, "mds", "toy", name)
            # several small shards, so that shuffling crosses shard boundaries
            write_samples(directory, samples, ShardSettings(compression="zstd", size_limit=1 << 11))
            manifest = {"samples": count, "stage": {"seq_len": seq_len, "name": name}, "eos_id": EOS, "pad_id": PAD,
                        "token_dtype": "int32", "key": f"{name}-{seq_len}-{count}-{short_last}"}  # fmt: skip
            with open(os.path.join(directory, "manifest.json"), "w", encoding="utf-8") as handle:
                json.dump(manifest, handle)
            mix["stages"].append({"name": name, "tokens": seq_len * count, "seq_len": seq_len,
                                  "components": [{"name": "all", "source": "toy", "weight": 1}]})  # fmt: skip
        path = os.path.join(root, "toy.yaml")
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(mix, handle)
        return path

    return write


@pytest.fixture(scope="session")
def toy_config() -> Callable[..., PipelineConfig]:
    """`toy_config(root, mix_path, **train)`: a validated config that trains the toy model on CPU on the mix at
    `mix_path`, with its lakehouse at `root`; `train` changes or adds settings of the train section."""

    def build(root: str, mix_path: str, **train: Any) -> PipelineConfig:
        settings = {
            "model": "tiny",
            "model_overrides": TOY_MODEL,
            "batch_tokens": 128,
            "lr": 0.01,
            "warmup_steps": 3,
            "log_every": 2,
            "checkpoint_every": 1000,
            "device": "cpu",
            **train,
        }
        return parse_config({
            "lakehouse": {"root": root},
            "sources": [{"name": "toy", "format": "text", "paths": [root]}],
            "mds": {"mix": mix_path},
            "train": settings,
        })  # fmt: skip

    return build
