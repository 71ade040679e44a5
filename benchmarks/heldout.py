"""Held-out IWAE evaluation with K_eval = 5000 importance samples: throughput and memory.

The ``heldout_iwae`` diagnostic draws K_eval samples per test example in chunks of
``chunk_size``, combining chunks with a running log-sum-exp, so its memory is that of one
chunk whatever K_eval is. This measures it on the MLP VAE (784-400-20) of the training-step
benchmark: test examples and importance samples per second, and how far resident memory rises,
for K_eval in {500, 5000} and chunk sizes {100, 1000}. ``python -m benchmarks.heldout --memory``
is the child process that measures the memory.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import pyro
import torch

from benchmarks.harness import measure_in_child, peak_memory, synchronize
from benchmarks.training_step import CASES, build_vae, make_data, smoke
from bbvi_kit.diagnostics.heldout import HeldOutIWAE
from bbvi_kit.devices import resolve_device

CONFIGS = [(500, 100), (5000, 100), (5000, 1000)]
EXAMPLES = 128


def _setup(smoke_run: bool, examples: int) -> tuple[Any, torch.Tensor]:
    case = smoke(CASES[0]) if smoke_run else CASES[0]
    device = resolve_device("auto")
    vae = build_vae(case).to(device).eval()
    x = make_data(case, -(-examples // case.batch_size))[:examples].to(device)
    return vae, x


def evaluate(vae: Any, x: torch.Tensor, num_samples: int, chunk_size: int) -> torch.Tensor:
    """Per-example -IWAE_K of the batch ``x``, as the diagnostic computes it."""
    diagnostic = HeldOutIWAE(num_samples=num_samples, chunk_size=chunk_size)
    with torch.no_grad():
        _, iwae = diagnostic.per_example(vae.model, vae.guide, (x,), 1)
    return -iwae


def _configs(smoke_run: bool) -> list[tuple[int, int]]:
    return [(k // 100, c // 100) for k, c in CONFIGS] if smoke_run else CONFIGS


def run(*, smoke_run: bool = False) -> list[dict[str, Any]]:
    examples = 8 if smoke_run else EXAMPLES
    vae, x = _setup(smoke_run, examples)
    memory = measure_in_child("benchmarks.heldout", "--memory", *(["--smoke"] if smoke_run else []))
    rows = []
    for (num_samples, chunk), peak in zip(_configs(smoke_run), memory, strict=True):
        with pyro.validation_enabled(False):
            evaluate(vae, x[:2], num_samples, chunk)  # warm-up
            synchronize()
            start = time.perf_counter()
            evaluate(vae, x, num_samples, chunk)
            synchronize()
            seconds = time.perf_counter() - start
        rows.append({"num_samples": num_samples, "chunk_size": chunk, "examples": examples, "seconds": seconds,
                     "examples_per_s": examples / seconds, "samples_per_s": examples * num_samples / seconds,
                     **peak})
    return rows


def _memory_probe(smoke_run: bool) -> list[dict[str, float]]:
    """In a fresh process: the rise of resident memory during each configuration's evaluation."""
    examples = 8 if smoke_run else EXAMPLES
    vae, x = _setup(smoke_run, examples)
    rows = []
    with pyro.validation_enabled(False):
        evaluate(vae, x[:2], 2, 2)  # lazy imports and first allocations, not counted
        for num_samples, chunk in _configs(smoke_run):
            rows.append(peak_memory(lambda: evaluate(vae, x, num_samples, chunk)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", action="store_true", required=True)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    print(json.dumps(_memory_probe(args.smoke)))


if __name__ == "__main__":
    main()
