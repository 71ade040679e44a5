"""File-based image datasets (celeba, cifar100, mnist, fashion_mnist) on tiny copies written in
their real on-disk formats; nothing is downloaded (sockets are blocked in this module)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.support.datasets_on_disk import (
    celeba_image_folder,
    celeba_name,
    celeba_red,
    cifar_fine_label,
    cifar_pixels,
    make_celeba,
    make_cifar100,
    make_mnist,
    mnist_label,
    mnist_pixels,
)
from PIL import Image
from pydantic import ValidationError
from torch.utils.data import TensorDataset

from bbvi_kit.data import CIFAR100, MNIST, CelebA, FashionMNIST, ImageTensorDataset, as_args, batch_loader
from bbvi_kit.data.root import ALLOW_WRITE_ENV, DATA_ENV, data_root
from bbvi_kit.errors import InputError
from bbvi_kit.registry import datasets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    # The data root chosen outside any recipe is the test's folder: downloads and caches a recipe
    # asks for may go below it (the tests' roots and caches all lie there).
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    monkeypatch.delenv(ALLOW_WRITE_ENV, raising=False)  # and what --allow-write sets is undone after the test


@pytest.fixture
def data_root_here(tmp_path: Path) -> Path:
    """The data root of $BBVI_KIT_DATA (see ``_no_network``)."""
    return tmp_path


def one_line_error(excinfo: pytest.ExceptionInfo[InputError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message
    return message


def red_index(image: torch.Tensor) -> int:
    """Which generated CelebA image this is, from its (JPEG-blurred) red level."""
    level = float(image[0].mean()) * 255
    return min(range(22), key=lambda i: abs(celeba_red(i) - level))


def batches(dataset: torch.utils.data.Dataset, size: int) -> list[tuple]:
    return [as_args(b) for b in batch_loader(dataset, size, shuffle=True, generator=torch.Generator().manual_seed(0))]


# -- data root -------------------------------------------------------------------------------
def test_data_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(DATA_ENV)
    assert data_root(None) == tmp_path / "home" / ".cache" / "bbvi_kit" / "data"
    monkeypatch.setenv(DATA_ENV, "~/from_env")
    assert data_root(None) == tmp_path / "home" / "from_env"
    assert data_root("~/given") == tmp_path / "home" / "given"
    assert data_root(str(tmp_path / "abs")) == tmp_path / "abs"
    monkeypatch.setenv(DATA_ENV, "")
    assert data_root(None) == tmp_path / "home" / ".cache" / "bbvi_kit" / "data"


def test_plugins_are_registered() -> None:
    for name, cls in [("celeba", CelebA), ("cifar100", CIFAR100), ("mnist", MNIST), ("fashion_mnist", FashionMNIST)]:
        assert datasets.get(name) is cls
        options = cls.Options.model_fields
        assert {"root", "download", "max_train", "max_test"} <= set(options)
        assert cls().options.download is False and cls().options.root is None
        assert all(f.description for f in options.values())


# -- CelebA ----------------------------------------------------------------------------------
def test_celeba_torchvision_layout_shapes_range_and_official_partition(tmp_path: Path) -> None:
    parts = [2, 0, 1, 0, 2, 0, 0, 1, 2, 0]  # interleaved: the file decides, not the position
    root = make_celeba(tmp_path, partitions=parts)
    splits = CelebA(root=str(root)).load()
    assert splits.info.shape == (3, 64, 64) and splits.info.name == "celeba"
    assert (splits.info.num_train, splits.info.num_test) == (5, 3) == (len(splits.train), len(splits.test))
    (x,) = splits.train[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.9
    assert [red_index(splits.train[i][0]) for i in range(5)] == [i for i, p in enumerate(parts) if p == 0]
    assert [red_index(splits.test[i][0]) for i in range(3)] == [i for i, p in enumerate(parts) if p == 2]
    valid = CelebA(root=str(root), test_split="valid").load()
    assert [red_index(valid.test[i][0]) for i in range(len(valid.test))] == [2, 7]


def test_celeba_resizes_straight_like_pil(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, n_train=2, n_valid=0, n_test=1)
    (x,) = CelebA(root=str(root), image_size=32).load().train[1]
    with Image.open(celeba_image_folder(root) / celeba_name(1)) as img:
        assert img.size == (178, 218)
        expected = np.asarray(img.convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x, torch.from_numpy(expected).permute(2, 0, 1), atol=1.5 / 255)
    # No crop: the whole green ramp (0 at the left edge, 255 at the right) survives.
    assert float(x[1, :, 0].mean()) < 0.05 and float(x[1, :, -1].mean()) > 0.95


def test_celeba_center_crop_then_resize_like_pil(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, n_train=2, n_valid=0, n_test=1)
    (x,) = CelebA(root=str(root), center_crop=148, image_size=40).load().train[0]
    left, top = (178 - 148) // 2, (218 - 148) // 2  # 15, 35
    with Image.open(celeba_image_folder(root) / celeba_name(0)) as img:
        cropped = img.convert("RGB").crop((left, top, left + 148, top + 148))
        expected = np.asarray(cropped.resize((40, 40), Image.BILINEAR), dtype=np.float32) / 255
    assert x.shape == (3, 40, 40)
    assert torch.allclose(x, torch.from_numpy(expected).permute(2, 0, 1), atol=1.5 / 255)
    # The crop removed the ramps' ends: green starts near 15/177 of the way, not at 0.
    assert 0.05 < float(x[1, :, 0].mean()) < 0.15


@pytest.mark.parametrize("under_celeba", [False, True])
def test_celeba_kaggle_layout_found_automatically(tmp_path: Path, under_celeba: bool) -> None:
    root = make_celeba(tmp_path, layout="kaggle", n_train=3, n_valid=1, n_test=2, under_celeba=under_celeba)
    splits = CelebA(root=str(root), image_size=16).load()
    assert (len(splits.train), len(splits.test)) == (3, 2)
    assert [red_index(splits.test[i][0]) for i in range(2)] == [4, 5]
    assert splits.train[0][0].shape == (3, 16, 16)


def test_celeba_max_train_max_test_keep_the_first(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, n_train=6, n_valid=1, n_test=3)
    splits = CelebA(root=str(root), max_train=2, max_test=1, image_size=8).load()
    assert (splits.info.num_train, splits.info.num_test) == (2, 1)
    assert [red_index(splits.train[i][0]) for i in range(2)] == [0, 1]
    assert red_index(splits.test[0][0]) == 7


def test_celeba_batches_through_batch_loader(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, n_train=5, n_valid=0, n_test=1)
    splits = CelebA(root=str(root), image_size=8).load()
    got = batches(splits.train, 2)
    assert [len(b) for b in got] == [1, 1, 1]  # one tensor per batch: (x,)
    assert [b[0].shape for b in got] == [(2, 3, 8, 8), (2, 3, 8, 8), (1, 3, 8, 8)]
    seen = sorted(red_index(x) for b in got for x in b[0])
    assert seen == [0, 1, 2, 3, 4]


def test_celeba_data_root_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_celeba(tmp_path / "data", n_train=2, n_valid=0, n_test=1)
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    assert len(CelebA(image_size=8).load().train) == 2


def test_celeba_missing_files_name_both_layouts(tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        CelebA(root=str(tmp_path / "nowhere")).load()
    message = one_line_error(excinfo)
    assert str(tmp_path / "nowhere" / "celeba" / "list_eval_partition.txt") in message
    assert str(tmp_path / "nowhere" / "list_eval_partition.csv") in message
    assert "does not exist" in message and "download: true" in message and "jessicali9530/celeba-dataset" in message
    (tmp_path / "celeba").mkdir()
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(InputError) as excinfo:
        CelebA(root=str(tmp_path)).load()
    message = one_line_error(excinfo)
    assert "found only" in message and str(tmp_path / "celeba" / "img_align_celeba") in message


def test_celeba_partition_listing_a_missing_image(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, n_train=3, n_valid=0, n_test=1)
    (celeba_image_folder(root) / celeba_name(1)).unlink()
    with pytest.raises(InputError) as excinfo:
        CelebA(root=str(root)).load()
    message = one_line_error(excinfo)
    assert "000002.jpg" in message and str(celeba_image_folder(root)) in message


def test_celeba_bad_partition_files(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, n_train=2, n_valid=0, n_test=1)
    partition = root / "celeba" / "list_eval_partition.txt"
    partition.write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(InputError, match=r"line 2") as excinfo:
        CelebA(root=str(root)).load()
    assert str(partition) in one_line_error(excinfo)
    partition.write_text("000001.jpg 0\n000002.jpg 0\n")  # no test images at all
    with pytest.raises(InputError, match=r"no images of partition 2"):
        CelebA(root=str(root)).load()
    kaggle = make_celeba(tmp_path / "k", layout="kaggle", n_train=1, n_valid=0, n_test=1)
    (kaggle / "list_eval_partition.csv").write_text("name,split\n000001.jpg,0\n")
    with pytest.raises(InputError, match=r"header image_id,partition"):
        CelebA(root=str(kaggle)).load()


def test_celeba_unreadable_image_and_oversized_crop(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, n_train=2, n_valid=0, n_test=1)
    with pytest.raises(InputError, match=r"center_crop 200 is larger than image .*000001\.jpg \(178x218\)") as excinfo:
        CelebA(root=str(root), center_crop=200).load()
    one_line_error(excinfo)
    (celeba_image_folder(root) / celeba_name(0)).write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match=r"cannot read image .*000001\.jpg") as excinfo:
        CelebA(root=str(root)).load()
    one_line_error(excinfo)


def test_celeba_options_are_checked() -> None:
    for bad in ({"image_size": 0}, {"center_crop": 0}, {"test_split": "train"}, {"max_train": 0}, {"size": 64}):
        with pytest.raises(ValidationError):
            CelebA(**bad)


def test_celeba_download_failure_is_one_line_and_present_files_skip_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    calls: list[tuple] = []

    def failing(root: str, split: str, download: bool) -> None:
        calls.append((root, split, download))
        raise RuntimeError("The daily quota of the file img_align_celeba.zip is exceeded\nand this is line 2")

    monkeypatch.setattr(torchvision.datasets, "CelebA", failing)
    with pytest.raises(InputError) as excinfo:
        CelebA(root=str(tmp_path), download=True).load()
    message = one_line_error(excinfo)
    assert calls == [(str(tmp_path), "all", True)]
    assert str(tmp_path / "celeba") in message and "quota" in message and "line 2" in message
    make_celeba(tmp_path, n_train=2, n_valid=0, n_test=1)
    assert len(CelebA(root=str(tmp_path), download=True, image_size=8).load().train) == 2
    assert len(calls) == 1  # files present: no download


# -- CelebA's decoded-image cache -------------------------------------------------------------
def cache_files(root: Path) -> list[str]:
    """The cache files in the data root ``root`` (the one of $BBVI_KIT_DATA)."""
    folder = root / "bbvi_kit_cache"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def every_item(dataset: torch.utils.data.Dataset) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def test_celeba_cache_is_built_once_and_serves_the_decoded_pixels(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_celeba(tmp_path, n_train=5, n_valid=1, n_test=2)
    decoded = CelebA(root=str(root), image_size=16, cache=False).load()
    cached = CelebA(root=str(root), image_size=16).load()
    names = cache_files(root)
    assert len(names) == 4 and {n.rsplit(".", 1)[1] for n in names} == {"u8", "json"}
    assert any(n.startswith("celeba-train-16px-") for n in names) and any(n.startswith("celeba-test-16px-") for n in names)
    for split in ("train", "test"):
        dataset = getattr(cached, split)
        assert isinstance(dataset, ImageTensorDataset) and dataset.tensors[0].dtype == torch.uint8
        assert torch.equal(every_item(dataset), every_item(getattr(decoded, split)))  # bit for bit
    # The second load opens the files: not one JPEG is decoded (only the up-front check of image 0).
    from bbvi_kit.data import celeba

    calls: list[int] = []
    original = celeba.CelebAImages.pixels
    monkeypatch.setattr(celeba.CelebAImages, "pixels", lambda self, i: calls.append(i) or original(self, i))
    again = CelebA(root=str(root), image_size=16).load()
    assert calls == [0] and cache_files(root) == names
    assert torch.equal(every_item(again.train), every_item(cached.train))
    # The batches are the ones the decoding path gives, in the same order.
    for (a,), (b,) in zip(batches(again.train, 2), batches(decoded.train, 2), strict=True):
        assert torch.equal(a, b)


def test_celeba_cache_is_keyed_by_size_crop_and_images(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, n_train=4, n_valid=0, n_test=1)
    CelebA(root=str(root), image_size=8).load()
    CelebA(root=str(root), image_size=12).load()
    CelebA(root=str(root), image_size=8, max_train=2).load()
    CelebA(root=str(root), image_size=8, center_crop=148).load()
    train = [n for n in cache_files(root) if n.startswith("celeba-train") and n.endswith(".u8")]
    assert len(train) == 4 and any("-crop148-" in n for n in train)
    assert len(CelebA(root=str(root), image_size=8, max_train=2).load().train) == 2


def test_celeba_cache_left_half_built_or_truncated_is_built_again(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, n_train=3, n_valid=0, n_test=1)
    reference = every_item(CelebA(root=str(root), image_size=8).load().train)
    folder = root / "bbvi_kit_cache"
    (data,) = folder.glob("celeba-train-*.u8")
    # A killed build: the data file under its temporary name, no description beside it.
    data.rename(folder / f".{data.name}.tmp-99999")
    data.with_suffix(".json").unlink()
    assert torch.equal(every_item(CelebA(root=str(root), image_size=8).load().train), reference)
    # A cut file does not match its description.
    data.write_bytes(data.read_bytes()[:100])
    assert torch.equal(every_item(CelebA(root=str(root), image_size=8).load().train), reference)
    assert data.stat().st_size == reference.numel()


def test_celeba_cache_problems_are_one_line_and_leave_no_file(tmp_path: Path) -> None:
    root = make_celeba(tmp_path, n_train=3, n_valid=0, n_test=1)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would go")
    with pytest.raises(InputError, match=r"decoded-image cache|cache_dir") as excinfo:
        CelebA(root=str(root), image_size=8, cache_dir=str(blocked / "sub")).load()
    one_line_error(excinfo)
    # An unreadable image found while building: the error names it, and nothing looks complete.
    (celeba_image_folder(root) / celeba_name(2)).write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match=r"cannot read image .*000003\.jpg") as excinfo:
        CelebA(root=str(root), image_size=8).load()
    one_line_error(excinfo)
    assert not [n for n in cache_files(root) if n.startswith("celeba-train")]


# -- CIFAR-100 -------------------------------------------------------------------------------
def test_cifar100_reads_the_pickles_exactly(tmp_path: Path) -> None:
    root = make_cifar100(tmp_path, n_train=8, n_test=4)
    splits = CIFAR100(root=str(root), labels=True).load()
    assert splits.info.shape == (3, 32, 32) and splits.info.num_classes == 100
    assert (splits.info.num_train, splits.info.num_test) == (8, 4)
    images, labels = splits.train.tensors
    assert isinstance(splits.train, ImageTensorDataset) and images.dtype == torch.uint8
    x, y = splits.test[1]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
    expected = torch.from_numpy(cifar_pixels(9).astype(np.float32) / 255).reshape(3, 32, 32)
    assert torch.equal(x, expected)
    # Row-major planes: the first 1024 values are the red plane, row by row.
    levels = (x * 255).round().to(torch.uint8)
    assert int(levels[0, 0, 1]) == cifar_pixels(9)[1] and int(levels[0, 1, 0]) == cifar_pixels(9)[32]
    assert int(levels[1, 0, 0]) == cifar_pixels(9)[1024] and int(levels[2, 31, 31]) == cifar_pixels(9)[3071]
    assert int(y) == cifar_fine_label(9)
    assert labels.tolist() == [cifar_fine_label(i) for i in range(8)]


def test_cifar100_batches_are_float_and_options(tmp_path: Path) -> None:
    root = make_cifar100(tmp_path, n_train=8, n_test=4)
    splits = CIFAR100(root=str(root), max_train=5, max_test=2).load()
    assert (len(splits.train), len(splits.test)) == (5, 2) and splits.info.num_classes is None
    assert len(splits.train.tensors) == 1
    got = batches(splits.train, 2)
    assert [tuple(b[0].shape) for b in got] == [(2, 3, 32, 32), (2, 3, 32, 32), (1, 3, 32, 32)]
    assert all(len(b) == 1 and b[0].dtype == torch.float32 for b in got)
    rows = torch.cat([b[0] for b in got]).flatten(1)
    expected = {tuple((cifar_pixels(i).astype(np.float32) / 255).tolist()) for i in range(5)}
    assert {tuple(r.tolist()) for r in rows} == expected


def test_cifar100_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError) as excinfo:
        CIFAR100(root=str(tmp_path)).load()
    message = one_line_error(excinfo)
    assert str(tmp_path / "cifar-100-python" / "train") in message and "download: true" in message
    make_cifar100(tmp_path / "env")
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    assert len(CIFAR100().load().train) == 8
    (tmp_path / "env" / "cifar-100-python" / "test").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"cannot read .*cifar-100-python/test") as excinfo:
        CIFAR100().load()
    one_line_error(excinfo)


def test_cifar100_download_is_torchvisions_and_its_failure_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    calls: list[tuple] = []

    def fake(root: str, train: bool, download: bool) -> None:
        calls.append((root, train, download))
        if len(calls) == 1:
            raise OSError("[Errno -3] Temporary failure in name resolution")
        make_cifar100(Path(root), n_train=3, n_test=2)

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", fake)
    with pytest.raises(InputError, match=r"download into .* failed: OSError: .*name resolution") as excinfo:
        CIFAR100(root=str(tmp_path), download=True).load()
    one_line_error(excinfo)
    assert len(CIFAR100(root=str(tmp_path), download=True).load().train) == 3
    assert calls == [(str(tmp_path), True, True)] * 2


def test_image_tensor_dataset_converts_only_what_it_returns() -> None:
    images = torch.arange(4 * 2 * 2, dtype=torch.uint8).reshape(4, 1, 2, 2)
    data = ImageTensorDataset(images, torch.arange(4))
    assert isinstance(data, TensorDataset) and data.tensors[0].dtype == torch.uint8
    x, y = data[2]
    assert torch.equal(x, images[2].float() / 255) and int(y) == 2
    x, y = data[[3, 0]]
    assert x.shape == (2, 1, 2, 2) and torch.equal(x, images[[3, 0]].float() / 255) and y.tolist() == [3, 0]
    x, y = data[torch.tensor([1])]
    assert x.dtype == torch.float32 and y.tolist() == [1]
    assert data.tensors[0].dtype == torch.uint8  # not converted in place
    with pytest.raises(TypeError):
        ImageTensorDataset(images.float())


# -- MNIST and Fashion-MNIST -----------------------------------------------------------------
@pytest.mark.parametrize("plugin, folder", [(MNIST, "MNIST"), (FashionMNIST, "FashionMNIST")])
def test_mnist_family_reads_the_idx_files(tmp_path: Path, plugin: type, folder: str) -> None:
    root = make_mnist(tmp_path, name=folder, n_train=8, n_test=4)
    splits = plugin(root=str(root), labels=True).load()
    assert splits.info.shape == (1, 28, 28) and splits.info.num_classes == 10
    assert (splits.info.num_train, splits.info.num_test) == (8, 4)
    x, y = splits.test[1]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
    assert torch.equal(x[0], torch.from_numpy(mnist_pixels(9)).float() / 255) and int(y) == mnist_label(9)
    assert splits.train.tensors[1].tolist() == [mnist_label(i) for i in range(8)]
    small = plugin(root=str(root), max_train=3, max_test=2).load()
    assert (len(small.train), len(small.test)) == (3, 2) and small.info.num_classes is None
    got = batches(small.train, 2)
    assert [tuple(b[0].shape) for b in got] == [(2, 1, 28, 28), (1, 1, 28, 28)]
    assert all(len(b) == 1 for b in got)
    assert 0.0 <= float(min(b[0].min() for b in got)) and float(max(b[0].max() for b in got)) <= 1.0


@pytest.mark.parametrize("plugin, folder", [(MNIST, "MNIST"), (FashionMNIST, "FashionMNIST")])
def test_mnist_family_missing_files_listed(tmp_path: Path, plugin: type, folder: str) -> None:
    with pytest.raises(InputError) as excinfo:
        plugin(root=str(tmp_path)).load()
    message = one_line_error(excinfo)
    raw = tmp_path / folder / "raw"
    assert str(raw) in message and "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    make_mnist(tmp_path, name=folder)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(InputError) as excinfo:
        plugin(root=str(tmp_path)).load()
    message = one_line_error(excinfo)
    assert "missing t10k-labels-idx1-ubyte in" in message and "t10k-labels-idx1-ubyte.gz found: decompress" in message


def test_mnist_env_root_and_corrupt_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_mnist(tmp_path, gz=False)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert len(MNIST().load().train) == 8
    (tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x03abc")
    with pytest.raises(InputError, match=r"cannot read the idx files in .*MNIST/raw") as excinfo:
        MNIST().load()
    one_line_error(excinfo)


def test_mnist_download_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def failing(root: str, train: bool, download: bool) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://...")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", failing)
    with pytest.raises(InputError, match=r"dataset fashion_mnist: download into .* failed") as excinfo:
        FashionMNIST(root=str(tmp_path), download=True).load()
    one_line_error(excinfo)


# -- through a recipe and the command line ---------------------------------------------------
def test_a_recipe_trains_on_celeba_files(tmp_path: Path) -> None:
    from bbvi_kit.recipe import resolve
    from bbvi_kit.runner import run_recipe

    make_celeba(tmp_path / "data", n_train=4, n_valid=0, n_test=2)
    section = {"name": "celeba", "root": str(tmp_path / "data"), "image_size": 8, "center_crop": 148}
    recipe = {
        "model": {"name": "gaussian_vae", "latent_dim": 2, "hidden": [8]},
        "data": section,
        "training": {"batch_size": 2, "iterations": 3, "progress": False, "device": "cpu"},
    }
    history = run_recipe(resolve(recipe), tmp_path / "runs")
    assert len(history.metrics) == 3 and history.evals


def test_cli_reports_missing_dataset_in_one_line(tmp_path: Path, cli_run) -> None:  # noqa: ANN001
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {name: gaussian_vae}\n"
        f"data: {{name: celeba, root: {tmp_path / 'none'}}}\n"
        "training: {iterations: 1, progress: false, device: cpu}\n"
    )
    code, out, err = cli_run(["run", recipe, "--out", tmp_path / "runs"])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(tmp_path / "none") in lines[0]


# -- where a recipe may write: downloads and caches ---------------------------------------------
@pytest.fixture
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside the working folder and outside the data root."""
    return tmp_path_factory.mktemp("elsewhere")


