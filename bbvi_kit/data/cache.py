"""Decoded images cached once as a uint8 tensor file, then memory-mapped.

Decoding JPEGs costs milliseconds per image, every epoch; a training step on a GPU consumes
thousands of images in that time. A dataset that decodes per example (``celeba``) can instead
decode every image once into

    <stem>.u8     the images, uint8 [N, C, H, W], row-major, nothing else
    <stem>.json   what the file holds: shape, dtype, the key of what was decoded; written last

and from then on open ``<stem>.u8`` as a memory-mapped tensor (``torch.from_file``): nothing is
read until a batch touches it, the operating system's page cache keeps the hot pages, and every
batch is one gather from it (:class:`~bbvi_kit.data.base.ImageTensorDataset`, served as float32
in [0, 1] exactly as the decoding path serves it).

The ``.u8`` file is written under a temporary name, synced and renamed; the ``.json`` is then
written atomically, and a cache counts only when its ``.json`` exists, names the same key and
the ``.u8`` file has the size it states. A process killed while building leaves at most a
temporary file, which the next build replaces; a stale or truncated cache is built again.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Sized, cast

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from bbvi_kit.data.base import ImageTensorDataset, as_args, batch_loader
from bbvi_kit.errors import InputError
from bbvi_kit.files import atomic_file, atomic_write_text

FORMAT_VERSION = 1
CHUNK = 256


def cache_key(**parts: Any) -> str:
    """A short hash of everything that decides the cached pixels (file names, sizes, crops)."""
    text = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _read_meta(meta_path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def open_cache(stem: Path, key: str) -> ImageTensorDataset | None:
    """The cached images at ``stem`` if a complete cache of ``key`` is there, else ``None``."""
    data, meta = stem.with_suffix(".u8"), _read_meta(stem.with_suffix(".json"))
    if meta is None or meta.get("key") != key or meta.get("dtype") != "uint8" or meta.get("format") != FORMAT_VERSION:
        return None
    shape = [int(s) for s in meta.get("shape", [])]
    if len(shape) != 4 or not data.is_file() or data.stat().st_size != math.prod(shape):
        return None
    if shape[0] == 0:
        return ImageTensorDataset(torch.empty(shape, dtype=torch.uint8))
    images = torch.from_file(str(data), shared=False, size=math.prod(shape), dtype=torch.uint8)
    return ImageTensorDataset(images.view(shape))


def build_cache(
    stem: Path,
    key: str,
    decoded: Dataset,
    image_shape: tuple[int, int, int],
    *,
    what: str,
    num_workers: int = 0,
) -> ImageTensorDataset:
    """Decode every item of ``decoded`` (each ``(uint8 image,)``) into the cache at ``stem``
    (see the module docstring) and return it memory-mapped. ``what`` names the dataset in
    messages; ``num_workers`` decoding processes run in parallel (the order is kept)."""
    n = len(cast(Sized, decoded))
    shape = (n, *image_shape)
    data, meta = stem.with_suffix(".u8"), stem.with_suffix(".json")
    size_gb = math.prod(shape) / 1e9
    # shown on a terminal only (disable=None), so that logs and captured output stay clean
    bar = tqdm(total=n, unit="img", desc=f"caching {what} ({size_gb:.2g} GB)", disable=None, leave=False)
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(data) as fh:
            for batch in batch_loader(decoded, CHUNK, shuffle=False, num_workers=num_workers):
                (images,) = as_args(batch)
                if images.dtype != torch.uint8 or tuple(images.shape[1:]) != image_shape:
                    raise InputError(f"{what}: decoded images are {images.dtype} {tuple(images.shape[1:])}, "
                                     f"expected uint8 {image_shape}")
                fh.write(images.contiguous().numpy().data)
                bar.update(len(images))
        atomic_write_text(meta, json.dumps({"format": FORMAT_VERSION, "key": key, "dtype": "uint8",
                                            "shape": list(shape)}, indent=2) + "\n")
    except OSError as exc:
        raise InputError(f"{what}: cannot write the decoded-image cache {data}: {exc.strerror or exc}; "
                         "set the dataset's cache_dir to a writable folder, or cache: false") from None
    finally:
        bar.close()
    cached = open_cache(stem, key)
    assert cached is not None, f"the cache just written at {stem} does not read back"
    return cached


def cached_images(stem: Path, key: str, decoded: Callable[..., Dataset], image_shape: tuple[int, int, int], *,
                  what: str, num_workers: int = 0) -> ImageTensorDataset:
    """The cache at ``stem`` for ``key``, built from ``decoded()`` first when it is not there."""
    cached = open_cache(stem, key)
    if cached is not None:
        return cached
    return build_cache(stem, key, decoded(), image_shape, what=what, num_workers=num_workers)
