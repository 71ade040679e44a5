"""The embedded digits dataset (scikit-learn's 8x8 digits): real, in unit range, a fixed split."""

from __future__ import annotations

import torch

from bbvi_kit.data import Digits


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
