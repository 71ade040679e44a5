"""Where tensors live (:mod:`bbvi_kit.devices`): the device a recipe names (``auto`` included),
and moving a batch's arguments and a saved state's nested tensors to a device. The moves are
checked on the ``meta`` device, which every build of torch has, so they run without a GPU."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from bbvi_kit.devices import resolve_device, to_device, to_device_tree

META = torch.device("meta")


@pytest.mark.parametrize("available, expected", [(True, "cuda"), (False, "cpu")])
def test_auto_is_cuda_exactly_when_cuda_is_available(monkeypatch: pytest.MonkeyPatch, available: bool,
                                                     expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert resolve_device("auto") == torch.device(expected)


@pytest.mark.parametrize("name, kind, index", [("cpu", "cpu", None), ("cuda", "cuda", None), ("cuda:1", "cuda", 1)])
def test_a_named_device_is_taken_as_named_without_looking_for_cuda(monkeypatch: pytest.MonkeyPatch, name: str,
                                                                   kind: str, index: int | None) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device = resolve_device(name)
    assert (device.type, device.index) == (kind, index)


def test_a_torch_device_is_passed_through() -> None:
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_a_name_that_is_no_device_is_refused_by_torch() -> None:
    with pytest.raises(RuntimeError):
        resolve_device("graphics-card")


def test_a_batch_moves_its_tensors_and_keeps_its_other_arguments() -> None:
    x, labels, scale, name = torch.ones(2, 3), torch.tensor([0, 1]), 0.5, "batch"
    moved = to_device((x, labels, scale, name), META)
    assert isinstance(moved, tuple) and len(moved) == 4
    assert [a.device.type for a in moved[:2]] == ["meta", "meta"]
    assert moved[0].shape == (2, 3) and moved[1].dtype == torch.int64
    assert moved[2] is scale and moved[3] is name
    assert x.device.type == "cpu"  # the batch itself is not changed


def test_a_tensor_already_on_the_device_is_the_same_tensor() -> None:
    x = torch.ones(2)
    (same,) = to_device((x,), torch.device("cpu"))
    assert same is x


def test_a_saved_state_moves_every_nested_tensor_and_keeps_its_containers() -> None:
    state = {"step": 3, "sum": torch.zeros(()), "groups": [torch.ones(2), ("phi", torch.ones(1, 1))],
             "ordered": OrderedDict(a=torch.ones(1)), "none": None}
    moved = to_device_tree(state, META)
    assert set(moved) == set(state)
    assert moved["step"] == 3 and moved["none"] is None
    assert moved["sum"].device == META and moved["sum"].shape == ()
    assert isinstance(moved["groups"], list) and isinstance(moved["groups"][1], tuple)
    assert moved["groups"][0].device == META and moved["groups"][1][0] == "phi"
    assert moved["groups"][1][1].device == META and moved["groups"][1][1].shape == (1, 1)
    assert moved["ordered"]["a"].device == META
    assert state["sum"].device.type == "cpu" and state["groups"][0].device.type == "cpu"


def test_a_leaf_that_is_not_a_container_is_returned_as_it_is() -> None:
    marker = object()
    assert to_device_tree(marker, META) is marker
    assert to_device_tree("text", META) == "text"
