"""The random number generators' states (:mod:`bbvi_kit.rng_state`): captured as plain data that
a weights-only ``torch.load`` accepts, and restored so that every draw of torch, NumPy and Python's
``random`` repeats exactly, cached Gaussian halves included; a malformed state is one line."""

from __future__ import annotations

import io
import random
from typing import Any, Callable

import numpy as np
import pytest
import torch

from bbvi_kit.errors import InputError
from bbvi_kit.rng_state import capture, restore


def draws() -> list[Any]:
    """A draw from each generator a run uses, Gaussian ones included (each caches a second value)."""
    return [torch.rand(3).tolist(), torch.randn(2).tolist(), np.random.rand(2).tolist(), np.random.standard_normal(),
            random.random(), random.gauss(0.0, 1.0), random.getrandbits(64)]


@pytest.fixture(autouse=True)
def _keep_global_generators() -> Any:
    """The test changes the global generators: put them back for the tests after it."""
    saved = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    yield
    torch.set_rng_state(saved[0])
    np.random.set_state(saved[1])
    random.setstate(saved[2])


def test_restore_repeats_every_draw_after_the_capture() -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    draws()
    state = capture()
    first = draws()
    draws()  # move on
    restore(state)
    assert draws() == first


def test_half_used_gaussian_pairs_are_captured_too() -> None:
    np.random.seed(5)
    random.seed(5)
    np.random.standard_normal()  # the legacy polar method caches the pair's second value
    random.gauss(0.0, 1.0)  # so does Python's gauss
    state = capture()
    assert state["numpy"]["has_gauss"] == 1 and state["python"]["gauss_next"] is not None
    expected = (np.random.standard_normal(), random.gauss(0.0, 1.0))
    restore(state)
    assert (np.random.standard_normal(), random.gauss(0.0, 1.0)) == expected


def test_the_state_survives_a_weights_only_save_and_load() -> None:
    torch.manual_seed(7)
    state = capture()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    first = draws()
    restore(loaded)
    assert draws() == first


def test_the_state_is_tensors_numbers_strings_and_lists_only() -> None:
    def plain(value: Any) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (torch.Tensor, int, float, str))

    state = capture()
    assert plain(state)
    assert set(state) == {"torch", "cuda", "numpy", "python"}
    assert state["numpy"]["kind"] == "MT19937" and state["numpy"]["keys"].shape == (624,)
    assert len(state["python"]["internal"]) == 625
    if not torch.cuda.is_available():
        assert state["cuda"] == []


def test_cuda_states_of_devices_this_process_does_not_see_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    state = capture()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)]  # saved on a machine with a GPU
    first = draws()
    restore(state)
    assert draws() == first


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda state: state.pop(key)


@pytest.mark.parametrize("damage", [
    _drop("torch"), _drop("numpy"), _drop("python"), _drop("cuda"),
    lambda s: s.__setitem__("torch", torch.zeros(3, dtype=torch.uint8)),  # wrong size
    lambda s: s.__setitem__("torch", "not a tensor"),
    lambda s: s["numpy"].__setitem__("kind", "PCG64"),
    lambda s: s["python"].__setitem__("internal", [1, 2, 3]),
    lambda s: s["python"].pop("version"),
], ids=["no torch", "no numpy", "no python", "no cuda", "short torch", "torch text",
        "other numpy kind", "short python state", "no python version"])
def test_a_malformed_state_is_one_input_error(damage: Callable[[dict[str, Any]], None]) -> None:
    state = capture()
    damage(state)
    with pytest.raises(InputError, match=r"^the checkpoint's random number generator states are malformed \(") as excinfo:
        restore(state)
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("damage", [
    lambda s: s["numpy"].__setitem__("keys", torch.zeros(5, dtype=torch.int64)),
    lambda s: s["numpy"].__setitem__("pos", 10**30),
], ids=["short numpy keys", "huge numpy position"])
def test_a_malformed_numpy_state_is_one_input_error_too(damage: Callable[[dict[str, Any]], None]) -> None:
    state = capture()
    damage(state)
    with pytest.raises(InputError, match=r"^the checkpoint's random number generator states are malformed \("):
        restore(state)
