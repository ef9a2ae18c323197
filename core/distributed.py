"""Data-parallel training across processes with ``torchrun`` (DistributedDataParallel).

One process per CPU socket or GPU; each trains on its own share of the batches and DDP averages the
gradients, so every rank holds the same weights after every step::

    # one machine, two processes (CPU: gloo backend; CUDA: nccl, one GPU per process)
    torchrun --nproc_per_node=2 -m core train --train reviews.csv --epochs 5

    # two machines, run the same command on each (node_rank 0 and 1); HOST is the first machine
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=4 --master_addr=HOST --master_port=29500 \
        -m core train --train reviews.csv --out /shared/runs

Nothing beyond torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) is needed; ``--rdzv-backend=c10d --rdzv-endpoint=HOST:PORT`` works the same way.
On several machines ``--out`` (and, with ``--stream``, the run folder) must be on a file system
that every machine sees, because rank 0 alone writes the run directory.

What the ranks agree on, and how:

- the run id and the vocabulary are made on rank 0 and broadcast as JSON (never pickled);
- the training batches come from ``BucketBatchSampler(num_replicas, rank)``: every example once per
  epoch across ranks, the same number of steps on every rank;
- train loss / accuracy / tokens are summed over ranks (``reduce_train``);
- validation: every rank scores the full validation set with identical weights, and the score that
  drives best-epoch, learning-rate and early-stopping decisions is rank 0's, broadcast, so every
  rank makes the same decisions and stops at the same epoch;
- cancelling: a stop event set on any rank stops every rank before the same batch (``any``), so no
  rank is left waiting in a gradient all-reduce; a non-finite loss on any rank ends every rank as
  ``diverged`` at the same step. A rank that crashes ends its process, and torchrun then stops the
  others. Out-of-memory batch halving is single-process only: under DDP an OOM is an error.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import torch
import torch.distributed as dist

from core.text import TextConfig, TextEncoder, Vocabulary


class Distributed:
    """This process's place in a started process group, plus the few collective calls training needs."""

    def __init__(self, rank: int, world_size: int, local_rank: int, device: torch.device):
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.device = device  # where this rank trains, and where collective tensors live (nccl needs CUDA)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around ``model`` (already on ``self.device``, parameters frozen or not)."""
        from torch.nn.parallel import DistributedDataParallel

        if self.device.type == "cuda":
            return DistributedDataParallel(model, device_ids=[self.device.index], output_device=self.device.index)
        return DistributedDataParallel(model)

    # ---- collectives (every rank must call them in the same order)
    def broadcast(self, value=None):
        """Rank 0's ``value`` on every rank. JSON-able values only: sent as UTF-8 JSON bytes, never pickled."""
        if self.world_size == 1:
            return json.loads(json.dumps(value))
        if self.rank == 0:
            payload = torch.frombuffer(bytearray(json.dumps(value).encode("utf-8")), dtype=torch.uint8)
            size = torch.tensor([payload.numel()], dtype=torch.int64, device=self.device)
        else:
            size = torch.zeros(1, dtype=torch.int64, device=self.device)
        dist.broadcast(size, src=0)
        buffer = payload.to(self.device) if self.rank == 0 else \
            torch.empty(int(size.item()), dtype=torch.uint8, device=self.device)
        dist.broadcast(buffer, src=0)
        return json.loads(bytes(buffer.cpu().numpy()).decode("utf-8"))

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        if self.world_size == 1:
            return bool(flag)
        value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().tolist()

    def reduce_train(self, loss_sum: float, correct: int, seen: int, tokens: int) -> tuple[float, float, int]:
        """(mean train loss, train accuracy, tokens) over every rank's share of the epoch."""
        loss_sum, correct, seen, tokens = self.sum([loss_sum, correct, seen, tokens])
        return loss_sum / max(seen, 1), correct / max(seen, 1), int(tokens)

    def shared_encoder(self, build: Callable[[], TextEncoder], config: TextConfig) -> TextEncoder:
        """Fit the vocabulary once, on rank 0, and give every rank the same one."""
        encoder = build() if self.rank == 0 else None
        itos = self.broadcast(encoder.vocab.itos if encoder is not None else None)
        return encoder if encoder is not None else TextEncoder(config, Vocabulary(itos))

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier(device_ids=[self.device.index]) if self.device.type == "cuda" else dist.barrier()

    def close(self) -> None:
        """Leave together: a rank that tears down gloo while rank 0 still publishes the run aborts."""
        if dist.is_initialized():
            try:
                dist.barrier()
            finally:
                dist.destroy_process_group()

    def __repr__(self) -> str:
        return f"Distributed(rank={self.rank}, world_size={self.world_size}, device={self.device})"


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ValueError(f"Environment variable {name} is not set: start distributed training with "
                         f"torchrun --nproc_per_node=N -m core train ...")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"Environment variable {name} must be an integer. Got {value!r} instead.") from None


def from_environment(device: str = "auto") -> Distributed:
    """Join the process group torchrun describes: gloo on CPU, nccl on CUDA (GPU ``LOCAL_RANK``)."""
    if not dist.is_available():
        raise ValueError("This PyTorch build has no torch.distributed; train without torchrun.")
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"The 'device' parameter must be one of auto, cpu, cuda. Got {device!r} instead.")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ValueError("The 'device' parameter is 'cuda' but no CUDA GPU is available. Use --device cpu or auto.")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank} has no GPU: this machine has {torch.cuda.device_count()}. "
                             f"Start at most that many processes per node (--nproc_per_node).")
        torch.cuda.set_device(local_rank)  # so that torch.device("cuda") in training means this rank's GPU
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                                rank=rank, world_size=world_size)
    return Distributed(rank, world_size, local_rank, target)
