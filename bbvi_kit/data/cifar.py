"""CIFAR-100, read from torchvision's on-disk copy (``ROOT/cifar-100-python``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from bbvi_kit.data.base import DataInfo, DatasetPlugin, DataSplits
from bbvi_kit.data.images import ImageDatasetOptions, image_tensor_split, one_line, run_download
from bbvi_kit.data.root import data_root, root_hint
from bbvi_kit.errors import InputError
from bbvi_kit.registry import register_dataset

CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"  # what torchvision downloads into the root before extracting


def read_cifar_pickle(path: Path, label_key: bytes = b"fine_labels") -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``uint8 [N, 3, 32, 32]`` and labels ``long [N]`` of one CIFAR python pickle.

    The file is a pickled dict with ``b"data"`` (``uint8 N x 3072``: each row the red, green and
    blue 32x32 planes, row-major) and ``label_key``. Read here rather than through torchvision's
    ``CIFAR100``, which insists on the MD5 of the official files.
    """
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
    except Exception as exc:  # truncated, not a pickle ...
        raise InputError(f"dataset cifar100: cannot read {path}: {type(exc).__name__}: {one_line(exc)}") from exc
    if not isinstance(entry, dict):
        raise InputError(f"dataset cifar100: {path} is not a CIFAR pickle (a {type(entry).__name__}, not a dict)")
    for key in (b"data", label_key):
        if key not in entry:
            raise InputError(f"dataset cifar100: {path} has no {key!r} entry")
    data = np.asarray(entry[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise InputError(
            f"dataset cifar100: {path}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}"
        )
    labels = torch.as_tensor(np.asarray(entry[label_key], dtype=np.int64))
    if labels.shape != (data.shape[0],):
        raise InputError(
            f"dataset cifar100: {path}: {len(labels)} entries in {label_key!r} for {data.shape[0]} images"
        )
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))
    return images, labels


@register_dataset("cifar100")
class CIFAR100(DatasetPlugin):
    """CIFAR-100: 50,000 training and 10,000 test colour images of 32x32 in 100 classes.

    Read from ``ROOT/cifar-100-python/{train,test}``, the pickles torchvision's ``CIFAR100``
    downloads and extracts (``ROOT`` is the data root, see :mod:`bbvi_kit.data.root`). Each
    example is a ``(3, 32, 32)`` float tensor in [0, 1] with no augmentation, followed by its fine
    label (0-99) when ``labels`` is on. Pixels stay ``uint8`` in memory and are converted per
    batch (:class:`bbvi_kit.data.base.ImageTensorDataset`).
    """

    class Options(ImageDatasetOptions):
        labels: bool = Field(False, description="yield (image, fine label) instead of (image,)")

    options: Options

    def load(self) -> DataSplits:
        opts = self.options
        root = data_root(opts.root)
        folder = root / CIFAR100_FOLDER
        files = {split: folder / split for split in ("train", "test")}
        if opts.download and not all(p.is_file() for p in files.values()):

            def fetch() -> None:
                from torchvision.datasets import CIFAR100 as TorchvisionCIFAR100

                TorchvisionCIFAR100(str(root), train=True, download=True)

            run_download("cifar100", root, [root / CIFAR100_FOLDER, root / CIFAR100_ARCHIVE], fetch,
                         root_option=opts.root)
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise InputError(
                f"dataset cifar100: missing {', '.join(missing)}{root_hint(root)}; expected the "
                f"torchvision layout {folder}/{{train,test}}: set download: true, or extract "
                f"{CIFAR100_URL} into {root}"
            )
        train_x, train_y = read_cifar_pickle(files["train"])
        test_x, test_y = read_cifar_pickle(files["test"])
        keep_labels = opts.labels
        train = image_tensor_split(train_x, train_y if keep_labels else None, opts.max_train)
        test = image_tensor_split(test_x, test_y if keep_labels else None, opts.max_test)
        info = DataInfo(
            name="cifar100",
            shape=(3, 32, 32),
            num_train=len(train),
            num_test=len(test),
            num_classes=100 if keep_labels else None,
            files=str(files["train"].parent.resolve()),
        )
        return DataSplits(train=train, test=test, info=info)
