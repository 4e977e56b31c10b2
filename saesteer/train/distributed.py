"""Data-parallel SAE training (DDP) under ``torchrun`` / ``accelerate launch``: every rank holds the
whole SAE, takes its slice of each global batch, and the ranks all-reduce what one process would
compute over the whole batch, so N ranks give the weights one process gives with the same global
batch (within floating-point summation order).

What is reduced, per step (:class:`~saesteer.train.step.SAETrainer` asks for each):

- the batch's total variance (the FVU denominator; the weighted one of identifiable reweighting) and
  row count: from per-rank sums;
- row means in the losses (Gated, p-annealing, Matryoshka's prefix terms and AuxK, JumpReLU's L0, G-SAE's
  concept loss): each rank's sum over its rows divided by the global row count;
- p-annealing's logged ``S_p`` pairs (the sparsity-weight rescale) and Matryoshka AuxK's residual
  variance: global;
- BatchTopK's batch-wide ``k * N`` selection: the global cut-off value, from every rank's candidates;
- its EMA inference threshold (the smallest kept activation: a global min), the fired-latent mask
  (dead-latent bookkeeping), the first batch (input scale, ``b_dec`` init, reconstruction weights);
- the gradients (a sum), before the decoder-parallel projection, clipping and Adam.

Launch: ``torchrun --nproc_per_node 2 -m saesteer.cli train ...`` (or ``accelerate launch -m
saesteer.cli train ...``). The backend is NCCL when training on CUDA, gloo otherwise. Cost per step: one
all-reduce of the parameters' size plus a few scalars; BatchTopK adds an all-gather of ``k * N`` values.
"""

from __future__ import annotations

import os

import torch


def launched() -> bool:
    """True when this process was started by torchrun / accelerate with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str) -> None:
    """Join the process group torchrun set up (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...): NCCL for
    a CUDA ``device`` (each rank on ``cuda:LOCAL_RANK``), gloo otherwise. No-op outside a launch or
    when a group exists already."""
    import torch.distributed as dist

    if not launched() or dist.is_initialized():
        return
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when no process group is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device(device: str) -> str:
    """``cuda:LOCAL_RANK`` for a bare ``cuda`` device under a launch, else ``device``."""
    if device == "cuda" and launched():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def shard(x: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a global batch ``x [N, d]`` (contiguous slices in rank order; ``N`` must
    divide by the world size)."""
    rank, size = world()
    if size == 1:
        return x
    if x.shape[0] % size:
        raise ValueError(f"the global batch of {x.shape[0]} rows does not split over {size} ranks; "
                         f"choose batch_tokens divisible by the world size")
    n = x.shape[0] // size
    return x[rank * n:(rank + 1) * n]


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over ranks (in place, returned); ``t`` itself in one process."""
    import torch.distributed as dist

    if world()[1] > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_min(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if world()[1] > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated in rank order (equal shapes on all ranks)."""
    import torch.distributed as dist

    size = world()[1]
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def is_main() -> bool:
    """True on the rank that writes files (rank 0; the only one in a single process)."""
    return world()[0] == 0


def barrier() -> None:
    import torch.distributed as dist

    if world()[1] > 1:
        dist.barrier()
