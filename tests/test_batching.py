"""Length-bucketed batches, collate and the padding share (core/batching.py)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from core.batching import BucketBatchSampler, RandomBatchSampler, collate, padding_share
from core.text import PAD_ID


def _skewed_lengths(n: int = 1000, seed: int = 0) -> list[int]:
    # mostly short texts with a long tail, like product reviews
    rng = np.random.default_rng(seed)
    return [int(x) for x in np.clip(rng.lognormal(3.0, 1.0, n), 1, 1000)]


def _flat(batches) -> list[int]:
    return [int(i) for b in batches for i in b]


def test_every_index_exactly_once_per_epoch():
    lengths = _skewed_lengths(503)
    sampler = BucketBatchSampler(lengths, 16, pool_batches=4, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(_flat(batches)) == list(range(503))
        assert all(1 <= len(b) <= 16 for b in batches)
        assert len(batches) == len(sampler)


def test_order_changes_across_epochs_but_repeats_with_the_same_seed():
    lengths = _skewed_lengths(300)
    a = BucketBatchSampler(lengths, 16, pool_batches=4, seed=5)
    b = BucketBatchSampler(lengths, 16, pool_batches=4, seed=5)
    a.set_epoch(1)
    b.set_epoch(1)
    first = list(a)
    assert first == list(b)
    a.set_epoch(2)
    assert list(a) != first
    other_seed = BucketBatchSampler(lengths, 16, pool_batches=4, seed=6)
    other_seed.set_epoch(1)
    assert list(other_seed) != first


def test_no_shuffle_is_sorted_and_stable():
    lengths = [5, 1, 3, 2, 4]
    sampler = BucketBatchSampler(lengths, 2, shuffle=False)
    assert list(sampler) == [[1, 3], [2, 4], [0]]


@pytest.mark.parametrize("replicas, n", [(2, 301), (3, 301), (3, 10)])
def test_distributed_ranks_cover_each_example_once_with_equal_batch_counts(replicas, n):
    lengths = _skewed_lengths(n, seed=replicas)
    for epoch in range(2):
        per_rank = []
        for rank in range(replicas):
            sampler = BucketBatchSampler(lengths, 8, pool_batches=3, seed=1, num_replicas=replicas, rank=rank)
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
            assert len(per_rank[-1]) == len(sampler)
        counts = Counter(_flat(b for batches in per_rank for b in batches))
        assert sorted(counts) == list(range(n)) and set(counts.values()) == {1}
        assert len({len(batches) for batches in per_rank}) == 1, [len(b) for b in per_rank]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="'batch_size' parameter must be an int >= 1. Got 0"):
        BucketBatchSampler([1, 2], 0)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\)"):
        BucketBatchSampler([1, 2], 1, num_replicas=2, rank=2)


def test_bucketing_cuts_padding_far_below_random_batches():
    lengths = _skewed_lengths(2000)
    bucket = BucketBatchSampler(lengths, 32, seed=0)  # default pools of 100 batches
    random = RandomBatchSampler(lengths, 32, seed=0)
    bucket_share = padding_share(lengths, list(bucket))
    random_share = padding_share(lengths, list(random))
    assert random_share > 0.5  # a skewed distribution wastes most slots when batches are random
    assert bucket_share < random_share / 4
    # smaller pools sort less, so they pad more
    small_pools = padding_share(lengths, list(BucketBatchSampler(lengths, 32, pool_batches=10, seed=0)))
    assert bucket_share < small_pools < random_share


def test_padding_share_by_hand():
    lengths = [2, 4, 3, 3]
    # batch [0, 1]: 8 slots, 6 real; batch [2, 3]: 6 slots, 6 real -> 2 / 14 padded
    assert padding_share(lengths, [[0, 1], [2, 3]]) == pytest.approx(2 / 14)
    assert padding_share(lengths, []) == 0.0


def test_collate_pads_with_pad_id_and_returns_lengths():
    ids, lengths = collate([[5, 6, 7], [8], [9, 10]])
    assert ids.dtype == torch.long and lengths.dtype == torch.long
    assert ids.shape == (3, 3)
    assert lengths.tolist() == [3, 1, 2]
    assert ids.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID], [9, 10, PAD_ID]]
    assert PAD_ID == 0
