"""What a dataset plugin returns, and how batches are drawn from it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol, Sized, cast

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from bbvi_kit.errors import BBVIError
from bbvi_kit.plugin import Configurable


@dataclass(frozen=True)
class DataInfo:
    """What a model plugin needs to know of its data.

    Attributes:
        name: the dataset plugin's name.
        shape: the shape of one example's first tensor, e.g. ``(1, 8, 8)`` for an image.
        num_train: number of training examples (the full size of a subsampled data plate).
        num_test: number of test examples.
        num_classes: number of label classes when the dataset yields labels, else ``None``.
        files: where the data was read from (a file-based dataset's folder), recorded in each
            run's ``run.json`` since the data root may come from the environment.
    """

    name: str
    shape: tuple[int, ...]
    num_train: int
    num_test: int
    num_classes: int | None = None
    files: str | None = None


@dataclass
class DataSplits:
    """A dataset's train and test splits; each item is a tuple of tensors passed to model(*item).

    ``truth`` holds the true parameters of a synthetic dataset (e.g. ``synthetic_ppca``'s W, mu
    and sigma), empty for real data.
    """

    train: Dataset
    test: Dataset
    info: DataInfo
    truth: dict[str, torch.Tensor] = field(default_factory=dict)


class ImageTensorDataset(TensorDataset):
    """An in-memory dataset whose first tensor holds 8-bit images, served as float32 in [0, 1].

    ``tensors[0]`` stays ``uint8`` (a quarter of the memory of float32: 50,000 CIFAR images take
    150 MB, not 600 MB); indexing converts only what it returns. ``dataset[i]`` and
    ``dataset[indices]`` (a list or tensor of indices, what :func:`batch_loader`'s whole-batch
    path asks for) give the images as ``float32 / 255`` and every other tensor (labels) as it is.
    """

    def __init__(self, images: torch.Tensor, *tensors: torch.Tensor) -> None:
        if images.dtype != torch.uint8:
            raise TypeError(f"ImageTensorDataset: images must be torch.uint8, got {images.dtype}")
        super().__init__(images, *tensors)

    def __getitem__(self, index):  # noqa: ANN001 - an int, a slice, a list or a tensor of indices
        images, *rest = (tensor[index] for tensor in self.tensors)
        return (images.to(torch.float32).div_(255.0), *rest)


class DatasetPlugin(Configurable):
    """A named dataset: ``load()`` returns its :class:`DataSplits`.

    A missing file or dependency must raise :class:`bbvi_kit.errors.InputError` saying what was
    expected where and how to get it.
    """

    def load(self) -> DataSplits:
        raise NotImplementedError


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class SizedBatches(Protocol):
    """What :func:`batch_loader` returns: an iterable of batches with ``len``."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...


def batch_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    shard: tuple[int, int] | None = None,
) -> SizedBatches:
    """Mini-batches of ``dataset`` in a reproducible order (an iterable with ``len``).

    Each epoch draws one permutation from ``generator`` (``shuffle``) or keeps the order, and cuts
    it into batches of ``batch_size``; the last, smaller batch is kept (the loss is a per-example
    mean, so it is comparable). In-memory ``TensorDataset``s are sliced a whole batch at a time,
    with one indexing operation per tensor and no ``DataLoader`` in between; other datasets (e.g.
    images decoded from files) go through a per-example ``DataLoader`` with ``num_workers`` worker
    processes (at most one per available CPU). The order is drawn in the main process either way,
    so neither the dataset's type nor the workers change a run. ``pin_memory`` puts each batch in
    page-locked memory, so that copying it to a GPU (``non_blocking``) does not wait for the GPU.
    ``shard=(rank, world)`` yields only this rank's part of every batch (data-parallel training,
    :mod:`bbvi_kit.distributed`); only those examples are loaded.
    """
    num_workers = min(num_workers, available_cpus())
    per_example = not isinstance(dataset, TensorDataset)
    batches = EpochBatches(len(cast(Sized, dataset)), batch_size, generator=generator if shuffle else None,
                           as_lists=per_example, shard=shard)
    if isinstance(dataset, TensorDataset):
        return TensorBatches(dataset, batches, pin_memory=pin_memory)
    # DataLoader draws a seed for its workers from this generator at every epoch; without it, it
    # would draw from the global RNG, which the model's samples come from.
    worker_seeds = torch.Generator().manual_seed(0)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=pin_memory,
                        persistent_workers=num_workers > 0, generator=worker_seeds)
    return _WorkerErrorsKeptShort(loader) if num_workers > 0 else loader


