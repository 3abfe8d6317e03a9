"""Batches from the MDS curriculum the `mds` stage wrote: deterministic order, exact resumption, stage by stage.

A curriculum is the mix's stages in order (`<mds output>/<mix>/<stage>/`, each with index.json + manifest.json).
Training spends a token budget on each stage (by default one pass: the tokens the stage holds) and moves on.

Order inside a stage, for epoch e: the shards in a seeded random order, their samples concatenated, cut into blocks
of `shuffle_block` samples, each block shuffled with its own seeded generator. Like streaming's block shuffles this
keeps reads local (a block touches a few shards) while mixing well, and it is a pure function of (seed, stage,
epoch, block): the position in the data is just "how many samples of which stage were consumed", which is what a
checkpoint stores. Every rank computes the same global order and takes its own slice of each batch, so the order
does not depend on the number of ranks either.

Targets are the next token; positions holding `<|pad|>` are ignored by the loss. With document masking, each token
gets the id of the document it belongs to (an EOS closes its document), so attention stays inside documents.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from pipelines import storage
from pipelines.mds import format as mds
from pipelines.mds.mixes import Mix
from pipelines.settings import ConfigError
from pipelines.storage import DEFAULT_STORAGE, Storage
from trainer.config import IGNORE_INDEX


class DataError(ConfigError):
    """The curriculum's MDS output is missing, incomplete, or does not fit the training settings."""


@dataclass(frozen=True)
class CurriculumStage:
    name: str
    directory: str
    seq_len: int
    samples: int
    train_tokens: int  # what training spends on this stage
    eos_id: int
    pad_id: int
    token_dtype: str
    manifest_key: str  # what the stage's bytes depend on (pipelines/mds/stage.py: stage_key)
    store: Storage = DEFAULT_STORAGE  # how to reach `directory`

    @property
    def tokens(self) -> int:
        """Tokens the stage holds (one pass)."""
        return self.samples * self.seq_len


def load_curriculum(
    mix: Mix, mds_output: str, stage_tokens: dict[str, int] | None = None, store: Storage = DEFAULT_STORAGE
) -> list[CurriculumStage]:
    """The mix's stages as written under `<mds_output>/<mix>/`; `stage_tokens` overrides a stage's training budget
    (more than it holds means more than one pass, in fresh orders)."""
    stage_tokens = dict(stage_tokens or {})
    unknown = sorted(set(stage_tokens) - {s.name for s in mix.stages})
    if unknown:
        raise DataError(f"train.stage_tokens: stages {unknown} are not in mix {mix.name!r}")
    curriculum = []
    for stage in mix.stages:
        directory = storage.join(mds_output, mix.name, stage.name)
        # A stage is complete exactly when its index.json exists (pipelines/mds/stage.py writes it last).
        if not store.exists(storage.join(directory, mds.INDEX)):
            raise DataError(f"{directory}: no MDS stage here (run `dataprep mds` for mix {mix.name!r} first)")
        manifest = json.loads(store.read_bytes(storage.join(directory, "manifest.json")))
        samples = manifest["samples"]
        if samples == 0:
            raise DataError(f"{directory}: the stage holds no samples")
        seq_len = manifest["stage"]["seq_len"]
        curriculum.append(
            CurriculumStage(
                name=stage.name,
                directory=directory,
                seq_len=seq_len,
                samples=samples,
                train_tokens=stage_tokens.get(stage.name, samples * seq_len),
                eos_id=manifest["eos_id"],
                pad_id=manifest["pad_id"],
                token_dtype=manifest["token_dtype"],
                manifest_key=manifest["key"],
                store=store,
            )
        )
    return curriculum


