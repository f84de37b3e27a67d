"""EpochShuffle: a fresh order each epoch from (seed, epoch) alone, resumable mid-epoch."""

from abc_lab.data.shuffle import EpochShuffle


def test_each_epoch_is_a_permutation_drawn_from_seed_and_epoch():
    s = EpochShuffle(50, seed=3)
    first, second = list(s), list(s)  # without set_epoch each pass takes the next epoch
    assert sorted(first) == sorted(second) == list(range(50))
    assert first != second
    again = EpochShuffle(50, seed=3)
    again.set_epoch(1)
    assert list(again) == second  # drawn again from (seed, epoch), nothing else
    assert list(EpochShuffle(50, seed=4)) != first


def test_resume_at_continues_the_epoch_where_it_stopped():
    s = EpochShuffle(20, seed=0)
    s.set_epoch(2)
    whole = list(s)
    r = EpochShuffle(20, seed=0)
    r.resume_at(2, 8)
    r.set_epoch(2)  # Lightning sets the same epoch again before iterating
    assert list(r) == whole[8:]
    assert len(r) == 20  # the loader's length stays the epoch's
    assert list(r) == r.order(3)  # the next pass is the next epoch, whole


def test_a_resume_point_of_a_finished_epoch_does_not_cut_the_next_one():
    r = EpochShuffle(10, seed=0)
    r.resume_at(4, 10)  # checkpoint at the end of epoch 4
    r.set_epoch(5)
    assert sorted(r) == list(range(10))
