"""Numbers and messages as the findings and tables write them (:mod:`bbvi_kit.results.words`):
significant digits, integers plainly, a missing value as a dash, messages on one line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bbvi_kit.results.words import first_line, num, one_line, short, to_float


@pytest.mark.parametrize("value", [None, "", math.nan, np.float64("nan"), np.float32("nan")])
def test_a_missing_value_is_a_dash(value: object) -> None:
    assert num(value) == "—"


@pytest.mark.parametrize("value, text", [
    (True, "true"), (False, "false"),  # not 1 and 0
    (7, "7"), (np.int64(-12), "-12"), (10**20, "100000000000000000000"),  # integers in full
    (3.0, "3"), (-0.0, "0"), (123456789.0, "123456789"), (np.float32(2.0), "2"),  # integral floats plainly
    (1e15, "1e+15"),  # too large to write out
    (math.inf, "inf"), (-math.inf, "-inf"),
    (0.1234567891, "0.123457"), (1234567.5, "1.23457e+06"), (1.5e-7, "1.5e-07"),
    ("2.50", "2.5"), ("abc", "abc"),  # a numeric string is a number; another string is itself
])
def test_numbers_are_written_with_six_significant_digits_and_integers_plainly(value: object, text: str) -> None:
    assert num(value) == text


def test_the_number_of_digits_is_chosen() -> None:
    assert num(math.pi, digits=2) == "3.1"
    assert num(math.pi, digits=10) == "3.141592654"


def test_short_is_three_significant_digits() -> None:
    assert short(math.pi) == "3.14" and short(0.000123456) == "0.000123" and short(12345.6) == "1.23e+04"
    assert short(None) == "—" and short(42) == "42"


def test_one_line_collapses_white_space() -> None:
    assert one_line("  a\n\tb   c \r\n") == "a b c"
    assert one_line(ValueError("bad\nvalue")) == "bad value"


def test_one_line_cuts_at_the_limit_with_an_ellipsis() -> None:
    assert one_line("x" * 10, limit=10) == "x" * 10
    cut = one_line("x" * 11, limit=10)
    assert cut == "xxxxxxx..." and len(cut) == 10


def test_first_line_is_the_first_line_with_text() -> None:
    message = "\n   \nshape mismatch at site z\n  Trace Shapes:\n  z 3 2\n"
    assert first_line(message) == "shape mismatch at site z"
    assert first_line("") == "" and first_line("\n\n") == ""
    assert first_line("  spaced   out  \nrest", limit=8) == "space..."


@pytest.mark.parametrize("value, expected", [("1e3", 1000.0), ("-2.5", -2.5), (3, 3.0), (" 4 ", 4.0)])
def test_to_float_reads_numbers(value: object, expected: float) -> None:
    assert to_float(value) == expected


@pytest.mark.parametrize("value", ["", "n/a", None, [1.0], {}])
def test_to_float_is_nan_for_what_is_not_a_number(value: object) -> None:
    assert math.isnan(to_float(value))
