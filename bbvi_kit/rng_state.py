"""Every random number generator a run draws from, captured and restored as plain data.

Pyro draws from torch's global generator (and, in a few places, Python's ``random`` and NumPy's
global generator; ``pyro.set_rng_seed`` seeds all three); CUDA kernels draw from one generator
per device. :func:`capture` returns their states as tensors, numbers and lists only, so that a
checkpoint holding them loads with ``torch.load(weights_only=True)``; :func:`restore` puts them
back, after which every draw repeats exactly what the original run drew.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from bbvi_kit.errors import InputError


def capture() -> dict[str, Any]:
    """The states of torch (CPU and every CUDA device), NumPy and Python ``random``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": [int(v) for v in internal], "gauss_next": gauss_next},
    }


def restore(state: dict[str, Any]) -> None:
    """Set every generator to ``state`` (from :func:`capture`); a malformed state is an
    :class:`InputError`. CUDA states are restored for the devices this process sees."""
    try:
        torch.set_rng_state(state["torch"].cpu())
        cuda = state["cuda"]
        if torch.cuda.is_available():
            for device, cuda_state in enumerate(cuda[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state.cpu(), device)
        npy = state["numpy"]
        keys = npy["keys"].numpy().astype(np.uint32)
        np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
        py = state["python"]
        random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError, OverflowError) as exc:
        raise InputError(f"the checkpoint's random number generator states are malformed ({exc})") from None
