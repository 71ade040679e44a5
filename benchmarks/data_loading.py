"""The CelebA data path: JPEG decoding per epoch against the memory-mapped uint8 cache.

A copy of CelebA's on-disk format is generated in a temporary folder: aligned 178x218 JPEGs of
smooth random faces-sized images (about the size and decoding cost of CelebA's) and the official
partition file. One epoch of 64x64 batches of 256, shuffled, is timed

- decoding the JPEGs (``cache: false``), in the main process and with one worker per CPU;
- building the cache once (the first load with ``cache: true``);
- reading the cache (every later load): one gather per batch from the memory-mapped file.

Reported in images per second, with the time one batch of 256 takes, to set against a training
step's time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bbvi_kit.data import CelebA, batch_loader
from bbvi_kit.data.base import available_cpus

IMAGES = 2048
BATCH = 256


def write_celeba(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEGs of 178x218 in torchvision's CelebA layout under ``root``, all training
    images but the last eighth (test)."""
    rng = np.random.default_rng(seed)
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    lines = []
    for i in range(count):
        coarse = rng.integers(0, 256, size=(14, 12, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((178, 218), Image.BICUBIC)
        noisy = np.clip(np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, size=(218, 178, 3)), 0, 255)
        name = f"{i + 1:06d}.jpg"
        Image.fromarray(noisy.astype(np.uint8)).save(folder / name, quality=90)
        lines.append(f"{name} {0 if i < count * 7 // 8 else 2}")
    (root / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return root


def epoch_rate(dataset: Any, *, num_workers: int = 0, epochs: int = 1) -> float:
    """Images per second over ``epochs`` shuffled epochs of batches of 256 (the best epoch)."""
    loader = batch_loader(dataset, BATCH, shuffle=True, generator=torch.Generator().manual_seed(0),
                          num_workers=num_workers)
    best = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        count = sum(len(batch[0]) for batch in loader)
        best = max(best, count / (time.perf_counter() - start))
    return best


def run(*, smoke_run: bool = False) -> dict[str, Any]:
    count = 48 if smoke_run else IMAGES
    workers = available_cpus()
    with tempfile.TemporaryDirectory(prefix="bbvi-kit-celeba-") as tmp:
        root = write_celeba(Path(tmp), count)
        options = {"root": str(root), "image_size": 64}
        decoding = CelebA(cache=False, **options).load().train
        rates = {"decode, main process": epoch_rate(decoding)}
        if workers > 1 and not smoke_run:
            rates[f"decode, {workers} workers"] = epoch_rate(decoding, num_workers=workers)
        start = time.perf_counter()
        cached = CelebA(**options).load().train  # builds the cache
        build = len(cached) / (time.perf_counter() - start)
        cached = CelebA(**options).load().train  # opens it
        rates["memory-mapped cache"] = epoch_rate(cached, epochs=3)
    best_decode = max(v for k, v in rates.items() if k.startswith("decode"))
    return {
        "images": count,
        "train_images": len(cached),
        "workers": workers,
        "images_per_s": rates,
        "cache_build_images_per_s": build,
        "cache_vs_decode": rates["memory-mapped cache"] / best_decode,
        "batch_ms": {k: 1e3 * BATCH / v for k, v in rates.items()},
    }
