"""Data-parallel training of one run with ``torch.distributed``, as ``torchrun`` launches it.

``torchrun --nproc_per_node=N -m bbvi_kit run RECIPE`` starts N processes (ranks) with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`from_environment` joins them into one
process group (NCCL on GPUs, each rank on its ``LOCAL_RANK`` GPU; gloo on CPUs). Then every
rank of a run:

- builds the same model from the same seed, and draws the same order of global batches;
- trains on its shard of every batch (``torch.tensor_split`` of the batch's indices, so the
  shards differ in size by at most one example);
- weights its surrogate loss by its share of the batch, n_r / n, so that the sum of the ranks'
  gradients, all-reduced after the backward pass, is the gradient of the global per-example
  mean: the same quantity a single process computes on the whole batch;
- records the squared gradient norms of that global gradient, and the global loss;
- shares the running-mean baseline of the score-function estimator (:func:`global_mean`).

Only rank 0 writes the run directory, evaluates and runs diagnostics (over the whole data, as a
single process does). Each rank draws its own latent noise (seed + rank), so a data-parallel
run is an equally valid run of the same recipe, but not the same random draws as a single
process: only a model with deterministic gradients gives the same trace (as the tests check).
Collective communication is torch.distributed's; bbvi-kit adds none of its own.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
import torch.distributed as dist

if TYPE_CHECKING:  # pragma: no cover
    from bbvi_kit.infer.bbvi import BBVI, StepResult
    from bbvi_kit.train.callback import LoopState

RANK_SEED_STRIDE = 1_000_003
"""Rank r draws its latent noise from seed + r * RANK_SEED_STRIDE (rank 0: the run's seed)."""


@dataclass(frozen=True)
class DataParallel:
    """This process's place in the process group."""

    rank: int
    world: int

    @property
    def writes(self) -> bool:
        """Whether this rank writes the run directory (rank 0)."""
        return self.rank == 0


def current() -> DataParallel | None:
    """The process group this process belongs to, when there is one of more than one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return DataParallel(dist.get_rank(), dist.get_world_size())


def requested() -> bool:
    """Whether this process was started by torchrun (or alike) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def from_environment() -> DataParallel | None:
    """Join the process group torchrun's environment describes (once); ``None`` when this is a
    single process."""
    if not requested():
        return None
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend="nccl")
        else:
            dist.init_process_group(backend="gloo")
    return current()


def shutdown(*, wait: bool = True) -> None:
    """Leave the process group, with ``wait`` once every rank is done (rank 0 evaluates and
    writes last). After a failure, do not wait: the other ranks will not come (torchrun stops
    them once this one exits)."""
    if dist.is_available() and dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()


# -- inside a training step ---------------------------------------------------------------------
_reducing = False


@contextlib.contextmanager
def step_reductions(active: bool) -> Iterator[None]:
    """While the body runs (one training step on every rank), :func:`global_mean` averages
    over all ranks. Outside it (evaluations and diagnostics, which rank 0 runs alone) it does not,
    so that no rank waits for a collective the others never call."""
    global _reducing
    previous, _reducing = _reducing, active and current() is not None
    try:
        yield
    finally:
        _reducing = previous


def global_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over this rank's and, within :func:`step_reductions`, every other
    rank's entries (one all-reduce of their sum and count)."""
    if not _reducing:
        return values.mean()
    total = torch.stack([values.sum(), torch.tensor(float(values.numel()), device=values.device,
                                                    dtype=values.dtype)])
    dist.all_reduce(total)
    return total[0] / total[1]


def all_reduce_sum(tensors: Sequence[torch.Tensor]) -> None:
    """Replace every tensor by its sum over the ranks, in one all-reduce of their concatenation."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def data_parallel_step(bbvi: "BBVI", dataset_size: int, batch_size: int) -> Callable[..., "StepResult"]:
    """The step of data-parallel training, wrapping :meth:`BBVI.step`: this rank's shard of the
    global batch is weighted by its share n_r / n, where n is the global batch's size (the last
    batch of an epoch may be short), and the step sums gradients and loss over the ranks."""

    def step(args: tuple, loop: "LoopState", validate: bool) -> "StepResult":
        global_size = min(batch_size, dataset_size - (loop.batch_index - 1) * batch_size)
        return bbvi.step(*args, epoch=loop.epoch, validate=validate, share=len(args[0]) / global_size)

    return step
