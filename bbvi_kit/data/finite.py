"""Non-finite values in the data that evaluations and diagnostics read.

A training step on a batch holding NaN gets a non-finite loss, which ``training.on_nonfinite``
already handles (stop, or skip the update). An evaluation or a diagnostic averages over a whole
split: one NaN example would make the average NaN, or make a distribution refuse the batch. Those
passes therefore look at each batch's floating-point tensors first and follow the same policy:
``stop`` names the split and the first bad example (its index in the split) in a one-line
:class:`~bbvi_kit.errors.TrainingError`; ``skip`` leaves the bad examples out and counts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch.utils.data import Dataset

from bbvi_kit.data.base import as_args, batch_loader
from bbvi_kit.errors import TrainingError


def nonfinite_rows(args: tuple) -> torch.Tensor | None:
    """A bool tensor, true for each example (row of the batch) with a NaN or infinite value in
    any floating-point tensor of ``args``; ``None`` when no tensor can hold one (integers only)."""
    n = len(args[0])
    bad = None
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dim() > 0 and a.shape[0] == n:
            rows = ~torch.isfinite(a.reshape(n, -1)).all(dim=1)
            bad = rows if bad is None else bad | rows
    return bad


@dataclass
class FiniteExamples:
    """Filters the in-order batches of one split: see the module's docstring.

    ``split`` names the split in messages (``"test"``, ``"train"``); ``skip`` is
    ``training.on_nonfinite == "skip"``; :attr:`left_out` counts the examples left out. Batches
    in the split's order (``shuffle=False``) give each example's index by counting; for shuffled
    ones, pass the split as ``shuffled_from``, and its first bad example is searched for in order
    when one is found (only on the way to the error).
    """

    split: str
    skip: bool
    shuffled_from: Dataset | None = None
    left_out: int = 0

    def __call__(self, batches: Iterable[tuple]) -> Iterator[tuple]:
        start = 0
        for args in batches:
            n = len(args[0])
            bad = nonfinite_rows(args)
            if bad is not None and bool(bad.any()):  # one host read per batch: evaluations are not the hot loop
                if not self.skip:
                    if self.shuffled_from is not None:
                        in_order = batch_loader(self.shuffled_from, n, shuffle=False)
                        list(FiniteExamples(self.split, skip=False)(as_args(b) for b in in_order))
                    first = start + int(bad.nonzero()[0, 0])
                    raise TrainingError(
                        f"the {self.split} split holds a non-finite value at example {first} (counted from 0 "
                        "in the split's order); fix the data, or set training.on_nonfinite: skip to leave such "
                        "examples out of evaluations and count them"
                    )
                keep = ~bad
                self.left_out += int(bad.sum())
                args = tuple(a[keep] if isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == n else a
                             for a in args)
            start += n
            if len(args[0]):
                yield args
