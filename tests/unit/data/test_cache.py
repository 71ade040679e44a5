"""The decoded-image cache (:mod:`bbvi_kit.data.cache`): the bytes of ``<stem>.u8`` are the images
row-major, ``<stem>.json`` says what they are, the cache is served memory-mapped as float32 in
[0, 1], and a cache that is missing, stale (another key) or truncated is not used but built again;
a build that fails leaves no file and is one line naming the dataset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from bbvi_kit.data.cache import FORMAT_VERSION, build_cache, cache_key, cached_images, open_cache
from bbvi_kit.errors import InputError

SHAPE = (1, 2, 3)  # C, H, W


def images(n: int) -> torch.Tensor:
    """``n`` uint8 images of SHAPE whose pixels are 0, 1, 2, ... in row-major order."""
    return (torch.arange(n * 6) % 256).to(torch.uint8).reshape(n, *SHAPE)


class Counting(Dataset):
    """Images served as ``(image,)`` that count how often they were decoded."""

    def __init__(self, pixels: torch.Tensor) -> None:
        self.pixels, self.calls = pixels, 0

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor]:
        self.calls += 1
        return (self.pixels[i],)


def test_the_key_is_short_hex_and_depends_on_every_part_not_on_their_order() -> None:
    key = cache_key(files=["a.jpg", "b.jpg"], size=64, crop=(0, 0, 10, 10))
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert cache_key(crop=(0, 0, 10, 10), size=64, files=["a.jpg", "b.jpg"]) == key
    assert cache_key(files=["a.jpg", "b.jpg"], size=32, crop=(0, 0, 10, 10)) != key
    assert cache_key(files=["b.jpg", "a.jpg"], size=64, crop=(0, 0, 10, 10)) != key


def test_a_built_cache_holds_the_images_row_major_and_says_what_they_are(tmp_path: Path) -> None:
    pixels = images(3)
    stem = tmp_path / "sub" / "celeba-train"  # the folder is made
    dataset = build_cache(stem, "k1", TensorDataset(pixels), SHAPE, what="celeba")
    assert (tmp_path / "sub" / "celeba-train.u8").read_bytes() == bytes(range(18))
    assert json.loads((tmp_path / "sub" / "celeba-train.json").read_text()) == {
        "format": FORMAT_VERSION, "key": "k1", "dtype": "uint8", "shape": [3, 1, 2, 3]}
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["celeba-train.json", "celeba-train.u8"]
    assert len(dataset) == 3
    (first,) = dataset[1]
    assert first.dtype == torch.float32
    np.testing.assert_allclose(first.numpy(), np.arange(6, 12, dtype=np.float32).reshape(SHAPE) / 255.0)


def test_more_images_than_one_chunk_keep_their_order(tmp_path: Path) -> None:
    pixels = images(300)  # 256 per chunk
    build_cache(tmp_path / "c", "k", TensorDataset(pixels), SHAPE, what="x")
    assert (tmp_path / "c.u8").read_bytes() == pixels.numpy().tobytes()
    assert (tmp_path / "c.u8").stat().st_size == 300 * 6


def test_an_existing_cache_of_the_same_key_is_opened_as_it_is(tmp_path: Path) -> None:
    stem = tmp_path / "c"
    build_cache(stem, "k", TensorDataset(images(2)), SHAPE, what="x")
    opened = open_cache(stem, "k")
    assert opened is not None and len(opened) == 2
    assert torch.equal(opened.tensors[0], images(2))  # served from the file, uint8


def test_an_empty_cache_opens_empty(tmp_path: Path) -> None:
    build_cache(tmp_path / "c", "k", TensorDataset(images(0)), SHAPE, what="x")
    opened = open_cache(tmp_path / "c", "k")
    assert opened is not None and len(opened) == 0 and tuple(opened.tensors[0].shape) == (0, *SHAPE)


def _spoil(stem: Path, how: str) -> None:
    meta_path, data_path = stem.with_suffix(".json"), stem.with_suffix(".u8")
    meta = json.loads(meta_path.read_text())
    if how == "no json":
        meta_path.unlink()
    elif how == "no data":
        data_path.unlink()
    elif how == "truncated":
        data_path.write_bytes(data_path.read_bytes()[:-1])
    elif how == "longer":
        data_path.write_bytes(data_path.read_bytes() + b"\0")
    elif how == "json not json":
        meta_path.write_text("{")
    elif how == "json a list":
        meta_path.write_text("[]")
    else:
        field, value = how.split("=", 1)
        meta[field] = json.loads(value)
        meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("how", ["no json", "no data", "truncated", "longer", "json not json", "json a list",
                                 'key="other"', 'dtype="float32"', "format=2", "shape=[2, 1, 2, 3, 1]", "shape=[12]"])
def test_a_missing_stale_or_damaged_cache_is_not_used(tmp_path: Path, how: str) -> None:
    stem = tmp_path / "c"
    build_cache(stem, "k", TensorDataset(images(2)), SHAPE, what="x")
    _spoil(stem, how)
    assert open_cache(stem, "k") is None


def test_a_stem_with_no_files_at_all_has_no_cache() -> None:
    assert open_cache(Path("/nonexistent/c"), "k") is None


def test_cached_images_decodes_only_when_there_is_no_usable_cache(tmp_path: Path) -> None:
    stem, decoded = tmp_path / "c", Counting(images(4))
    first = cached_images(stem, "k", lambda: decoded, SHAPE, what="x")
    assert decoded.calls == 4 and len(first) == 4
    again = cached_images(stem, "k", lambda: pytest.fail("decoded again"), SHAPE, what="x")
    assert torch.equal(again.tensors[0], images(4))
    stem.with_suffix(".u8").write_bytes(b"\0" * 10)  # truncated by a killed build: built again
    rebuilt = cached_images(stem, "k", lambda: decoded, SHAPE, what="x")
    assert decoded.calls == 8 and torch.equal(rebuilt.tensors[0], images(4))
    other = cached_images(stem, "k2", lambda: Counting(images(1)), SHAPE, what="x")  # a new key replaces it
    assert len(other) == 1 and json.loads(stem.with_suffix(".json").read_text())["key"] == "k2"


@pytest.mark.parametrize("pixels, found", [
    (images(2).float(), "torch.float32 (1, 2, 3)"),
    (torch.zeros(2, 3, 2, 3, dtype=torch.uint8), "torch.uint8 (3, 2, 3)"),
])
def test_decoded_images_of_the_wrong_type_or_shape_are_refused_and_leave_no_file(tmp_path: Path, pixels: torch.Tensor,
                                                                                 found: str) -> None:
    with pytest.raises(InputError) as excinfo:
        build_cache(tmp_path / "c", "k", TensorDataset(pixels), SHAPE, what="celeba")
    assert str(excinfo.value) == f"celeba: decoded images are {found}, expected uint8 (1, 2, 3)"
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_cache_folder_is_one_line_naming_the_dataset_and_the_option(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the cache folder goes")
    stem = tmp_path / "blocked" / "cache" / "c"
    with pytest.raises(InputError) as excinfo:
        build_cache(stem, "k", TensorDataset(images(1)), SHAPE, what="celeba")
    message = str(excinfo.value)
    assert message.startswith(f"celeba: cannot write the decoded-image cache {stem.with_suffix('.u8')}: ")
    assert message.endswith("set the dataset's cache_dir to a writable folder, or cache: false") and "\n" not in message
    assert (tmp_path / "blocked").read_text() == "a file where the cache folder goes"
