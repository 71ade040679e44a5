"""How a diagnostic's CSV is drawn (:mod:`bbvi_kit.results.panels`): which columns get a panel
(file order, bookkeeping and ``_se`` companions left out), which are constants, which numbered
columns share one (``prefix_<j>``, ``X_K<k>``), and when a panel's y axis is logarithmic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bbvi_kit.results.panels import BOOKKEEPING, FAMILY_MIN, SE_BAND, Panel, family_index, plan_panels
from bbvi_kit.results.table import Table


def table(**columns: list[float]) -> Table:
    return Table({k: np.array(v, dtype=float) for k, v in columns.items()})


def test_documented_constants() -> None:
    assert BOOKKEEPING == ("step", "epoch", "block_start", "block_end", "time")
    assert SE_BAND == 2.0 and FAMILY_MIN == 3


def test_no_tables_or_empty_tables_give_no_panels() -> None:
    assert plan_panels([]) == ([], {})
    assert plan_panels([Table()]) == ([], {})


def test_every_value_column_gets_a_panel_in_file_order_without_bookkeeping() -> None:
    t = table(step=[1, 2], b=[1, 2], epoch=[0, 0], a=[3, 4], time=[0.1, 0.2], block_start=[1, 1], block_end=[2, 2])
    panels, constants = plan_panels([t])
    assert [p.column for p in panels] == ["b", "a"]
    assert constants == {}


def test_a_column_with_an_se_companion_carries_it_and_the_companion_gets_no_panel() -> None:
    t = table(step=[1, 2], snr=[1.0, 2.0], snr_se=[0.1, 0.2], lone_se=[5.0, 6.0])
    panels, _ = plan_panels([t])
    assert panels == [Panel("snr", "snr_se", False), Panel("lone_se", None, False)]


def test_a_column_with_one_value_in_every_row_of_every_table_is_a_constant() -> None:
    tables = [table(step=[1, 2], lr=[0.1, 0.1], x=[1, 2]), table(step=[1], lr=[0.1], x=[3])]
    panels, constants = plan_panels(tables)
    assert [p.column for p in panels] == ["x"]
    assert constants == {"lr": 0.1}


def test_one_row_in_all_is_never_a_constant() -> None:
    panels, constants = plan_panels([table(step=[1], lr=[0.1])])
    assert [p.column for p in panels] == ["lr"] and constants == {}


def test_a_value_differing_between_tables_is_not_a_constant() -> None:
    panels, constants = plan_panels([table(c=[1.0, 1.0]), table(c=[2.0])])
    assert [p.column for p in panels] == ["c"] and constants == {}


def test_a_repeated_value_with_a_nan_is_drawn_not_a_constant() -> None:
    panels, constants = plan_panels([table(c=[1.0, math.nan, 1.0])])
    assert [p.column for p in panels] == ["c"] and constants == {}


def test_a_column_without_a_finite_value_gets_nothing() -> None:
    panels, constants = plan_panels([table(step=[1, 2], dead=[math.nan, math.nan], x=[1, 2])])
    assert [p.column for p in panels] == ["x"] and constants == {}


@pytest.mark.parametrize(("values", "log"), [
    ([1.0, 10.0], False),  # max / min = 10 exactly: linear
    ([1.0, 10.5], True),
    ([0.001, 100.0, math.nan], True),
    ([0.0, 100.0], False),  # a zero
    ([-1.0, 100.0], False),  # a negative value
    ([5.0, 6.0], False),
], ids=["ratio-10", "ratio-over-10", "nan-ignored", "zero", "negative", "narrow"])
def test_a_panel_is_logarithmic_when_all_values_are_positive_and_span_more_than_tenfold(values: list[float], log: bool) -> None:
    (panel,), _ = plan_panels([table(v=values)])
    assert panel.log is log


def test_three_numbered_columns_share_one_panel_in_numeric_order() -> None:
    t = table(step=[1, 2], au_z_10=[1, 2], au_z_2=[1, 3], au_z_0=[0.5, 0.6], other=[1, 2])
    panels, _ = plan_panels([t])
    assert panels[0] == Panel("au_z_<j>", None, False, ["au_z_0", "au_z_2", "au_z_10"])
    assert [p.column for p in panels] == ["au_z_<j>", "other"]


def test_two_numbered_columns_are_not_a_family() -> None:
    panels, _ = plan_panels([table(w_0=[1, 2], w_1=[3, 4])])
    assert [(p.column, p.members) for p in panels] == [("w_0", []), ("w_1", [])]


def test_a_family_spread_over_tables_is_one_panel_scaled_on_all_its_values() -> None:
    panels, _ = plan_panels([table(u_0=[1, 1], u_1=[2, 2]), table(u_2=[50, 50])])
    assert panels == [Panel("u_<j>", None, True, ["u_0", "u_1", "u_2"])]


def test_values_at_several_k_share_a_panel_from_two_columns_on() -> None:
    panels, constants = plan_panels([table(step=[1, 2], snr_K4=[1, 2], snr_K1=[3, 4], snr_K16=[5, 6])])
    assert panels == [Panel("snr_K<k>", None, False, ["snr_K1", "snr_K4", "snr_K16"])]
    panels, _ = plan_panels([table(snr_K1=[1, 2], snr_K8=[1, 200])])
    assert panels == [Panel("snr_K<k>", None, True, ["snr_K1", "snr_K8"])]
    panels, _ = plan_panels([table(snr_K1=[1, 2])])
    assert panels == [Panel("snr_K1", None, False)]


def test_a_family_without_a_finite_value_gets_no_panel() -> None:
    nan = [math.nan, math.nan]
    panels, constants = plan_panels([table(d_0=nan, d_1=nan, d_2=nan)])
    assert panels == [] and constants == {}


@pytest.mark.parametrize(("column", "index"), [("au_z_0", 0), ("au_z_12", 12), ("snr_K16", 16), ("x_1_3", 3)])
def test_family_index_is_the_number_ending_the_column(column: str, index: int) -> None:
    assert family_index(column) == index
