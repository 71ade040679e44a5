"""Tiny image datasets written in the real on-disk formats, for tests that must not download.

Each ``make_*`` writes under a data root (usually ``tmp_path``) exactly the files, names and
formats the real dataset has there, with known pixel content, and returns the root to pass as
the plugin's ``root`` option (or as ``BBVI_KIT_DATA``):

* :func:`make_celeba`: 178x218 RGB JPEGs and the official partition file, in torchvision's
  layout (``celeba/img_align_celeba/*.jpg``, ``celeba/list_eval_partition.txt``) or the Kaggle
  mirror's (``img_align_celeba/img_align_celeba/*.jpg``, ``list_eval_partition.csv``);
* :func:`make_cifar100`: ``cifar-100-python/{train,test,meta}`` pickles;
* :func:`make_mnist`: ``<NAME>/raw/*-idx?-ubyte`` files (and their ``.gz``, as torchvision leaves
  them after a download), for ``MNIST`` and ``FashionMNIST``.

Pixel content is a function of the example's index (see :func:`celeba_pixels`,
:func:`cifar_pixels`, :func:`mnist_pixels`), so a test can tell which example it got.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

CELEBA_WIDTH, CELEBA_HEIGHT = 178, 218


# -- CelebA ----------------------------------------------------------------------------------
def celeba_name(index: int) -> str:
    """The official file name of image ``index`` (0-based): ``000001.jpg`` for 0."""
    return f"{index + 1:06d}.jpg"


def celeba_red(index: int) -> int:
    """The (nearly constant, JPEG being lossy) red level of image ``index``: identifies it."""
    return 20 + 10 * (index % 22)


def celeba_pixels(index: int) -> np.ndarray:
    """``uint8 [218, 178, 3]`` content of image ``index``: red = :func:`celeba_red`, green a
    left-to-right ramp, blue a top-to-bottom ramp (so a crop or a resize changes the picture)."""
    y, x = np.mgrid[0:CELEBA_HEIGHT, 0:CELEBA_WIDTH]
    red = np.full((CELEBA_HEIGHT, CELEBA_WIDTH), celeba_red(index))
    green = x * 255 // (CELEBA_WIDTH - 1)
    blue = y * 255 // (CELEBA_HEIGHT - 1)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def make_celeba(
    root: Path,
    layout: str = "torchvision",
    n_train: int = 6,
    n_valid: int = 2,
    n_test: int = 3,
    partitions: Sequence[int] | None = None,
    under_celeba: bool | None = None,
) -> Path:
    """Write a tiny CelebA under ``root``; returns ``root``.

    ``layout``: ``"torchvision"`` (``root/celeba/img_align_celeba/*.jpg`` and
    ``root/celeba/list_eval_partition.txt``, lines ``000001.jpg 0``) or ``"kaggle"``
    (``root/img_align_celeba/img_align_celeba/*.jpg`` and ``root/list_eval_partition.csv``, header
    ``image_id,partition``). ``under_celeba`` overrides where the files go (``root/celeba`` or
    ``root``; by default ``root/celeba`` for torchvision and ``root`` for Kaggle).

    ``partitions`` gives each image's partition (0 train, 1 valid, 2 test) in file order; by
    default ``n_train`` zeros, ``n_valid`` ones and ``n_test`` twos, in blocks like the official
    file. No other annotation file is written.
    """
    if layout not in ("torchvision", "kaggle"):
        raise ValueError(f"unknown CelebA layout {layout!r}")
    from PIL import Image

    if partitions is None:
        partitions = [0] * n_train + [1] * n_valid + [2] * n_test
    if under_celeba is None:
        under_celeba = layout == "torchvision"
    base = root / "celeba" if under_celeba else root
    images = base / "img_align_celeba"
    if layout == "kaggle":
        images = images / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    for index in range(len(partitions)):
        Image.fromarray(celeba_pixels(index), mode="RGB").save(images / celeba_name(index), quality=95)
    if layout == "torchvision":
        lines = [f"{celeba_name(i)} {p}" for i, p in enumerate(partitions)]
        (base / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    else:
        lines = ["image_id,partition"] + [f"{celeba_name(i)},{p}" for i, p in enumerate(partitions)]
        (base / "list_eval_partition.csv").write_text("\n".join(lines) + "\n")
    return root


def celeba_image_folder(root: Path, layout: str = "torchvision", under_celeba: bool | None = None) -> Path:
    """Where :func:`make_celeba` put the JPEGs."""
    if under_celeba is None:
        under_celeba = layout == "torchvision"
    images = (root / "celeba" if under_celeba else root) / "img_align_celeba"
    return images / "img_align_celeba" if layout == "kaggle" else images


# -- CIFAR-100 -------------------------------------------------------------------------------
def cifar_pixels(index: int) -> np.ndarray:
    """``uint8 [3072]`` row of example ``index`` (``index`` counts across train then test)."""
    return ((np.arange(3 * 32 * 32) * 7 + index * 13) % 256).astype(np.uint8)


def cifar_fine_label(index: int) -> int:
    return (index * 37) % 100


def make_cifar100(root: Path, n_train: int = 8, n_test: int = 4) -> Path:
    """Write ``root/cifar-100-python/{train,test,meta}`` as CIFAR-100 has them; returns ``root``.

    ``train``/``test`` are protocol-2 pickles of dicts with bytes keys (Python 2's str):
    ``b"data"`` (``uint8 N x 3072``, red, green and blue 32x32 planes row-major),
    ``b"fine_labels"``, ``b"coarse_labels"``, ``b"filenames"``, ``b"batch_label"``. Training
    example ``i`` holds :func:`cifar_pixels` ``(i)``, test example ``j`` ``(n_train + j)``.
    """
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, start, count in (("train", 0, n_train), ("test", n_train, n_test)):
        indices = range(start, start + count)
        entry = {
            b"filenames": [f"img_{i}.png".encode() for i in indices],
            b"batch_label": f"{split}ing batch 1 of 1".encode(),
            b"fine_labels": [cifar_fine_label(i) for i in indices],
            b"coarse_labels": [cifar_fine_label(i) // 5 for i in indices],
            b"data": np.stack([cifar_pixels(i) for i in indices]) if count else np.zeros((0, 3072), np.uint8),
        }
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {
        b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)],
    }
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return root


# -- MNIST and Fashion-MNIST -----------------------------------------------------------------
def mnist_pixels(index: int) -> np.ndarray:
    """``uint8 [28, 28]`` image ``index`` (counting across train then test)."""
    return ((np.arange(28 * 28).reshape(28, 28) + index * 31) % 256).astype(np.uint8)


def mnist_label(index: int) -> int:
    return (index * 3) % 10


def _idx_bytes(array: np.ndarray) -> bytes:
    """An idx (SN3 / Pascal Vincent) file: magic 0x0000 08 <ndim>, big-endian dims, uint8 data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def make_mnist(root: Path, name: str = "MNIST", n_train: int = 8, n_test: int = 4, gz: bool = True) -> Path:
    """Write ``root/<name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``; returns ``root``.

    ``name`` is torchvision's folder: ``MNIST`` or ``FashionMNIST``. torchvision reads the
    uncompressed files; with ``gz`` their ``.gz`` archives are written next to them too, as a
    download leaves them. Training image ``i`` is :func:`mnist_pixels` ``(i)``, test image ``j``
    ``(n_train + j)``.
    """
    raw = root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, start, count in (("train", 0, n_train), ("t10k", n_train, n_test)):
        indices = range(start, start + count)
        images = np.stack([mnist_pixels(i) for i in indices]) if count else np.zeros((0, 28, 28), np.uint8)
        labels = np.array([mnist_label(i) for i in indices], dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = _idx_bytes(array)
            path = raw / f"{prefix}-{kind}-ubyte"
            path.write_bytes(data)
            if gz:
                path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    return root
