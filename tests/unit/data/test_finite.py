"""Non-finite examples in evaluation data (:mod:`bbvi_kit.data.finite`): stop naming the example, or leave it out and count it."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from bbvi_kit.data.finite import FiniteExamples, nonfinite_rows
from bbvi_kit.errors import TrainingError


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
