"""The 8x8 handwritten digits that ship inside scikit-learn: a real dataset with no download."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import TensorDataset

from bbvi_kit.data.base import DataInfo, DatasetPlugin, DataSplits
from bbvi_kit.errors import InputError
from bbvi_kit.plugin import PluginOptions
from bbvi_kit.registry import register_dataset


DIGITS_FILE = ("datasets", "data", "digits.csv.gz")
"""scikit-learn's bundled file, relative to its package folder: one row per image, 64 pixel values
(0..16, row by row) and the digit, comma-separated."""


def digits_file() -> Path:
    """Where scikit-learn keeps the digits, found without importing scikit-learn (its import is
    about 1.2 s of a fresh ``bbvi-kit run``, more than the rest of the data loading together)."""
    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise InputError("dataset digits needs scikit-learn, which is not installed: pip install scikit-learn")
    path = Path(folders[0]).joinpath(*DIGITS_FILE)
    if not path.is_file():
        raise InputError(f"dataset digits: scikit-learn has no digits file at {path}; reinstall scikit-learn")
    return path


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 images as ``(1797, 8, 8)`` grey levels 0..16 and their digits: what
    ``sklearn.datasets.load_digits()`` returns as ``images`` and ``target`` (a test checks that)."""
    with gzip.open(digits_file(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


@register_dataset("digits")
class Digits(DatasetPlugin):
    """1,797 grey 8x8 images of digits 0-9 (UCI optical recognition set, as bundled by scikit-learn).

    Pixels are scaled from 0..16 to [0, 1]; each example is a ``(1, 8, 8)`` float tensor, followed
    by its integer label when ``labels`` is on. The train/test split is a fixed random permutation
    drawn with ``split_seed``, independent of the training seed.
    """

    class Options(PluginOptions):
        test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of examples held out")
        split_seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the train/test permutation")
        labels: bool = Field(False, description="yield (image, label) instead of (image,)")

    options: Options

    def load(self) -> DataSplits:
        pixels, digits = read_digits()
        images = torch.as_tensor(pixels, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.as_tensor(digits, dtype=torch.long)
        generator = torch.Generator().manual_seed(self.options.split_seed)
        order = torch.randperm(len(images), generator=generator)
        num_test = int(round(len(images) * self.options.test_fraction))
        test_idx, train_idx = order[:num_test], order[num_test:]

        def split(idx: torch.Tensor) -> TensorDataset:
            tensors = (images[idx], labels[idx]) if self.options.labels else (images[idx],)
            return TensorDataset(*tensors)

        info = DataInfo(
            name="digits",
            shape=(1, 8, 8),
            num_train=len(train_idx),
            num_test=len(test_idx),
            num_classes=10 if self.options.labels else None,
        )
        return DataSplits(train=split(train_idx), test=split(test_idx), info=info)
