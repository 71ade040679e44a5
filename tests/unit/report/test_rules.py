"""The rules behind the findings (:mod:`bbvi_kit.report.rules`): the thresholds the page states
are the ones the findings use, written as percentages, and every rule is one plain sentence block."""

from __future__ import annotations

from bbvi_kit.diagnostics import collapse
from bbvi_kit.report import rules
from bbvi_kit.report.rules import COLLAPSE_FRACTION, RULES, TEST_RISE


def test_the_test_rise_threshold_is_one_percent() -> None:
    assert TEST_RISE == 0.01


def test_the_collapse_threshold_is_the_diagnostics_default() -> None:
    assert COLLAPSE_FRACTION is collapse.COLLAPSE_FRACTION
    assert COLLAPSE_FRACTION == 0.5


def test_the_rules_state_the_thresholds_as_percentages() -> None:
    test_rule = next(r for r in RULES if r.startswith("Test loss"))
    assert "more than 1% above its lowest value" in test_rule
    collapse_rule = next(r for r in RULES if r.startswith("Posterior collapse"))
    assert "(default 50%)" in collapse_rule


def test_every_rule_is_filled_in_text_without_template_leftovers() -> None:
    assert len(RULES) == 7
    for rule in RULES:
        assert isinstance(rule, str) and rule.strip() == rule and rule.endswith(".")
        assert "{" not in rule and "}" not in rule and "\n" not in rule


def test_the_rules_name_each_topic_once_in_page_order() -> None:
    heads = [r.split(" ", 1)[0].rstrip(":") for r in RULES]
    assert heads == ["Convergence", "Mini-batch", "Test", "Posterior", "SNR", "Sweep", "Diagnostics"]


def test_the_module_exports_exactly_its_three_names() -> None:
    assert sorted(rules.__all__) == ["COLLAPSE_FRACTION", "RULES", "TEST_RISE"]
