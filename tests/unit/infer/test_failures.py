"""How a failing step is reported (:mod:`bbvi_kit.infer.failures`): one line naming the step,
epoch and what failed, the head of the original message only (with the cause line of Pyro's
``Error while computing log_prob at site ...:``), and a distribution refusing a NaN or
out-of-support value told apart as a :class:`RefusedValueError`. The refused-value messages come
from torch itself, so a change in torch's wording shows up here."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from bbvi_kit.errors import BBVIError, TrainingError
from bbvi_kit.infer.failures import REFUSED_VALUE, RefusedValueError, failed_at


def torch_refusal() -> ValueError:
    try:
        torch.distributions.Normal(torch.tensor(float("nan")), torch.tensor(1.0), validate_args=True)
    except ValueError as exc:
        return exc
    raise AssertionError("torch accepted a NaN loc")


def pyro_site_refusal() -> Exception:
    def model() -> None:
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=torch.tensor(float("nan")))

    try:
        with pyro.validation_enabled(True):
            poutine.trace(model).get_trace().compute_log_prob()
    except Exception as exc:  # noqa: BLE001 - whatever Pyro raises is the input here
        return exc
    raise AssertionError("Pyro accepted a NaN observation")


def test_the_message_names_step_epoch_what_and_the_error_type() -> None:
    error = failed_at(12, 3, "guide", RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x2)"))
    assert type(error) is TrainingError
    assert str(error) == "step 12 (epoch 3): guide failed: RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x3 and 5x2)"
    assert error.exit_code == 1


def test_only_the_head_of_a_long_message_is_kept() -> None:
    error = failed_at(1, 0, "model", RuntimeError("\n  shape mismatch  \n\ntensor([[1., 2.],\n        [3., 4.]])\nTrace Shapes: ..."))
    assert str(error) == "step 1 (epoch 0): model failed: RuntimeError: shape mismatch"


def test_a_head_ending_in_a_colon_keeps_the_next_line_as_its_cause() -> None:
    exc = RuntimeError("Error while computing log_prob at site 'x':\nsome cause here\nTrace Shapes:")
    assert str(failed_at(4, 1, "step", exc)) == (
        "step 4 (epoch 1): step failed: RuntimeError: Error while computing log_prob at site 'x': some cause here")


def test_a_head_ending_in_a_colon_followed_by_a_tensor_dump_loses_only_the_colon() -> None:
    exc = RuntimeError("values out of range:\ntensor([1., 2.])")
    assert str(failed_at(2, 0, "model", exc)) == "step 2 (epoch 0): model failed: RuntimeError: values out of range"


def test_a_torch_refused_value_is_a_refused_value_error_in_one_line() -> None:
    exc = torch_refusal()
    assert REFUSED_VALUE in str(exc)  # the wording the module relies on
    error = failed_at(7, 2, "model", exc)
    assert isinstance(error, RefusedValueError) and isinstance(error, TrainingError) and isinstance(error, BBVIError)
    message = str(error)
    assert "\n" not in message and "tensor(" not in message
    assert message.startswith("step 7 (epoch 2): model failed: ValueError: Expected parameter loc")
    assert message.endswith("but found invalid values: nan")  # torch prints a 0-d value bare, on the next line


def test_a_value_refused_at_a_pyro_site_names_the_site_and_is_a_refused_value() -> None:
    exc = pyro_site_refusal()
    error = failed_at(5, 0, "step", exc)
    assert isinstance(error, RefusedValueError)
    message = str(error)
    assert "\n" not in message
    assert "'x'" in message and "but found invalid values" in message
    assert message.startswith("step 5 (epoch 0): step failed: ValueError: ")


def test_the_refusal_wording_in_another_error_type_is_not_a_refused_value() -> None:
    error = failed_at(1, 0, "model", RuntimeError(f"x {REFUSED_VALUE}"))
    assert type(error) is TrainingError


def test_a_value_error_without_the_refusal_wording_is_a_plain_training_error() -> None:
    error = failed_at(1, 0, "model", ValueError("Expected parameter scale to be positive"))
    assert type(error) is TrainingError
    assert str(error) == "step 1 (epoch 0): model failed: ValueError: Expected parameter scale to be positive"


def test_an_empty_message_still_gives_one_line_naming_the_step_and_type() -> None:
    message = str(failed_at(9, 4, "diagnostic noise", ZeroDivisionError()))
    assert message.startswith("step 9 (epoch 4): diagnostic noise failed: ZeroDivisionError")
    assert "\n" not in message


@pytest.mark.parametrize("text", ["a:\n\n  b  ", "a:\nb\nc"])
def test_blank_and_padded_lines_are_skipped_before_joining_the_cause(text: str) -> None:
    assert str(failed_at(1, 0, "m", OSError(text))) == "step 1 (epoch 0): m failed: OSError: a: b"
