"""The embedded digits dataset and mini-batching."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from bbvi_kit.data import Digits, as_args, batch_loader
from bbvi_kit.data.finite import FiniteExamples, nonfinite_rows
from bbvi_kit.errors import TrainingError


def test_digits_is_the_real_dataset_in_unit_range() -> None:
    splits = Digits().load()
    (train,) = splits.train.tensors
    (test,) = splits.test.tensors
    assert len(train) + len(test) == 1797
    assert len(test) == round(1797 * 0.2)
    assert train.shape[1:] == (1, 8, 8) and splits.info.shape == (1, 8, 8)
    assert train.min() == 0.0 and train.max() == 1.0
    assert (splits.info.num_train, splits.info.num_test) == (len(train), len(test))
    # Pixel values are the dataset's 17 grey levels, scaled.
    assert torch.allclose(train * 16, (train * 16).round())


def test_split_is_fixed_by_split_seed_and_disjoint() -> None:
    a, b = Digits().load(), Digits().load()
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    c = Digits(split_seed=1).load()
    assert not torch.equal(a.test.tensors[0], c.test.tensors[0])
    train = {tuple(x.flatten().tolist()) for x in a.train.tensors[0]}
    test = {tuple(x.flatten().tolist()) for x in a.test.tensors[0]}
    assert len(train & test) < 20  # the set has a few exact duplicate images, not shared rows


def test_labels_option() -> None:
    splits = Digits(labels=True).load()
    x, y = splits.train.tensors
    assert y.dtype == torch.long and set(y.tolist()) == set(range(10))
    assert splits.info.num_classes == 10


def test_batch_loader_covers_every_example_once_per_epoch_reproducibly() -> None:
    data = TensorDataset(torch.arange(10).float().unsqueeze(1), torch.arange(10))
    loader = batch_loader(data, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = [as_args(b) for b in loader]
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert torch.equal(torch.cat([b[0] for b in batches]).squeeze(1).long(), seen)  # rows stay paired
    again = [as_args(b)[1] for b in batch_loader(data, 4, shuffle=True, generator=torch.Generator().manual_seed(0))]
    assert torch.equal(torch.cat(again), seen)
    ordered = torch.cat([as_args(b)[1] for b in batch_loader(data, 4, shuffle=False)])
    assert ordered.tolist() == list(range(10))


# -- non-finite examples in evaluation data ------------------------------------------------------
def _batches_with_nan(n: int, bad: list[int], size: int) -> list[tuple]:
    x = torch.arange(n * 2, dtype=torch.float32).reshape(n, 2)
    x[bad, 1] = float("nan")
    labels = torch.arange(n)
    return [(x[i:i + size], labels[i:i + size]) for i in range(0, n, size)]


def test_finite_examples_stops_naming_the_first_bad_example_in_split_order() -> None:
    with pytest.raises(TrainingError, match=r"^the test split holds a non-finite value at example 7 "):
        list(FiniteExamples("test", skip=False)(_batches_with_nan(20, [7, 12], 4)))


def test_finite_examples_leaves_bad_examples_out_and_counts_them() -> None:
    finite = FiniteExamples("train", skip=True)
    kept = list(finite(_batches_with_nan(20, [4, 5, 6, 7, 12], 4)))
    assert finite.left_out == 5
    assert torch.cat([labels for _, labels in kept]).tolist() == [i for i in range(20) if i not in (4, 5, 6, 7, 12)]
    assert len(kept) == 4  # the batch of examples 4-7 had nothing left and is not yielded


def test_finite_examples_of_a_shuffled_batch_names_the_example_by_its_index_in_the_split() -> None:
    x = torch.zeros(10, 3)
    x[6, 2] = float("inf")
    split = TensorDataset(x)
    shuffled = [(x[[6, 1, 3]],)]  # the bad example is row 0 of the shuffled batch
    with pytest.raises(TrainingError, match="at example 6 "):
        list(FiniteExamples("train", skip=False, shuffled_from=split)(shuffled))


def test_integer_only_batches_are_not_inspected() -> None:
    assert nonfinite_rows((torch.arange(5),)) is None
