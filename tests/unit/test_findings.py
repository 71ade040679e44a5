"""One finding of a report (:mod:`bbvi_kit.findings`): its defaults, the levels from best to worst,
and the two copies it makes (capitalised, under another topic) without changing the original."""

from __future__ import annotations

import pytest

from bbvi_kit.findings import LEVELS, Finding


def test_the_levels_run_from_best_to_worst() -> None:
    assert LEVELS == ("good", "info", "warning", "problem")


def test_a_finding_defaults_to_info_with_no_numbers() -> None:
    finding = Finding("the run completed")
    assert (finding.text, finding.level, finding.topic, finding.numbers) == ("the run completed", "info", "info", {})


def test_each_finding_has_its_own_numbers() -> None:
    first, second = Finding("a"), Finding("b")
    first.numbers["step"] = 30
    assert second.numbers == {}


@pytest.mark.parametrize("text, expected", [
    ("loss fell by 12% after step 30", "Loss fell by 12% after step 30"),
    ("Already a sentence.", "Already a sentence."),
    ("étape 3 diverged", "Étape 3 diverged"),
    ("3 seeds agree", "3 seeds agree"),
    ("x", "X"),
    ("", ""),
])
def test_capitalised_upper_cases_only_the_first_letter(text: str, expected: str) -> None:
    assert Finding(text).capitalised().text == expected


def test_capitalised_is_a_copy_with_everything_else_the_same() -> None:
    original = Finding("12 latent units active", level="good", topic="diagnostic:collapse", numbers={"active": 12})
    copy = original.capitalised()
    assert copy == Finding("12 latent units active", "good", "diagnostic:collapse", {"active": 12})
    assert original.text == "12 latent units active"
    assert copy is not original


def test_with_topic_is_a_copy_under_the_new_topic() -> None:
    original = Finding("seed 2 diverged", level="problem", topic="status", numbers={"seed": 2})
    moved = original.with_topic("sweep")
    assert moved == Finding("seed 2 diverged", "problem", "sweep", {"seed": 2})
    assert original.topic == "status"


def test_findings_compare_by_value() -> None:
    assert Finding("a", "warning", "rate", {"x": 1.0}) == Finding("a", "warning", "rate", {"x": 1.0})
    assert Finding("a", "warning") != Finding("a", "problem")