class EpochBatches(Sampler[Any]):
    """The index batches of one epoch at a time: a permutation of ``range(n)`` drawn from
    ``generator`` (``None``: in order), cut into batches of ``batch_size`` (and, with
    ``shard=(rank, world)``, each batch into ``world`` parts of which this rank's is yielded).

    The next epoch can start after its first ``k`` batches (:meth:`skip_next_epoch`, a resumed
    run): the permutation is still drawn, so the order and the generator's state afterwards are
    those of a full epoch, but the skipped examples are never loaded. Batches are index tensors,
    or lists of ints (``as_lists``) for a per-example ``DataLoader``.
    """

    def __init__(self, n: int, batch_size: int, *, generator: torch.Generator | None, as_lists: bool,
                 shard: tuple[int, int] | None = None) -> None:
        self.n, self.batch_size, self.generator, self.as_lists = n, batch_size, generator, as_lists
        self.shard = shard
        self._skip = 0

    def skip_next_epoch(self, count: int) -> None:
        self._skip = count

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        skip, self._skip = self._skip, 0
        if self.generator is not None:
            order = torch.randperm(self.n, generator=self.generator)
        else:
            order = torch.arange(self.n)
        for start in range(skip * self.batch_size, self.n, self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.shard is not None:
                rank, world = self.shard
                batch = torch.tensor_split(batch, world)[rank]
            yield batch.tolist() if self.as_lists else batch


class TensorBatches:
    """Batches of an in-memory ``TensorDataset``: ``dataset[index_tensor]`` per batch."""

    def __init__(self, dataset: TensorDataset, batches: EpochBatches, *, pin_memory: bool = False) -> None:
        self.dataset, self.batches, self.pin_memory = dataset, batches, pin_memory

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        for index in self.batches:
            batch = self.dataset[index]
            yield tuple(t.pin_memory() for t in batch) if self.pin_memory else batch


def skip_next_epoch(loader: Iterable[Any], count: int) -> None:
    """Make the next epoch of a :func:`batch_loader` loader begin with its batch ``count``
    (0-based), in the order a full epoch would have: how a run resumes mid-epoch."""
    inner = loader.loader if isinstance(loader, _WorkerErrorsKeptShort) else loader
    batches = inner.batches if isinstance(inner, TensorBatches) else getattr(inner, "batch_sampler", None)
    if not isinstance(batches, EpochBatches):
        raise TypeError("skip_next_epoch needs a loader made by batch_loader")
    batches.skip_next_epoch(count)


def _original_message(exc: BaseException) -> str:
    """The message a worker process raised, without the traceback torch wraps it in."""
    text = str(exc)
    if "DataLoader worker process" not in text:
        return text
    last = text.strip().splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


class _WorkerErrorsKeptShort:
    """A ``DataLoader`` with workers whose bbvi-kit errors (e.g. an unreadable image) keep their
    one-line message: torch re-raises a worker's exception with the worker's traceback in it."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.loader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except BBVIError as exc:
                raise type(exc)(_original_message(exc)) from None
            yield batch


def as_args(batch: object) -> tuple:
    """A batch as the positional arguments of model and guide."""
    if isinstance(batch, (tuple, list)):
        return tuple(batch)
    return (batch,)
