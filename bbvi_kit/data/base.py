"""What a dataset plugin returns, and how batches are drawn from it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, TensorDataset

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
    """

    name: str
    shape: tuple[int, ...]
    num_train: int
    num_test: int
    num_classes: int | None = None


@dataclass
class DataSplits:
    """A dataset's train and test splits; each item is a tuple of tensors passed to model(*item)."""

    train: Dataset
    test: Dataset
    info: DataInfo


class DatasetPlugin(Configurable):
    """A named dataset: ``load()`` returns its :class:`DataSplits`.

    A missing file or dependency must raise :class:`bbvi_kit.errors.InputError` saying what was
    expected where and how to get it.
    """

    def load(self) -> DataSplits:
        raise NotImplementedError


def batch_loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
) -> DataLoader:
    """Mini-batches of ``dataset`` in a reproducible order.

    In-memory ``TensorDataset``s are sliced a whole batch at a time (one indexing op per batch,
    not one per example); other datasets go through the usual per-example ``DataLoader``. The
    last, smaller batch is kept: the loss is a per-example mean, so it is comparable.
    """
    if isinstance(dataset, TensorDataset):
        order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        sampler = BatchSampler(order, batch_size=batch_size, drop_last=False)
        return DataLoader(dataset, sampler=sampler, batch_size=None)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def as_args(batch: object) -> tuple:
    """A batch as the positional arguments of model and guide."""
    if isinstance(batch, (tuple, list)):
        return tuple(batch)
    return (batch,)
