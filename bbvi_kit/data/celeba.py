"""CelebA aligned faces, decoded lazily from the JPEGs on disk.

Two on-disk layouts are found automatically, under the data root ``ROOT`` or ``ROOT/celeba``:

* torchvision's: ``celeba/img_align_celeba/000001.jpg ...`` and ``celeba/list_eval_partition.txt``
  (lines ``000001.jpg 0``); its other annotation files are not needed;
* the widely mirrored Kaggle copy (``jessicali9530/celeba-dataset``):
  ``img_align_celeba/img_align_celeba/000001.jpg ...`` and ``list_eval_partition.csv`` (header
  ``image_id,partition``, lines ``000001.jpg,0``).

The partition file and the JPEGs are read here, not through torchvision's ``CelebA``, which
verifies the MD5 of every annotation file (and so requires all of them).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch.utils.data import Dataset

from bbvi_kit.data.base import DataInfo, DatasetPlugin, DataSplits, available_cpus
from bbvi_kit.data.cache import cache_key, cached_images
from bbvi_kit.data.images import ImageDatasetOptions, describe_exception, head, run_download
from bbvi_kit.data.root import check_recipe_write, data_root, root_hint
from bbvi_kit.errors import InputError
from bbvi_kit.registry import register_dataset

CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_KAGGLE = "jessicali9530/celeba-dataset"
PARTITIONS = {"train": 0, "valid": 1, "test": 2}
CACHE_FOLDER = "bbvi_kit_cache"


def cache_workers(count: int) -> int:
    """Decoding processes for building a cache of ``count`` images: none for a few (starting a
    process costs more), else one per available CPU, at most 8."""
    return 0 if count < 2048 else min(available_cpus(), 8)


@dataclass(frozen=True)
class CelebAFiles:
    """Where one copy of CelebA is: its folder of aligned JPEGs and its partition file."""

    images: Path
    partition: Path


def find_celeba(root: Path) -> CelebAFiles | None:
    """The first copy of CelebA under ``root`` or ``root/celeba``, in either layout, else ``None``.

    In each folder, the partition file is ``list_eval_partition.txt`` or ``list_eval_partition.csv``
    and the images are in ``img_align_celeba/img_align_celeba/`` (Kaggle) or ``img_align_celeba/``
    (torchvision).
    """
    for base in (root / "celeba", root):
        partition = next(
            (p for p in (base / "list_eval_partition.txt", base / "list_eval_partition.csv") if p.is_file()), None
        )
        images = next(
            (d for d in (base / "img_align_celeba" / "img_align_celeba", base / "img_align_celeba") if d.is_dir()),
            None,
        )
        if partition is not None and images is not None:
            return CelebAFiles(images=images, partition=partition)
    return None


def _missing_message(root: Path) -> str:
    """One line: what was looked for where, what was found, and how to get CelebA."""
    torchvision_base, kaggle_base = root / "celeba", root
    looked_for = ("list_eval_partition.txt", "list_eval_partition.csv", "img_align_celeba", "img_align_celeba.zip")
    found = [str(base / name) for base in (root / "celeba", root) for name in looked_for if (base / name).exists()]
    seen = f" (found only {', '.join(found)})" if found else ""
    unzip = "; unzip img_align_celeba.zip next to itself" if any(f.endswith(".zip") for f in found) else ""
    return (
        f"dataset celeba: no CelebA under {root}{root_hint(root)}{seen}{unzip}; expected "
        f"{torchvision_base}/img_align_celeba/*.jpg with {torchvision_base}/list_eval_partition.txt "
        f"(torchvision layout) or {kaggle_base}/img_align_celeba/img_align_celeba/*.jpg with "
        f"{kaggle_base}/list_eval_partition.csv (Kaggle layout; either layout may sit in the root or in "
        f"root/celeba); set download: true, or get img_align_celeba.zip and list_eval_partition.txt "
        f"from {CELEBA_URL} (Google Drive), or the Kaggle mirror {CELEBA_KAGGLE}"
    )


def read_partition(path: Path) -> list[tuple[str, int]]:
    """``(file name, partition)`` pairs of a CelebA partition file, in file order.

    ``.txt``: lines ``000001.jpg 0`` (torchvision's copy of the official file); ``.csv``: header
    ``image_id,partition`` then ``000001.jpg,0`` (the Kaggle copy). Partition 0 is train, 1 valid,
    2 test.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"dataset celeba: cannot read {path}: {describe_exception(exc)}") from exc
    if path.suffix == ".csv":
        rows = list(csv.reader(text.splitlines()))
        header = [cell.strip() for cell in rows[0]] if rows else []
        if header != ["image_id", "partition"]:
            raise InputError(
                f"dataset celeba: {path} must start with the header image_id,partition, got {','.join(header)!r}"
            )
        numbered = list(enumerate(rows[1:], start=2))
    else:
        numbered = [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1)]
    entries: list[tuple[str, int]] = []
    for number, cells in numbered:
        cells = [c.strip() for c in cells]
        if not any(cells):
            continue
        if len(cells) != 2 or cells[1] not in ("0", "1", "2"):
            raise InputError(
                f"dataset celeba: {path} line {number}: expected '<image> <0|1|2>', got {' '.join(cells)!r}"
            )
        entries.append((cells[0], int(cells[1])))
    if not entries:
        raise InputError(f"dataset celeba: {path} lists no images")
    return entries