class StageSamples:
    """Random access to the samples of one MDS stage, keeping the most recently read shards decompressed."""

    def __init__(self, stage: CurriculumStage, cached_shards: int = 16) -> None:
        self.stage = stage
        self.entries = mds.read_index(stage.directory, stage.store)
        counts = np.array([entry["samples"] for entry in self.entries], dtype=np.int64)
        if int(counts.sum()) != stage.samples:
            raise DataError(
                f"{stage.directory}: index.json holds {int(counts.sum())} samples, manifest {stage.samples}"
            )
        self.shard_counts = counts
        self.shard_starts = np.concatenate([[0], np.cumsum(counts)])
        self._cache: OrderedDict[int, list[bytes]] = OrderedDict()
        self._cached_shards = cached_shards

    def __len__(self) -> int:
        return self.stage.samples

    def __getitem__(self, index: int) -> np.ndarray:
        shard = int(np.searchsorted(self.shard_starts, index, side="right")) - 1
        records = self._records(shard)
        return mds.decode_sample(records[index - int(self.shard_starts[shard])], self.stage.token_dtype)

    def _records(self, shard: int) -> list[bytes]:
        if shard in self._cache:
            self._cache.move_to_end(shard)
            return self._cache[shard]
        # A remote shard is read whole into memory; at most `cached_shards` of them stay there.
        records = mds.shard_records(mds.read_shard(self.stage.directory, self.entries[shard], self.stage.store))
        if len(records) != self.shard_counts[shard]:
            raise DataError(f"{self.stage.directory}: shard {shard} holds {len(records)} samples, index says "
                            f"{self.shard_counts[shard]}")  # fmt: skip
        self._cache[shard] = records
        if len(self._cache) > self._cached_shards:
            self._cache.popitem(last=False)
        return records


def epoch_order_block(
    shard_counts: np.ndarray, seed: int, stage_index: int, epoch: int, block: int, block_size: int
) -> np.ndarray:
    """Global sample indices of one shuffle block of one epoch (see the module docstring)."""
    shard_order = np.random.default_rng([seed, stage_index, epoch]).permutation(len(shard_counts))
    starts = np.concatenate([[0], np.cumsum(shard_counts)])
    ordered_counts = shard_counts[shard_order]
    stream_starts = np.concatenate([[0], np.cumsum(ordered_counts)])
    total = int(stream_starts[-1])
    begin, end = block * block_size, min((block + 1) * block_size, total)
    # Stream positions begin..end mapped back to global indices through the shard each falls in.
    positions = np.arange(begin, end, dtype=np.int64)
    slot = np.searchsorted(stream_starts, positions, side="right") - 1
    indices = starts[shard_order[slot]] + (positions - stream_starts[slot])
    return indices[np.random.default_rng([seed, stage_index, epoch, block + 1]).permutation(len(indices))]


class SampleOrder:
    """The n-th sample of a stage's endless sequence of epochs, block by block."""

    def __init__(self, shard_counts: np.ndarray, seed: int, stage_index: int, block_size: int) -> None:
        self.shard_counts, self.seed, self.stage_index, self.block_size = shard_counts, seed, stage_index, block_size
        self.samples = int(shard_counts.sum())
        self._block_key: tuple[int, int] | None = None
        self._block: np.ndarray | None = None

    def __getitem__(self, n: int) -> int:
        epoch, within = divmod(n, self.samples)
        block, offset = divmod(within, self.block_size)
        if self._block_key != (epoch, block):
            self._block = epoch_order_block(
                self.shard_counts, self.seed, self.stage_index, epoch, block, self.block_size
            )
            self._block_key = (epoch, block)
        return int(self._block[offset])


