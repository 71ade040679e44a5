"""Activation plugins: generalized soft-clipping's properties, the others against torch, the registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

import bbvi_kit  # noqa: F401  (registers the built-in plugins)
from bbvi_kit.errors import InputError
from bbvi_kit.nn import GeneralizedSoftClipping, make_activation, soft_clip
from bbvi_kit.nn.activations import ELU, ReLU, Softplus, Tanh
from bbvi_kit.registry import activations

# (s1, s2, sharpness): the paper's defaults, a symmetric band, a non-representable band, sharp ones.
PARAMS = [
    (0.0, 50.0, 5.0),
    (-1.0, 1.0, 1.0),
    (-0.3, 0.7, 3.0),
    (-2.0, 3.0, 50.0),
    (0.0, 1.0, 1e3),
]
PARAM_IDS = [f"s1={a}-s2={b}-s={s:g}" for a, b, s in PARAMS]


def closed_form(x: torch.Tensor, s1: float, s2: float, s: float) -> torch.Tensor:
    """(1/s) log((1 + e^{s(x - s1)}) / (1 + e^{s(x - s2)})) + s1, literally, in float64."""
    x = x.double()
    return torch.log((1 + torch.exp(s * (x - s1))) / (1 + torch.exp(s * (x - s2)))) / s + s1


@pytest.mark.parametrize(("s1", "s2", "s"), PARAMS[:4], ids=PARAM_IDS[:4])
def test_soft_clip_matches_closed_formula(s1, s2, s):
    # moderate x: s * |x - s_i| stays far below exp's float64 overflow (~709)
    x = torch.linspace(s1 - 10.0 / s - 2.0, s2 + 10.0 / s + 2.0, 2001, dtype=torch.float64)
    expected = closed_form(x, s1, s2, s)
    got64 = soft_clip(x, s1, s2, s)
    assert got64.dtype == torch.float64
    torch.testing.assert_close(got64, expected, rtol=1e-9, atol=1e-9)
    got32 = soft_clip(x.float(), s1, s2, s)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), expected, rtol=1e-5, atol=1e-5)
    # the module computes the same function
    module = GeneralizedSoftClipping(s1=s1, s2=s2, sharpness=s)
    torch.testing.assert_close(module(x), got64)


def test_default_options_are_the_papers():
    o = GeneralizedSoftClipping().options
    assert (o.s1, o.s2, o.sharpness) == (0.0, 50.0, 5.0)


def _bounded_grid(s1: float, s2: float, dtype: torch.dtype) -> torch.Tensor:
    return torch.cat([
        torch.linspace(-1e4, 1e4, 200_001, dtype=dtype),
        torch.tensor([-1e4, -1e3, -1.0, 0.0, 1.0, 1e3, 1e4], dtype=dtype),
        torch.linspace(s1 - 1.0, s2 + 1.0, 10_001, dtype=dtype),
    ])


SHARPNESS = [1.0, 5.0, 1e2, 1e4]
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("s", SHARPNESS)
@pytest.mark.parametrize(("s1", "s2"), [(0.0, 50.0), (2.5, 2.75), (-1.0, 1.0), (-0.3, 0.7)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_soft_clip_is_bounded_up_to_rounding(s1, s2, s, dtype):
    """s1 <= f(x) <= s2 on [-1e4, 1e4], up to the rounding error of x itself."""
    x = _bounded_grid(s1, s2, dtype)
    y = soft_clip(x, s1, s2, s)
    assert torch.isfinite(y).all()
    tol = 4 * torch.finfo(dtype).eps * x.abs().clamp(min=1.0)
    assert (y >= s1 - tol).all(), f"min {y.min().item()!r} below s1={s1}"
    assert (y <= s2 + tol).all(), f"max {y.max().item()!r} above s2={s2}"
    # strictly inside the band near its middle
    mid = soft_clip(torch.tensor([(s1 + s2) / 2], dtype=dtype), s1, s2, s)
    assert s1 < mid.item() < s2


@pytest.mark.parametrize("s", SHARPNESS)
@pytest.mark.parametrize(("s1", "s2"), [(0.0, 50.0), (2.5, 2.75)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_soft_clip_is_bounded_exactly_for_dyadic_bounds(s1, s2, s, dtype):
    """Mathematically f maps into the open (s1, s2); in floating point the tails round onto the
    bounds themselves, so the exact check is on the closed interval. With bounds that are short
    binary fractions (the paper's 0 and 50) x - s_i is exact on this grid and so is the bound."""
    x = _bounded_grid(s1, s2, dtype)
    y = soft_clip(x, s1, s2, s)
    assert y.min() >= torch.tensor(s1, dtype=dtype) and y.max() <= torch.tensor(s2, dtype=dtype)


@pytest.mark.parametrize(("s1", "s2"), [(-1.0, 1.0), (-0.3, 0.7)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_soft_clip_is_bounded_exactly(s1, s2, dtype):
    x = _bounded_grid(s1, s2, dtype)
    y = soft_clip(x, s1, s2, 5.0)
    lo, hi = torch.tensor(s1, dtype=dtype), torch.tensor(s2, dtype=dtype)  # the bounds as stored
    assert y.min() >= lo and y.max() <= hi, (y.min().item(), y.max().item())


def test_soft_clip_saturates_for_huge_inputs():
    x = torch.tensor([1e6, 1e7, 3e7, 3e7 + 2, 1e9, 1e30], dtype=torch.float32)
    y = soft_clip(x, -1.0, 1.0, 5.0)
    torch.testing.assert_close(y, torch.ones_like(y), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("s1", "s2", "s"), PARAMS, ids=PARAM_IDS)
def test_soft_clip_is_1_lipschitz(s1, s2, s):
    width = s2 - s1
    x = torch.linspace(s1 - width - 5.0, s2 + width + 5.0, 20_001, dtype=torch.float64)
    y = soft_clip(x, s1, s2, s)
    # finite differences: |f(a) - f(b)| <= |a - b|
    slopes = (y[1:] - y[:-1]).abs() / (x[1:] - x[:-1])
    assert slopes.max() <= 1.0 + 1e-9
    # random pairs far apart too
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(10_000, generator=g, dtype=torch.float64) - 0.5) * 4 * (width + 5)
    b = (torch.rand(10_000, generator=g, dtype=torch.float64) - 0.5) * 4 * (width + 5)
    assert ((soft_clip(a, s1, s2, s) - soft_clip(b, s1, s2, s)).abs() <= (a - b).abs() + 1e-12).all()
    # autograd: 0 <= f'(x) <= 1 (f is increasing)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(soft_clip(xg, s1, s2, s).sum(), xg)
    assert torch.isfinite(grad).all()
    assert grad.min() >= 0.0 and grad.max() <= 1.0
    # f' is exactly sigmoid(s(x - s1)) - sigmoid(s(x - s2))
    expected = torch.sigmoid(s * (x - s1)) - torch.sigmoid(s * (x - s2))
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("s1", "s2", "s"), PARAMS, ids=PARAM_IDS)
def test_soft_clip_second_derivative_is_bounded_by_s_over_4(s1, s2, s):
    width = s2 - s1
    x = torch.linspace(s1 - width - 3.0, s2 + width + 3.0, 20_001, dtype=torch.float64)
    # add points right at the kinks, where |f''| is largest
    x = torch.cat([x, torch.tensor([s1, s2, s1 + 1e-3 / s, s2 - 1e-3 / s], dtype=torch.float64)])
    x.requires_grad_(True)
    (first,) = torch.autograd.grad(soft_clip(x, s1, s2, s).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), x)
    assert torch.isfinite(second).all()
    assert second.abs().max() <= s / 4 * (1 + 1e-9)
    # the bound is attained up to the other kink's (tiny) contribution when the band is wide
    if s * width > 20:
        assert second.abs().max() >= 0.99 * s / 4


