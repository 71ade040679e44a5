"""Where tensors live: the device a recipe names, and moving batches and saved states to it."""

from __future__ import annotations

from typing import Any, Callable

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` is CUDA when available, else CPU; anything else goes to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_device(args: tuple, device: torch.device) -> tuple:
    """The tensors of a batch's ``args`` on ``device`` (copied without blocking the host); other
    arguments as they are."""
    return tuple(a.to(device, non_blocking=True) if isinstance(a, torch.Tensor) else a for a in args)


def map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` with ``fn`` applied to every tensor in its dicts, lists and tuples (named tuples
    included)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(map_tensors(v, fn) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(v, fn) for v in value)
    return value


def to_device_tree(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in its dicts, lists and tuples moved to ``device``."""
    return map_tensors(value, lambda t: t.to(device))
