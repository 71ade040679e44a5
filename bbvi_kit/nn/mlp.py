"""Building blocks for model plugins: activation specs and multilayer perceptrons."""

from __future__ import annotations

from typing import Any, Union

from pydantic import ValidationError
from torch import nn

from bbvi_kit.errors import InputError
from bbvi_kit.plugin import NestedOptionsError, describe_validation_error
from bbvi_kit.registry import activations

ActivationSpec = Union[str, dict[str, Any]]
"""An activation by name (``"tanh"``) or name plus options (``{"name": "generalized_soft_clipping",
"sharpness": 10}``)."""


def check_activation(spec: ActivationSpec) -> ActivationSpec:
    """Validate an activation spec (for use inside a pydantic validator: raises ``ValueError``)."""
    make_activation(spec, as_value_error=True)
    return spec


def make_activation(spec: ActivationSpec, *, as_value_error: bool = False) -> nn.Module:
    """Build the activation module an :data:`ActivationSpec` names.

    With ``as_value_error`` every problem is a :class:`NestedOptionsError` (for pydantic
    validators), whose keys are relative to the spec (``foo`` for ``{name: tanh, foo: 1}``).
    """
    try:
        if isinstance(spec, str):
            name, options = spec, {}
        elif isinstance(spec, dict) and isinstance(spec.get("name"), str):
            options = dict(spec)
            name = options.pop("name")
        else:
            raise InputError(f"an activation is a name or a mapping with a 'name' key, got {spec!r}")
        cls = activations.get(name)
        return cls(**options)
    except InputError as exc:
        if as_value_error:
            raise NestedOptionsError([("name" if isinstance(spec, dict) else "", str(exc))]) from None
        raise
    except ValidationError as exc:
        if as_value_error:
            raise NestedOptionsError(describe_validation_error(exc)) from None
        raise


def mlp(sizes: list[int], activation: ActivationSpec, *, final_activation: bool = False) -> nn.Sequential:
    """Linear layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` with ``activation`` between them."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or final_activation:
            layers.append(make_activation(activation))
    return nn.Sequential(*layers)


def deepen(widths: list[int], extra: int, *, at_start: bool = False) -> list[int]:
    """``widths`` with ``extra`` more layers of the width on the latent side: repeats of the last
    width (encoders, ``widths`` input side first) or, with ``at_start``, of the first (decoders,
    latent side first). The extra fully connected layers of the paper's depth study (Surendran
    et al., AISTATS 2025, Figure 5).

    >>> deepen([256, 128], 2)
    [256, 128, 128, 128]
    >>> deepen([128, 256], 1, at_start=True)
    [128, 128, 256]
    """
    if extra < 0:
        raise ValueError(f"extra must be >= 0, got {extra}")
    if extra == 0:
        return list(widths)
    if not widths:
        raise ValueError("extra fully connected layers repeat a hidden width, but there are none")
    if at_start:
        return [widths[0]] * extra + list(widths)
    return list(widths) + [widths[-1]] * extra
