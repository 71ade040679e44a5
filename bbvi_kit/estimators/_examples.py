"""What "per example" divides by: the entries of the model's data plate.

bbvi-kit reports losses and gradients in nats per example, so that they compare across batch
sizes. The **data plate** is the outermost plate around every observed sample site of the model
(``pyro.factor`` and ``pyro.deterministic`` statements are not observations and do not count);
the number of examples is its full size (a subsampled plate's ``size``, not the batch). A plate
nested inside it, such as a plate over pixels, does not multiply the count. A sequential plate
(``for i in pyro.plate(...)``) counts like a vectorised one.

A model or plugin can name the plate (``examples="data"``) or the number (``examples=1000``).
With no plate around every observation and no override, the divisor is 1 (values are per
batch) and a warning says so once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from bbvi_kit.errors import InputError
from bbvi_kit.estimators._sites import is_deterministic, is_factor

ExamplesSpec = str | int | None
"""How the divisor is chosen: ``None`` (the data plate, found), a plate name, or a number."""


@dataclass(frozen=True)
class Examples:
    """The divisor of per-example values and where it came from (written to ``run.json``)."""

    count: float
    plate: str | None
    rule: str

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "plate": self.plate, "rule": self.rule}


def observations(model_trace: Any) -> list[dict[str, Any]]:
    """The model's observed sample sites that are data: not factors, not deterministic sites."""
    return [s for s in model_trace.nodes.values()
            if s["type"] == "sample" and s["is_observed"] and not is_factor(s) and not is_deterministic(s)]


def _frame_size(frame: Any) -> float:
    return float(frame.full_size if frame.full_size is not None else frame.size)


def find_examples(model_trace: Any, spec: ExamplesSpec, ignore: frozenset[str] = frozenset()) -> Examples:
    """The :class:`Examples` of one model trace under ``spec`` (see the module docstring);
    plates named in ``ignore`` (bbvi-kit's own particle plate) are not data plates."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 1:
            raise InputError(f"examples: {spec} must be a positive number of examples")
        return Examples(float(spec), None, "given as a number")
    observed = observations(model_trace)
    stacks = [[f for f in s["cond_indep_stack"] if f.name not in ignore] for s in observed]
    if isinstance(spec, str):
        for stack in stacks:
            for frame in stack:
                if frame.name == spec:
                    return Examples(_frame_size(frame), spec, "the plate named by the model")
        raise InputError(f"examples: no plate named {spec!r} encloses an observed site of the model")
    if not stacks:
        return Examples(1.0, None, "no observed site: values are per batch")
    common = set.intersection(*({f.name for f in stack} for stack in stacks))
    # ``cond_indep_stack`` lists the outermost plate first.
    for frame in stacks[0]:
        if frame.name in common:
            return Examples(_frame_size(frame), frame.name, "the outermost plate around every observed site")
    return Examples(1.0, None, "no plate encloses every observed site: values are per batch")


def warn_if_per_batch(examples: Examples, spec: ExamplesSpec) -> None:
    """Say (once per call site) that values are per batch: no data plate found, none named."""
    if spec is None and examples.plate is None:
        warnings.warn(
            f"bbvi-kit: {examples.rule}; losses and gradient norms are not per example. Wrap the "
            "observations in pyro.plate, or name the data plate or the number of examples (examples=...)",
            UserWarning, stacklevel=3,
        )
