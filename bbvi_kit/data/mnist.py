"""MNIST and Fashion-MNIST through torchvision, from its on-disk copy (``ROOT/<NAME>/raw``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from pydantic import Field

from bbvi_kit.data.base import DataInfo, DatasetPlugin, DataSplits
from bbvi_kit.data.images import ImageDatasetOptions, describe_exception, image_tensor_split, run_download
from bbvi_kit.data.root import data_root, root_hint
from bbvi_kit.errors import InputError
from bbvi_kit.registry import register_dataset

#: The uncompressed idx files torchvision's ``MNIST`` reads (it downloads ``<file>.gz`` and
#: extracts them next to the archives).
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class _TorchvisionIdxDataset(DatasetPlugin):
    """A torchvision MNIST-format dataset: 60,000 training and 10,000 test grey 28x28 images.

    torchvision's reader checks only that the four idx files exist (no checksum), so the files are
    read through it. Each example is a ``(1, 28, 28)`` float tensor in [0, 1], followed by its
    label (0-9) when ``labels`` is on. Pixels stay ``uint8`` in memory and are converted per batch.
    """

    dataset_name: ClassVar[str]  # the registered name, for messages and DataInfo
    folder: ClassVar[str]  # torchvision's class name, which is its folder under the root
    source_url: ClassVar[str]

    class Options(ImageDatasetOptions):
        labels: bool = Field(False, description="yield (image, label) instead of (image,)")

    options: Options

    def _torchvision_class(self) -> type:
        import torchvision.datasets

        return getattr(torchvision.datasets, self.folder)

    def load(self) -> DataSplits:
        opts = self.options
        root = data_root(opts.root)
        raw = root / self.folder / "raw"
        if opts.download and not self._present(root):
            tv_class = self._torchvision_class()
            run_download(self.dataset_name, root, [root / self.folder],
                         lambda: tv_class(str(root), train=True, download=True), root_option=opts.root)
        if not self._present(root):
            missing = [name for name in IDX_FILES if not (raw / name).is_file()]
            packed = [name for name in missing if (raw / f"{name}.gz").is_file()]
            hint = f"; {', '.join(f'{n}.gz' for n in packed)} found: decompress with gunzip" if packed else ""
            raise InputError(
                f"dataset {self.dataset_name}: missing {', '.join(missing)} in {raw}{root_hint(root)}{hint}; "
                f"expected torchvision's layout, the four uncompressed idx files in that folder: set "
                f"download: true, or download the .gz files from {self.source_url} into it and gunzip them"
            )
        tv_class = self._torchvision_class()
        splits = []
        for train, limit in ((True, opts.max_train), (False, opts.max_test)):
            try:
                ds = tv_class(str(root), train=train, download=False)
            except Exception as exc:  # a truncated or foreign idx file fails torchvision's asserts
                raise InputError(
                    f"dataset {self.dataset_name}: cannot read the idx files in {raw}: {describe_exception(exc)}"
                ) from exc
            images = torch.as_tensor(ds.data)
            if images.dtype != torch.uint8 or images.dim() != 3:
                raise InputError(
                    f"dataset {self.dataset_name}: the images in {raw} must be uint8 [N, H, W], "
                    f"got {images.dtype} {tuple(images.shape)}"
                )
            labels = torch.as_tensor(ds.targets, dtype=torch.long)
            splits.append(image_tensor_split(images.unsqueeze(1), labels if opts.labels else None, limit))
        train_set, test_set = splits
        info = DataInfo(
            name=self.dataset_name,
            shape=tuple(train_set.tensors[0].shape[1:]),
            num_train=len(train_set),
            num_test=len(test_set),
            num_classes=10 if opts.labels else None,
            files=str(raw.resolve()),
        )
        return DataSplits(train=train_set, test=test_set, info=info)

    def _present(self, root: Path) -> bool:
        """Whether torchvision will find the data: the four raw idx files, or its legacy .pt cache."""
        raw = root / self.folder / "raw"
        processed = root / self.folder / "processed"
        if all((raw / name).is_file() for name in IDX_FILES):
            return True
        return all((processed / name).is_file() for name in ("training.pt", "test.pt"))


@register_dataset("mnist")
class MNIST(_TorchvisionIdxDataset):
    """MNIST handwritten digits (LeCun et al. 1998): grey 28x28 images of 0-9, [0, 1] floats.

    Files: ``ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, as torchvision's
    ``MNIST`` downloads them (``ROOT`` is the data root, see :mod:`bbvi_kit.data.root`).
    """

    dataset_name = "mnist"
    folder = "MNIST"
    source_url = "https://ossci-datasets.s3.amazonaws.com/mnist/"


@register_dataset("fashion_mnist")
class FashionMNIST(_TorchvisionIdxDataset):
    """Fashion-MNIST (Xiao et al. 2017): grey 28x28 images of 10 kinds of clothing, [0, 1] floats.

    Files: ``ROOT/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, as torchvision's
    ``FashionMNIST`` downloads them (``ROOT`` is the data root, see :mod:`bbvi_kit.data.root`).
    """

    dataset_name = "fashion_mnist"
    folder = "FashionMNIST"
    source_url = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