@dataclass
class DataPosition:
    """Where training is in the curriculum: the stage and how many of its samples all ranks together consumed."""

    stage: int = 0
    consumed: int = 0

    def state_dict(self) -> dict:
        return {"stage": self.stage, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.stage, self.consumed = int(state["stage"]), int(state["consumed"])


@dataclass(frozen=True)
class Batch:
    inputs: np.ndarray  # (micro batches, samples per micro batch, seq_len - 1) int64
    targets: np.ndarray  # same shape; IGNORE_INDEX where the target is padding
    sequence_ids: np.ndarray | None  # same shape, document number of each input token (document masking only)
    stage: str
    tokens: int  # tokens in the global batch (all ranks), padding excluded


class CurriculumLoader:
    """Yields this rank's share of each optimizer step's global batch, split into micro batches.

    A step of stage s takes batch_tokens / seq_len(s) consecutive samples of the stage's order; rank r of w takes the
    r-th w-th of them. Steps per stage = max(1, train_tokens // batch_tokens)."""

    def __init__(
        self,
        curriculum: list[CurriculumStage],
        *,
        batch_tokens: int,
        micro_batch_tokens: int,
        seed: int,
        document_masking: bool,
        shuffle_block: int = 1 << 16,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        for stage in curriculum:
            per_rank = batch_tokens // world_size
            if batch_tokens % (stage.seq_len * world_size) or per_rank % micro_batch_tokens \
                    or micro_batch_tokens % stage.seq_len:  # fmt: skip
                raise DataError(
                    f"stage {stage.name!r} (seq_len {stage.seq_len}): train.batch_tokens {batch_tokens} must be a "
                    f"multiple of seq_len x ranks ({stage.seq_len} x {world_size}), and micro_batch_tokens "
                    f"{micro_batch_tokens} a multiple of seq_len dividing batch_tokens / ranks ({per_rank})"
                )
        self.curriculum = curriculum
        self.batch_tokens, self.micro_batch_tokens = batch_tokens, micro_batch_tokens
        self.seed, self.document_masking, self.shuffle_block = seed, document_masking, shuffle_block
        self.rank, self.world_size = rank, world_size
        self.position = DataPosition()
        self._stage_data: dict[int, tuple[StageSamples, SampleOrder]] = {}

    def steps_per_stage(self) -> list[int]:
        return [max(1, stage.train_tokens // self.batch_tokens) for stage in self.curriculum]

    def total_steps(self) -> int:
        return sum(self.steps_per_stage())

    def stage_at_step(self, step: int) -> int:
        """The stage the 0-based optimizer step `step` trains on."""
        for index, steps in enumerate(self.steps_per_stage()):
            if step < steps:
                return index
            step -= steps
        raise DataError(f"step {step} is past the curriculum's {self.total_steps()} steps")

    def next_batch(self, step: int) -> Batch:
        """The batch of 0-based optimizer step `step` (the position must be at that step: it is after a resume)."""
        stage_index = self.stage_at_step(step)
        if stage_index != self.position.stage:
            self.position = DataPosition(stage=stage_index, consumed=0)
        stage = self.curriculum[stage_index]
        samples, order = self._data(stage_index)
        global_samples = self.batch_tokens // stage.seq_len
        per_rank = global_samples // self.world_size
        first = self.position.consumed + self.rank * per_rank
        rows = np.stack([_padded(samples[order[n]], stage) for n in range(first, first + per_rank)])
        self.position.consumed += global_samples
        inputs, targets = rows[:, :-1].astype(np.int64), rows[:, 1:].astype(np.int64)
        targets[targets == stage.pad_id] = IGNORE_INDEX
        sequence_ids = _document_ids(inputs, stage.eos_id) if self.document_masking else None
        micro = self.micro_batch_tokens // stage.seq_len
        shape = (per_rank // micro, micro, stage.seq_len - 1)
        return Batch(
            inputs=inputs.reshape(shape),
            targets=targets.reshape(shape),
            sequence_ids=None if sequence_ids is None else sequence_ids.reshape(shape),
            stage=stage.name,
            tokens=int((rows != stage.pad_id).sum()) * self.world_size,
        )

    def _data(self, stage_index: int) -> tuple[StageSamples, SampleOrder]:
        if stage_index not in self._stage_data:
            self._stage_data.clear()  # stages are visited in order: the previous one's shards can go
            samples = StageSamples(self.curriculum[stage_index])
            order = SampleOrder(samples.shard_counts, self.seed, stage_index, self.shuffle_block)
            self._stage_data[stage_index] = (samples, order)
        return self._stage_data[stage_index]


def _padded(sample: np.ndarray, stage: CurriculumStage) -> np.ndarray:
    """A sample at the stage's seq_len: `remainder: keep` stages may end with a shorter one."""
    if len(sample) == stage.seq_len:
        return sample
    return np.concatenate([sample, np.full(stage.seq_len - len(sample), stage.pad_id, dtype=sample.dtype)])


def _document_ids(inputs: np.ndarray, eos_id: int) -> np.ndarray:
    """Per token, the number of the document it belongs to within its row; an EOS belongs to the document it ends."""
    is_eos = (inputs == eos_id).astype(np.int64)
    return np.cumsum(is_eos, axis=1) - is_eos
