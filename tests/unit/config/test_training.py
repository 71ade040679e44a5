"""The ``training:`` section of a recipe (:class:`bbvi_kit.config.training.TrainingOptions`): its
defaults, the bounds of every number (the edge values accepted, one past them refused), the device
and seed checks with their messages, and no unknown key or infinite number accepted."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from bbvi_kit.config.training import TrainingOptions


def refused(**options: Any) -> str:
    """The validation message for ``options``; fails the test when they are accepted."""
    with pytest.raises(ValidationError) as excinfo:
        TrainingOptions(**options)
    return str(excinfo.value)


def test_the_defaults_are_the_documented_ones() -> None:
    t = TrainingOptions()
    assert (t.batch_size, t.epochs, t.iterations, t.seed, t.seeds, t.device) == (128, 10, None, 0, None, "auto")
    assert (t.record_every, t.eval_every, t.eval_batch_size, t.eval_train, t.num_workers) == (1, None, 512, False, 0)
    assert (t.grad_clip, t.flush_every, t.checkpoint_every, t.keep_checkpoints) == (None, 50, None, 2)
    assert (t.on_nonfinite, t.max_nonfinite_skips, t.warn_skipped_fraction) == ("stop", 100, 0.1)
    assert (t.nonfinite_check, t.validation, t.progress) == ("auto", "first_step", True)


@pytest.mark.parametrize("key, lowest, highest", [
    ("batch_size", 1, 10_000_000), ("epochs", 1, 1_000_000), ("iterations", 1, 10**10), ("seed", 0, 2**63 - 1),
    ("record_every", 1, 10**10), ("eval_every", 1, 10**10), ("eval_batch_size", 1, 10_000_000), ("num_workers", 0, 256),
    ("flush_every", 1, 10**10), ("checkpoint_every", 1, 10**10), ("keep_checkpoints", 0, 1000),
    ("max_nonfinite_skips", 0, 10**10),
])
def test_integer_options_take_their_bounds_and_nothing_past_them(key: str, lowest: int, highest: int) -> None:
    assert getattr(TrainingOptions(**{key: lowest}), key) == lowest
    assert getattr(TrainingOptions(**{key: highest}), key) == highest
    assert key in refused(**{key: lowest - 1})
    assert key in refused(**{key: highest + 1})


def test_the_skipped_fraction_is_a_share_from_zero_to_one() -> None:
    assert TrainingOptions(warn_skipped_fraction=0.0).warn_skipped_fraction == 0.0
    assert TrainingOptions(warn_skipped_fraction=1.0).warn_skipped_fraction == 1.0
    assert "warn_skipped_fraction" in refused(warn_skipped_fraction=1.01)
    assert "warn_skipped_fraction" in refused(warn_skipped_fraction=-0.01)


def test_the_gradient_clip_is_positive_and_finite() -> None:
    assert TrainingOptions(grad_clip=1e-8).grad_clip == 1e-8
    assert "grad_clip" in refused(grad_clip=0.0)
    assert "grad_clip" in refused(grad_clip=-1.0)
    assert "grad_clip" in refused(grad_clip=math.inf)
    assert "grad_clip" in refused(grad_clip=math.nan)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "cuda:0"])
def test_devices_torch_knows_are_accepted_without_a_gpu(device: str) -> None:
    assert TrainingOptions(device=device).device == device


@pytest.mark.parametrize("device", ["graphics-card", "cuda:x", "", "CPU ", "cuda:-1"])
def test_a_device_torch_does_not_know_is_refused_naming_it(device: str) -> None:
    message = refused(device=device)
    assert f"{device!r} is not a device: use 'auto', 'cpu', 'cuda', 'cuda:1', ..." in message


def test_seeds_are_distinct_non_negative_and_at_least_one() -> None:
    assert TrainingOptions(seeds=[0, 3, 2]).seeds == [0, 3, 2]  # the order is kept
    assert "seeds must be distinct" in refused(seeds=[1, 2, 1])
    assert "seeds" in refused(seeds=[])
    assert "seeds" in refused(seeds=[0, -1])
    assert "seeds" in refused(seeds=[2**63])


@pytest.mark.parametrize("key, value", [("on_nonfinite", "ignore"), ("nonfinite_check", "never"),
                                        ("validation", "never"), ("on_nonfinite", "STOP")])
def test_a_choice_outside_its_list_is_refused(key: str, value: str) -> None:
    assert key in refused(**{key: value})


def test_an_unknown_key_is_refused_not_dropped() -> None:
    message = refused(batchsize=64)
    assert "batchsize" in message and "Extra inputs are not permitted" in message


def test_a_fractional_count_is_refused() -> None:
    assert "batch_size" in refused(batch_size=64.5)
    assert TrainingOptions(batch_size=64.0).batch_size == 64
