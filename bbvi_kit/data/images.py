"""Helpers shared by the file-based image datasets (``celeba``, ``cifar100``, ``mnist``, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from pydantic import Field

from bbvi_kit.data.base import ImageTensorDataset
from bbvi_kit.data.root import check_recipe_write, download_cleanly
from bbvi_kit.errors import InputError
from bbvi_kit.plugin import PluginOptions


class ImageDatasetOptions(PluginOptions):
    """Options every file-based image dataset takes: where the files are, and how many to use."""

    root: str | None = Field(
        None, description="data root; default: $BBVI_KIT_DATA, else ~/.cache/bbvi_kit/data"
    )
    download: bool = Field(
        False, description="fetch the files with torchvision's downloader when they are missing"
    )
    max_train: int | None = Field(None, ge=1, le=10**9, description="use only the first N training examples")
    max_test: int | None = Field(None, ge=1, le=10**9, description="use only the first N test examples")


def one_line(text: object) -> str:
    """``text`` with its whitespace (newlines included) collapsed, for a one-line error."""
    return " ".join(str(text).split())


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` on one line."""
    message = one_line(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def run_download(dataset: str, root: Path, creates: list[Path], fetch: Callable[[], object],
                 *, root_option: str | None) -> None:
    """Run a torchvision downloader into the data root ``root``; any failure becomes a one-line
    :class:`InputError`, and the folders and files in ``creates`` that the download made are
    removed again (:func:`bbvi_kit.data.root.download_cleanly`).

    Downloads are attempted only when the plugin's ``download`` option is on and its files are
    missing; a ``root`` the recipe named (its ``root`` option, ``root_option``) must be a place a
    recipe may write to (:func:`bbvi_kit.data.root.check_recipe_write`).
    """
    if root_option is not None and root_option.strip():
        check_recipe_write(root, dataset, "root", "download")
    where = creates[-1] if creates else root
    try:
        download_cleanly([root, *creates], fetch)
    except Exception as exc:  # network, checksum, missing gdown ...: all the user's to fix
        raise InputError(
            f"dataset {dataset}: download into {where} failed: {describe_exception(exc)}"
        ) from exc


def head(n: int | None, count: int) -> int:
    """How many of ``count`` examples to keep given a ``max_*`` option ``n``."""
    return count if n is None else min(n, count)


def image_tensor_split(
    images: torch.Tensor, labels: torch.Tensor | None, limit: int | None
) -> ImageTensorDataset:
    """The first ``limit`` uint8 ``images`` (and ``labels`` when given) as an :class:`ImageTensorDataset`."""
    keep = head(limit, len(images))

    def first(tensor: torch.Tensor) -> torch.Tensor:
        # A copy when cut, so a few examples do not keep the whole file's array alive.
        return tensor.contiguous() if keep == len(tensor) else tensor[:keep].clone()

    tensors = (first(images),) + (() if labels is None else (first(labels),))
    return ImageTensorDataset(*tensors)