class CelebAImages(Dataset):
    """CelebA JPEGs decoded on demand: item ``i`` is ``(image,)``, a float32 ``(3, S, S)`` in [0, 1].

    Each image is opened with PIL and converted to RGB, centre-cropped to ``center_crop`` squared
    pixels when given, then resized to ``image_size`` squared with bilinear antialiased
    interpolation (``torchvision.transforms.functional``, which resizes PIL images with PIL).
    Holds only file names, so it pickles cheaply into ``DataLoader`` workers.
    """

    def __init__(self, folder: Path, names: list[str], image_size: int, center_crop: int | None = None) -> None:
        self.folder = str(folder)
        self.names = names
        self.image_size = image_size
        self.center_crop = center_crop

    def __len__(self) -> int:
        return len(self.names)

    def path(self, index: int) -> str:
        return os.path.join(self.folder, self.names[index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        return (self.pixels(index).to(torch.float32).div_(255.0),)

    def pixels(self, index: int) -> torch.Tensor:
        """Image ``index`` decoded, cropped and resized: uint8 ``(3, S, S)``."""
        from PIL import Image
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        path = self.path(index)
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except Exception as exc:  # missing, truncated, not an image
            raise InputError(f"dataset celeba: cannot read image {path}: {describe_exception(exc)}") from exc
        if self.center_crop is not None:
            width, height = img.size
            if self.center_crop > min(width, height):
                raise InputError(
                    f"dataset celeba: center_crop {self.center_crop} is larger than image {path} ({width}x{height})"
                )
            img = TF.center_crop(img, [self.center_crop, self.center_crop])
        size = [self.image_size, self.image_size]
        img = TF.resize(img, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        return TF.pil_to_tensor(img)


class _CelebAPixels(CelebAImages):
    """The same images as uint8, what the decoded-image cache stores."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        return (self.pixels(index),)


@register_dataset("celeba")
class CelebA(DatasetPlugin):
    """CelebA (Liu et al. 2015): 202,599 aligned 178x218 celebrity faces, as RGB squares in [0, 1].

    The official partition is honoured: 162,770 train (0), 19,867 valid (1) and 19,962 test (2)
    images; ``test_split`` picks the held-out one. Images are resized straight to
    ``image_size`` (64x64 by default, no crop, as in Surendran et al., AISTATS 2025); with
    ``center_crop`` they are first cropped to that centred square (148 is the usual choice).
    The files are found as described in the module docstring.

    With ``cache`` (the default) every image is decoded once, on the first load, into a uint8
    file under ``cache_dir`` and memory-mapped from then on (:mod:`bbvi_kit.data.cache`): an
    epoch reads memory instead of decoding 162,770 JPEGs. The cache is keyed by the image
    folder, the file names, the size and the crop; delete it after changing JPEGs in place.
    Without it, decoding is lazy, per item, in ``training.num_workers`` processes.
    """

    class Options(ImageDatasetOptions):
        image_size: int = Field(64, ge=1, le=4096, description="side S of the square (3, S, S) images")
        center_crop: int | None = Field(
            None, ge=1, le=4096, description="crop the centred square of this side first (e.g. 148); null: no crop"
        )
        test_split: Literal["test", "valid"] = Field(
            "test", description="official partition used as the test set: test (2) or valid (1)"
        )
        cache: bool = Field(
            True, description="decode every image once into a uint8 file and memory-map it (12 KB per 64x64 "
            "image, 2 GB for the training set); false: decode the JPEGs again in every epoch",
        )
        cache_dir: str | None = Field(
            None, description="folder of the decoded-image cache; null: bbvi_kit_cache in the data root of "
            "$BBVI_KIT_DATA or ~/.cache/bbvi_kit/data (not in a root the recipe names)"
        )

    options: Options

    def load(self) -> DataSplits:
        opts = self.options
        root = data_root(opts.root)
        files = find_celeba(root)
        if files is None and opts.download:

            def fetch() -> None:
                from torchvision.datasets import CelebA as TorchvisionCelebA

                TorchvisionCelebA(str(root), split="all", download=True)

            run_download("celeba", root, [root / "celeba"], fetch, root_option=opts.root)
            files = find_celeba(root)
        if files is None:
            raise InputError(_missing_message(root))
        entries = read_partition(files.partition)
        wanted = {"train": PARTITIONS["train"], "test": PARTITIONS[opts.test_split]}
        limits = {"train": opts.max_train, "test": opts.max_test}
        names: dict[str, list[str]] = {}
        for split, part in wanted.items():
            chosen = [name for name, p in entries if p == part]
            if not chosen:
                raise InputError(f"dataset celeba: {files.partition} lists no images of partition {part} ({split})")
            names[split] = chosen[: head(limits[split], len(chosen))]
        self._check_present(files, [*names["train"], *names["test"]])
        splits: dict[str, Dataset] = {
            split: CelebAImages(files.images, chosen, opts.image_size, opts.center_crop)
            for split, chosen in names.items()
        }
        _ = splits["train"][0]  # decode one image now: an unreadable file or a bad crop fails here, not mid-run
        size = opts.image_size
        if opts.cache:
            if opts.cache_dir:
                cache_root = Path(opts.cache_dir).expanduser()
                check_recipe_write(cache_root, "celeba", "cache_dir", "cache decoded images")
            else:  # the data root chosen outside the recipe, even when the recipe names where to read
                cache_root = data_root(None) / CACHE_FOLDER
            partition_names = {"train": "train", "test": opts.test_split}
            for split, chosen in names.items():
                key = cache_key(images=files.images.resolve(), names=chosen, image_size=size,
                                center_crop=opts.center_crop)
                crop = f"-crop{opts.center_crop}" if opts.center_crop is not None else ""
                stem = cache_root / f"celeba-{partition_names[split]}-{size}px{crop}-{key}"
                splits[split] = cached_images(
                    stem, key, lambda chosen=chosen: _CelebAPixels(files.images, chosen, size, opts.center_crop),
                    (3, size, size), what=f"dataset celeba ({partition_names[split]})",
                    num_workers=cache_workers(len(chosen)),
                )
        info = DataInfo(
            name="celeba", shape=(3, size, size), num_train=len(names["train"]), num_test=len(names["test"]),
            files=str(files.images.resolve()),
        )
        return DataSplits(train=splits["train"], test=splits["test"], info=info)

    @staticmethod
    def _check_present(files: CelebAFiles, names: list[str]) -> None:
        """Every listed image exists: one directory listing, not one ``stat`` per file."""
        try:
            present = set(os.listdir(files.images))
        except OSError as exc:
            raise InputError(f"dataset celeba: cannot list {files.images}: {describe_exception(exc)}") from exc
        missing = [name for name in names if name not in present]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise InputError(
                f"dataset celeba: {files.partition} lists {missing[0]}{more}, not found in {files.images}"
            )
