"""``cpu_cuda_agreement.py WORK [--devices cpu cuda] [--tolerance 1e-3]``: the quickstart recipe's
run on two devices, with the same latent noise, gives the same per-step losses within float
tolerance (scripts/device-check).

CPU and CUDA draw different random numbers from the same seed, so two plain runs differ by Monte
Carlo noise (about 3.5% after two quickstart epochs). Here every standard normal draw of
``torch.distributions.Normal.rsample`` (the guide's reparameterised noise) is taken from the CPU
stream and moved to the device, in both runs: then the runs share their noise and batches, and
what is left is the arithmetic of the two devices. Everything else is the product's own run
(``bbvi-kit run``, in this process).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributions.normal as torch_normal


def _noise_from_cpu(shape: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, dtype=dtype).to(device)


def run_losses(work: Path, device: str, iterations: int) -> list[float]:
    from bbvi_kit.cli import main as bbvi_kit

    out = work / device.replace(":", "-")
    try:
        bbvi_kit(["run", "recipes/quickstart.yaml", "training.progress=false", "training.seeds=[0]",
                  f"training.iterations={iterations}", f"training.device={device}", "--out", str(out)])
    except SystemExit as exc:
        if exc.code:
            raise
    (path,) = sorted(out.rglob("metrics.csv"))
    with open(path, newline="") as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--devices", nargs=2, default=["cpu", "cuda"])
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args(argv)
    torch_normal._standard_normal = _noise_from_cpu  # type: ignore[attr-defined]  # (module docstring)
    a, b = (run_losses(args.work / f"run{i}", device, args.iterations) for i, device in enumerate(args.devices))
    ok, message = compare(a, b, args.tolerance)
    print(f"{args.devices[0]} and {args.devices[1]}: {message}")
    return 0 if ok else 1


def compare(a: list[float], b: list[float], tolerance: float) -> tuple[bool, str]:
    """Whether the losses ``a`` and ``b`` agree within ``tolerance`` (relative to max(1, |a|)),
    and a line saying how far apart they are."""
    if len(a) != len(b) or not a:
        return False, f"different numbers of rows: {len(a)} and {len(b)}"
    worst = max(abs(x - y) / max(1.0, abs(x)) for x, y in zip(a, b))
    return worst <= tolerance, f"{len(a)} steps, largest relative loss difference {worst:.3g} (tolerance {tolerance:g})"


if __name__ == "__main__":
    sys.exit(main())
