"""The embedded digits dataset (scikit-learn's 8x8 digits): real, in unit range, a fixed split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bbvi_kit.data import Digits
from bbvi_kit.data.digits import read_digits
from bbvi_kit.errors import InputError


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


def test_the_file_read_is_what_scikit_learn_loads() -> None:
    """bbvi-kit reads scikit-learn's bundled file without importing scikit-learn; it must give
    exactly ``load_digits()``."""
    from sklearn.datasets import load_digits

    pixels, digits = read_digits()
    bunch = load_digits()
    assert np.array_equal(pixels, bunch.images) and np.array_equal(digits, bunch.target)
    assert pixels.shape == (1797, 8, 8)


def test_without_the_file_the_error_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.machinery
    import importlib.util

    from bbvi_kit.data import digits as module

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=r"^dataset digits needs scikit-learn, which is not installed: pip install"):
        Digits().load()
    spec = importlib.machinery.ModuleSpec("sklearn", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(InputError, match=rf"no digits file at {tmp_path}"):
        module.digits_file()