def test_a_recipe_root_elsewhere_is_read_but_not_downloaded_into(elsewhere: Path, data_root_here: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    calls: list[str] = []
    real = torchvision.datasets.MNIST
    monkeypatch.setattr(torchvision.datasets, "MNIST", lambda root, train, download: calls.append(root) if download
                        else real(root, train=train, download=False))
    target = elsewhere / "mnist-root"
    with pytest.raises(InputError) as excinfo:
        MNIST(root=str(target), download=True).load()
    assert one_line_error(excinfo) == (
        f"dataset mnist: data.root {target} is outside the working folder and the data root {data_root_here}, and "
        f"a recipe does not download there by itself; allow it with 'bbvi-kit --allow-write {target} run ...'")
    assert calls == [] and not target.exists()  # nothing fetched, nothing made
    make_mnist(elsewhere / "present")  # reading from anywhere is fine
    assert len(MNIST(root=str(elsewhere / "present"), download=True).load().train) == 8


def test_allow_write_on_the_command_line_lets_a_recipe_download_there(elsewhere: Path, data_root_here: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    from bbvi_kit import cli

    real = torchvision.datasets.MNIST

    def fake(root: str, train: bool, download: bool) -> object:
        if download:  # what the downloader leaves: the four idx files
            make_mnist(Path(root), gz=False)
        return real(root, train=train, download=False)

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake)
    target = elsewhere / "mnist-root"
    try:  # the global option, before the command
        cli.main(["--allow-write", str(elsewhere), "plugins"])
    except SystemExit as exc:
        assert exc.code in (None, 0)
    splits = MNIST(root=str(target), download=True).load()
    assert len(splits.train) == 8 and (target / "MNIST" / "raw").is_dir()


@pytest.mark.parametrize("existed", [True, False])
def test_a_failed_download_leaves_nothing_behind(data_root_here: Path, monkeypatch: pytest.MonkeyPatch,
                                                 existed: bool) -> None:
    """torchvision makes ROOT/MNIST/raw before it fetches; when the fetch fails, what it made is
    removed (the root itself too when it did not exist before), and nothing that was there is."""
    import torchvision.datasets

    def failing(root: str, train: bool, download: bool) -> None:
        (Path(root) / "MNIST" / "raw").mkdir(parents=True)
        (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"half a file")
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", failing)
    root = data_root_here / "root"
    if existed:
        root.mkdir()
        (root / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="download into .* failed"):
        MNIST(root=str(root), download=True).load()
    assert (sorted(p.name for p in root.iterdir()) == ["notes.txt"]) if existed else not root.exists()


def test_the_celeba_cache_goes_to_the_data_root_not_to_a_root_the_recipe_names(
        elsewhere: Path, data_root_here: Path) -> None:
    root = make_celeba(elsewhere, n_train=2, n_valid=0, n_test=1)
    CelebA(root=str(root), image_size=8).load()
    assert cache_files(data_root_here) and not cache_files(root)
    with pytest.raises(InputError) as excinfo:
        CelebA(root=str(root), image_size=8, cache_dir=str(elsewhere / "cache")).load()
    assert "data.cache_dir" in one_line_error(excinfo) and "cache decoded images" in str(excinfo.value)
    assert not (elsewhere / "cache").exists()