@pytest.mark.parametrize(("s1", "s2"), [(0.0, 50.0), (-1.0, 1.0), (-0.3, 0.7)])
def test_soft_clip_approaches_hard_clip_as_s_grows(s1, s2):
    x = torch.linspace(s1 - 5.0, s2 + 5.0, 10_001, dtype=torch.float64)
    hard = x.clamp(s1, s2)
    errors = {}
    for s in (1.0, 10.0, 100.0, 1e3):
        errors[s] = (soft_clip(x, s1, s2, s) - hard).abs().max().item()
    # the largest gap is log(2)/s, at the kinks
    assert errors[1e3] < 1e-2
    assert errors[1e3] <= math.log(2) / 1e3 * (1 + 1e-6)
    assert errors[1.0] > errors[10.0] > errors[100.0] > errors[1e3]
    # float32, too
    y32 = soft_clip(x.float(), s1, s2, 1e3)
    assert (y32.double() - hard).abs().max() < 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("s", [5.0, 1e4])
def test_soft_clip_gradients_finite_at_extremes(s, dtype):
    x = torch.tensor([-1e6, -1e3, -1.0, 0.0, 0.5, 1.0, 1e3, 1e6], dtype=dtype, requires_grad=True)
    y = soft_clip(x, 0.0, 1.0, s)
    assert torch.isfinite(y).all()
    (first,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    assert torch.isfinite(first).all()
    assert first[0] == 0 and first[-1] == 0  # flat far outside the band
    (second,) = torch.autograd.grad(first.sum(), x)
    assert torch.isfinite(second).all()
    # the module path with the largest allowed sharpness
    module = GeneralizedSoftClipping(s1=0.0, s2=1.0, sharpness=1e4)
    xm = x.detach().clone().requires_grad_(True)
    module(xm).pow(2).sum().backward()
    assert torch.isfinite(xm.grad).all()


def test_soft_clip_options_validation():
    with pytest.raises(ValidationError, match="s1 must be smaller than s2"):
        GeneralizedSoftClipping(s1=1.0, s2=1.0)
    with pytest.raises(ValidationError, match="s1 must be smaller than s2"):
        GeneralizedSoftClipping(s1=2.0, s2=1.0)
    for bad in (0.0, -1.0):
        with pytest.raises(ValidationError):
            GeneralizedSoftClipping(sharpness=bad)
    with pytest.raises(ValidationError):
        GeneralizedSoftClipping(sharpness=1e5)  # above the documented maximum 1e4
    with pytest.raises(ValidationError):
        GeneralizedSoftClipping(s0=1.0)  # unknown option
    GeneralizedSoftClipping(s1=-1.0, s2=1.0, sharpness=1e4)  # fine


# -- the other activations match torch -------------------------------------------------------
X = torch.linspace(-6.0, 6.0, 1001, dtype=torch.float64)


@pytest.mark.parametrize(
    ("module", "reference"),
    [
        (ReLU(), F.relu),
        (Softplus(), F.softplus),
        (Softplus(beta=2.5), lambda x: F.softplus(x, beta=2.5)),
        (Tanh(), torch.tanh),
        (ELU(), F.elu),
        (ELU(alpha=0.3), lambda x: F.elu(x, alpha=0.3)),
    ],
    ids=["relu", "softplus", "softplus-beta2.5", "tanh", "elu", "elu-alpha0.3"],
)
def test_standard_activations_match_torch(module, reference):
    torch.testing.assert_close(module(X), reference(X), rtol=0, atol=0)
    torch.testing.assert_close(module(X.float()), reference(X.float()), rtol=0, atol=0)


def test_standard_activation_options_validated():
    with pytest.raises(ValidationError):
        Softplus(beta=0.0)
    with pytest.raises(ValidationError):
        ELU(alpha=-1.0)
    with pytest.raises(ValidationError):
        ReLU(inplace=True)  # no options at all


# -- the registry ----------------------------------------------------------------------------
def test_builtin_activations_registered():
    assert {"generalized_soft_clipping", "relu", "softplus", "tanh", "elu"} <= set(activations.names())


@pytest.mark.parametrize("name", activations.names())
def test_every_registered_activation_builds_and_maps_shapes(name):
    cls = activations.get(name)
    module = cls()
    assert isinstance(module, torch.nn.Module)
    g = torch.Generator().manual_seed(0)
    for shape in [(7,), (3, 5), (2, 3, 4, 4)]:
        x = torch.randn(shape, generator=g) * 10
        y = module(x)
        assert isinstance(y, torch.Tensor)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.isfinite(y).all()
    # make_activation by name gives the same kind of module
    assert type(make_activation(name)) is cls


def test_make_activation_by_name_and_mapping():
    tanh = make_activation("tanh")
    assert isinstance(tanh, Tanh)
    gsc = make_activation({"name": "generalized_soft_clipping", "sharpness": 10})
    assert isinstance(gsc, GeneralizedSoftClipping)
    assert gsc.options.sharpness == 10.0 and gsc.options.s1 == 0.0 and gsc.options.s2 == 50.0
    x = torch.linspace(-3, 60, 101)
    torch.testing.assert_close(gsc(x), soft_clip(x, 0.0, 50.0, 10.0))
    # the spec mapping is not consumed
    spec = {"name": "elu", "alpha": 0.5}
    make_activation(spec)
    assert spec == {"name": "elu", "alpha": 0.5}


def test_make_activation_rejects_unknown_names_listing_known_ones():
    with pytest.raises(InputError) as info:
        make_activation("tahn")
    message = str(info.value)
    assert "tahn" in message
    for known in ("elu", "generalized_soft_clipping", "relu", "softplus", "tanh"):
        assert known in message
    assert "did you mean 'tanh'" in message


def test_make_activation_rejects_bad_specs():
    with pytest.raises(InputError):
        make_activation({"sharpness": 10})  # no name
    with pytest.raises(InputError):
        make_activation(42)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        make_activation({"name": "generalized_soft_clipping", "s1": 5.0, "s2": 1.0})
    # as a pydantic validator would use it: ValueError, on one line
    with pytest.raises(ValueError) as info:
        make_activation({"name": "generalized_soft_clipping", "sharpness": -1}, as_value_error=True)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unknown activation plugin"):
        make_activation("nope", as_value_error=True)
