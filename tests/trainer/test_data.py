"""The curriculum loader: deterministic block-shuffled order, exact resumption, stage switching, masks and padding."""

import numpy as np
import pytest

from pipelines.mds.mixes import load_mix
from trainer.config import IGNORE_INDEX
from trainer.data import CurriculumLoader, DataError, SampleOrder, load_curriculum


@pytest.fixture
def make_loader(tmp_path, write_curriculum):
    """`make_loader(world_size=1, rank=0, **changes)`: a loader for `rank` over the toy curriculum in `tmp_path`,
    128-token batches with document masking unless `changes` says otherwise."""

    def build(world_size=1, rank=0, **changes):
        mix = load_mix(write_curriculum(str(tmp_path)))
        settings = {"batch_tokens": 128, "micro_batch_tokens": 128 // world_size, "seed": 3, "document_masking": True,
                    "shuffle_block": 40, "rank": rank, "world_size": world_size, **changes}  # fmt: skip
        return CurriculumLoader(load_curriculum(mix, str(tmp_path / "mds")), **settings)

    return build


def test_each_epoch_is_a_permutation_and_epochs_differ():
    counts = np.array([7, 13, 5, 20, 1])
    order = SampleOrder(counts, seed=1, stage_index=0, block_size=8)
    first = [order[n] for n in range(46)]
    second = [order[n] for n in range(46, 92)]
    assert sorted(first) == list(range(46)) and sorted(second) == list(range(46))
    assert first != second
    assert first == [SampleOrder(counts, seed=1, stage_index=0, block_size=8)[n] for n in range(46)]
    assert first != [SampleOrder(counts, seed=2, stage_index=0, block_size=8)[n] for n in range(46)]


def test_steps_follow_the_curriculum_by_token_budget(make_loader):
    data = make_loader()
    # warm: 96 x 32 tokens = 24 steps of 128; hot: 24 x 64 tokens = 12 steps
    assert data.steps_per_stage() == [24, 12]
    stages = [data.next_batch(step).stage for step in range(36)]
    assert stages == ["warm"] * 24 + ["hot"] * 12
    with pytest.raises(DataError, match="past the curriculum"):
        data.next_batch(36)


def test_a_larger_budget_repeats_the_stage_in_fresh_orders(tmp_path, write_curriculum):
    mix = load_mix(write_curriculum(str(tmp_path)))
    curriculum = load_curriculum(mix, str(tmp_path / "mds"), {"warm": 96 * 32 * 2})
    data = CurriculumLoader(curriculum, batch_tokens=128, micro_batch_tokens=128, seed=0, document_masking=False)
    assert data.steps_per_stage() == [48, 12]
    rows = [tuple(row) for step in range(48) for row in data.next_batch(step).inputs.reshape(-1, 31)]
    assert len(set(rows[:96])) == 96 and set(rows[:96]) == set(rows[96:]) and rows[:96] != rows[96:]


def test_resuming_from_a_saved_position_continues_with_the_same_batches(make_loader):
    straight = make_loader()
    batches = [straight.next_batch(step) for step in range(30)]
    interrupted = make_loader()
    for step in range(20):
        interrupted.next_batch(step)
    saved = interrupted.position.state_dict()
    resumed = make_loader()
    resumed.position.load_state_dict(saved)
    for step in range(20, 30):
        batch = resumed.next_batch(step)
        assert np.array_equal(batch.inputs, batches[step].inputs) and batch.stage == batches[step].stage


def test_ranks_split_each_global_batch_and_together_see_what_one_process_sees(make_loader):
    single = make_loader()
    ranks = [make_loader(world_size=2, rank=r) for r in range(2)]
    for step in range(30):
        whole = single.next_batch(step).inputs.reshape(-1)
        joined = np.concatenate([r.next_batch(step).inputs.reshape(-1) for r in ranks])
        assert np.array_equal(joined, whole)


def test_micro_batches_split_the_rank_share(make_loader):
    batch = make_loader(micro_batch_tokens=64).next_batch(0)
    assert batch.inputs.shape == (2, 2, 31) and batch.tokens == 128


def test_targets_are_the_next_tokens_and_document_ids_follow_eos(make_loader, toy):
    batch = make_loader().next_batch(0)
    inputs, targets, ids = batch.inputs.reshape(-1, 31), batch.targets.reshape(-1, 31), batch.sequence_ids
    assert np.array_equal(inputs[:, 1:], targets[:, :-1])
    ids = ids.reshape(-1, 31)
    for row, row_ids in zip(inputs, ids, strict=True):
        # the id rises right after each EOS, and an EOS belongs to the document it closes
        expected = np.concatenate([[0], np.cumsum(row[:-1] == toy.eos)])
        assert np.array_equal(row_ids, expected)


def test_a_short_last_sample_is_padded_and_its_padding_is_not_learned(tmp_path, write_curriculum, toy):
    mix = load_mix(write_curriculum(str(tmp_path), stages=(("only", 32, 4),), short_last=True))
    data = CurriculumLoader(load_curriculum(mix, str(tmp_path / "mds")), batch_tokens=128, micro_batch_tokens=128,
                            seed=0, document_masking=False)  # fmt: skip
    batch = data.next_batch(0)
    padded = [row for row in batch.inputs.reshape(-1, 31) if (row == toy.pad).any()]
    assert len(padded) == 1 and batch.tokens == 3 * 32 + 16
    assert (batch.targets == IGNORE_INDEX).sum() == 16


def test_batches_that_do_not_fit_the_stage_are_refused(make_loader):
    with pytest.raises(DataError, match="stage 'hot'.*batch_tokens 96"):
        make_loader(batch_tokens=96, micro_batch_tokens=96)
    with pytest.raises(DataError, match="micro_batch_tokens 48"):
        make_loader(micro_batch_tokens=48)


def test_a_stage_that_was_not_written_is_a_clear_error(tmp_path, write_curriculum):
    mix = load_mix(write_curriculum(str(tmp_path)))
    with pytest.raises(DataError, match="run `dataprep mds`"):
        load_curriculum(mix, str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="not in mix"):
        load_curriculum(mix, str(tmp_path / "mds"), {"cold": 10})
