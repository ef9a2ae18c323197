"""Length-bucketed batches, collate to ``(ids, lengths)``, and the padding-share figure.

The bucket sampler shuffles the examples, sorts them by length inside pools of ``pool_batches``
batches, cuts each pool into batches of near-equal lengths and shuffles the batch order. It is
reseeded every epoch (``set_epoch``) and, given ``num_replicas``/``rank``, hands each distributed
rank its own batches so that every example is seen exactly once per epoch across ranks.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from core.text import PAD_ID


class BucketBatchSampler(Sampler[list[int]]):
    def __init__(self, lengths: Sequence[int], batch_size: int, *, pool_batches: int = 100,
                 shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        if batch_size < 1:
            raise ValueError(f"The 'batch_size' parameter must be an int >= 1. Got {batch_size} instead.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}); got {rank}.")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.pool_batches = max(1, pool_batches)
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def all_batches(self) -> list[np.ndarray]:
        """Every rank's batches for the current epoch (the same on every rank)."""
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        pool = self.batch_size * self.pool_batches
        batches = []
        for start in range(0, n, pool):
            chunk = order[start:start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        # every rank must take the same number of steps: split the largest batches until the count
        # divides evenly, so no example is dropped or repeated
        while len(batches) % self.num_replicas and any(len(b) > 1 for b in batches):
            largest = max(range(len(batches)), key=lambda i: len(batches[i]))
            big = batches.pop(largest)
            batches[largest:largest] = [big[:len(big) // 2], big[len(big) // 2:]]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.all_batches()[self.rank::self.num_replicas]:
            yield batch.tolist()

    def __len__(self) -> int:
        return len(self.all_batches()[self.rank::self.num_replicas])


class RandomBatchSampler(BucketBatchSampler):
    """Plain shuffled batches (no bucketing): the baseline the bucket sampler is measured against."""

    def all_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return batches[:len(batches) - len(batches) % self.num_replicas] if self.num_replicas > 1 else batches


def collate(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists into ``ids`` (B, T) with ``<pad>`` = 0, plus ``lengths`` (B,) on the CPU."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    ids = torch.full((len(sequences), int(lengths.max()) if len(sequences) else 0), PAD_ID, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return ids, lengths


def padding_share(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded slots over all slots when ``batches`` are padded to their longest member."""
    lengths = np.asarray(lengths)
    slots = real = 0
    for batch in batches:
        batch_lengths = lengths[np.asarray(batch)]
        slots += int(batch_lengths.max()) * len(batch_lengths)
        real += int(batch_lengths.sum())
    return 1.0 - real / slots if slots else 0.0
