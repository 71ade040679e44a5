"""Multilayer perceptrons and activation specs (:mod:`bbvi_kit.nn.mlp`): the layers ``mlp`` builds
(parameter counts by hand, an activation between layers and after the last only when asked, a
fresh module each time), activation specs by name or with options and their one-line errors, and
the extra layers of :func:`deepen`."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

import bbvi_kit  # noqa: F401  (registers the built-in plugins)
from bbvi_kit.errors import InputError
from bbvi_kit.nn.activations import GeneralizedSoftClipping, ReLU, Tanh
from bbvi_kit.nn.mlp import check_activation, deepen, make_activation, mlp
from bbvi_kit.plugin import NestedOptionsError


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_an_mlp_alternates_linear_layers_and_activations_without_a_final_one() -> None:
    net = mlp([3, 5, 7, 2], "tanh")
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, Tanh, nn.Linear, Tanh, nn.Linear]
    assert [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)] == [(3, 5), (5, 7), (7, 2)]
    # weights + biases: 3*5+5 + 5*7+7 + 7*2+2
    assert n_params(net) == 20 + 42 + 16


def test_final_activation_adds_one_after_the_last_layer() -> None:
    net = mlp([4, 6, 1], "relu", final_activation=True)
    assert [type(m) for m in net] == [nn.Linear, ReLU, nn.Linear, ReLU]
    assert n_params(net) == 4 * 6 + 6 + 6 * 1 + 1
    out = net(torch.full((2, 4), -100.0))
    assert out.shape == (2, 1) and torch.all(out >= 0)


def test_two_sizes_give_one_linear_layer_and_one_size_none() -> None:
    single = mlp([3, 2], "tanh")
    assert [type(m) for m in single] == [nn.Linear] and n_params(single) == 8
    assert len(mlp([3, 2], "tanh", final_activation=True)) == 2
    empty = mlp([4], "tanh")
    assert len(empty) == 0
    x = torch.randn(2, 4)
    assert torch.equal(empty(x), x)


def test_each_activation_is_a_module_of_its_own_with_the_options_given() -> None:
    net = mlp([2, 3, 3, 1], {"name": "generalized_soft_clipping", "sharpness": 7})
    acts = [m for m in net if not isinstance(m, nn.Linear)]
    assert len(acts) == 2 and acts[0] is not acts[1]
    assert all(isinstance(a, GeneralizedSoftClipping) for a in acts)
    assert net(torch.randn(5, 2)).shape == (5, 1)


def test_make_activation_takes_a_name_or_a_mapping_and_leaves_the_spec_unchanged() -> None:
    assert isinstance(make_activation("tanh"), Tanh)
    spec = {"name": "relu"}
    assert isinstance(make_activation(spec), ReLU)
    assert spec == {"name": "relu"}  # the name is popped from a copy
    assert check_activation(spec) is spec


@pytest.mark.parametrize("spec", [5, None, ["tanh"], {"sharpness": 2}, {"name": 3}],
                         ids=["int", "none", "list", "no-name", "name-not-text"])
def test_a_spec_that_is_neither_a_name_nor_a_named_mapping_is_refused_in_one_line(spec: object) -> None:
    with pytest.raises(InputError, match="an activation is a name or a mapping with a 'name' key") as info:
        make_activation(spec)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_an_unknown_activation_names_itself_and_the_known_ones() -> None:
    with pytest.raises(InputError, match="unknown activation plugin 'swish'") as info:
        make_activation("swish")
    assert "tanh" in str(info.value) and "\n" not in str(info.value)


def test_bad_options_are_a_validation_error_naming_the_option() -> None:
    with pytest.raises(ValidationError, match="foo"):
        make_activation({"name": "tanh", "foo": 1})


def test_as_value_error_keys_each_problem_relative_to_the_spec() -> None:
    with pytest.raises(NestedOptionsError) as info:
        make_activation({"name": "tanh", "foo": 1}, as_value_error=True)
    assert info.value.problems == [("foo", "unknown key")]
    with pytest.raises(NestedOptionsError) as info:
        make_activation({"name": "generalized_soft_clipping", "sharpness": -1}, as_value_error=True)
    assert [k for k, _ in info.value.problems] == ["sharpness"]
    with pytest.raises(NestedOptionsError) as info:
        make_activation({"name": "swish"}, as_value_error=True)
    assert info.value.problems[0][0] == "name" and "swish" in info.value.problems[0][1]
    with pytest.raises(NestedOptionsError) as info:
        make_activation("swish", as_value_error=True)
    assert info.value.problems[0][0] == "" and str(info.value).startswith("unknown activation plugin 'swish'")


def test_check_activation_raises_a_value_error_for_pydantic_validators() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        check_activation({"name": "relu", "foo": 1})


def test_mlp_with_a_bad_activation_fails_before_building() -> None:
    with pytest.raises(InputError, match="unknown activation plugin 'nope'"):
        mlp([2, 3, 1], "nope")


def test_deepen_repeats_the_latent_side_width() -> None:
    assert deepen([256, 128], 2) == [256, 128, 128, 128]
    assert deepen([128, 256], 1, at_start=True) == [128, 128, 256]
    assert deepen([7], 3) == [7, 7, 7, 7]


def test_deepen_by_zero_returns_a_copy() -> None:
    widths = [4, 3]
    out = deepen(widths, 0)
    assert out == [4, 3] and out is not widths
    assert deepen([], 0) == []


def test_deepen_refuses_negative_extra_and_no_width_to_repeat() -> None:
    with pytest.raises(ValueError, match=r"extra must be >= 0, got -1"):
        deepen([4], -1)
    with pytest.raises(ValueError, match="repeat a hidden width, but there are none"):
        deepen([], 1)
