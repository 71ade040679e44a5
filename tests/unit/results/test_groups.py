"""Runs that differ only in their seed (:mod:`bbvi_kit.results.groups`): which runs share a group
(book-keeping keys and the seed never split them), the labels made of the differing keys in short
form (sweep axes first), the order of groups (numbers numerically) and of seeds within one, and
the comparable forms and printed forms of recipe values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bbvi_kit.results.groups import Group, format_value, group_runs, normalise
from bbvi_kit.results.run import Run
from bbvi_kit.results.table import Table


def run(name: str, recipe: dict[str, Any], seed: Any = 0, point: dict[str, Any] | None = None, label: str = "") -> Run:
    info: dict[str, Any] = {"seed": seed, "status": "completed", "point_label": label}
    if point is not None:
        info["point"] = point
    return Run(path=Path("/sweep") / name, recipe=recipe, info=info, metrics=Table(), evals=Table())


def recipe(k: int = 1, batch: int = 32, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "demo", "objective": {"name": "elbo", "num_particles": k},
                            "training": {"batch_size": batch, "seed": 0, "device": "cpu"}}
    for key, value in extra.items():
        section, option = key.split("__")
        body.setdefault(section, {})[option] = value
    return body


def test_no_runs_no_groups() -> None:
    assert group_runs([]) == []


def test_seeds_of_one_recipe_are_one_group_labelled_by_its_point_label() -> None:
    runs = [run("s2", recipe(), seed=2, label="K=1"), run("s0", recipe(), seed=0, label="K=1"), run("s1", recipe(), seed=1)]
    (group,) = group_runs(runs)
    assert group.label == "K=1" and group.key == {} and group.seeds == [0, 1, 2]
    assert [r.name for r in group.runs] == ["s0", "s1", "s2"]


def test_a_single_group_without_point_label_is_named_after_the_recipe_then_the_folder() -> None:
    assert group_runs([run("a", recipe())])[0].label == "demo"
    nameless = recipe()
    del nameless["name"]
    assert group_runs([run("folder-x", nameless)])[0].label == "folder-x"


def test_book_keeping_keys_never_split_runs() -> None:
    a = recipe(output__dir="/a")
    b = recipe(output__dir="/b")
    a["description"], b["description"] = "one", "two"
    b["training"].update(device="cuda", progress=True, flush_every=5, seed=9)
    b["name"] = "other"
    b["plugins"] = ["x"]
    assert len(group_runs([run("a", a), run("b", b, seed=9)])) == 1


def test_groups_are_labelled_by_what_differs_in_short_form_and_ordered_numerically() -> None:
    runs = [run(f"k{k}-s{s}", recipe(k=k), seed=s) for k in (10, 5, 1) for s in (1, 0)]
    groups = group_runs(runs)
    assert [g.label for g in groups] == ["K=1", "K=5", "K=10"]  # not "K=10" before "K=5"
    assert [g.key for g in groups] == [{"objective.num_particles": 1}, {"objective.num_particles": 5},
                                       {"objective.num_particles": 10}]
    assert all(g.seeds == [0, 1] for g in groups)
    assert groups[1].setting("training.batch_size") == 32 and groups[1].setting("missing", "d") == "d"


def test_integers_and_equal_floats_are_one_value() -> None:
    assert len(group_runs([run("a", recipe(k=5)), run("b", recipe(k=5.0), seed=1)])) == 1  # type: ignore[arg-type]


def test_sweep_axes_come_first_in_the_label() -> None:
    point = {"training.batch_size": 64}
    runs = [run("a", recipe(k=1, batch=64), point=point), run("b", recipe(k=5, batch=16), point={"training.batch_size": 16})]
    labels = [g.label for g in group_runs(runs)]
    assert labels == ["B=16, K=5", "B=64, K=1"]


@pytest.mark.parametrize(("key", "values", "labels"), [
    ("objective__name", ["iwae", "elbo"], ["ELBO", "IWAE"]),
    ("optimizer__name", ["adam", "sgd"], ["Adam", "SGD"]),
    ("objective__beta", [4, 1], ["β=1", "β=4"]),
    ("model__latent_dim", [2, 8], ["d_z=2", "d_z=8"]),
    ("optimizer__lr", [0.001, 0.01], ["γ₀=0.001", "γ₀=0.01"]),
    ("model__extra_fc_layers", [1, 0], ["extra_fc_layers=0", "extra_fc_layers=1"]),
    ("data__name", ["mnist", "cifar"], ["cifar", "mnist"]),
    ("model__flag", [True, False], ["flag=false", "flag=true"]),
], ids=["objective", "optimizer", "beta", "latent", "lr", "other-key", "other-name", "boolean"])
def test_each_kind_of_key_has_its_short_label(key: str, values: list[Any], labels: list[str]) -> None:
    runs = [run(f"r{i}", recipe(**{key: v})) for i, v in enumerate(values)]
    assert [g.label for g in group_runs(runs)] == labels


def test_activations_are_labelled_by_short_name_and_the_options_that_vary() -> None:
    runs = [run("a", recipe(model__activation={"name": "generalized_soft_clipping", "sharpness": 2, "s1": 0})),
            run("b", recipe(model__activation="relu")),
            run("c", recipe(model__activation={"name": "generalized_soft_clipping", "sharpness": 2, "s1": 1}))]
    labels = sorted(g.label for g in group_runs(runs))
    # sharpness is always named; s1 because it varies (options in sorted order)
    assert labels == ["relu", "soft-clip s1=0 s=2", "soft-clip s1=1 s=2"]


def test_a_bare_activation_name_and_its_mapping_are_the_same_setting() -> None:
    runs = [run("a", recipe(model__activation="tanh")), run("b", recipe(model__activation={"name": "tanh"}), seed=1)]
    (group,) = group_runs(runs)
    assert group.seeds == [0, 1]


def test_the_point_fills_in_a_key_the_recipe_lacks_but_the_recipe_wins() -> None:
    bare = [run("a", {}, point={"objective.num_particles": 1}), run("b", {}, point={"objective.num_particles": 5})]
    assert [g.label for g in group_runs(bare)] == ["K=1", "K=5"]
    # the recipe says K=3 for both: the differing points do not split them
    same = [run("a", recipe(k=3), point={"objective.num_particles": 1}), run("b", recipe(k=3), seed=1,
                                                                                 point={"objective.num_particles": 5})]
    assert len(group_runs(same)) == 1


def test_a_zipped_axis_fills_in_both_keys() -> None:
    axis = "objective.num_particles,training.batch_size"
    runs = [run("a", {}, point={axis: [1, 64]}), run("b", {}, point={axis: [5, 16]})]
    assert [(g.label, g.key) for g in group_runs(runs)] == [
        ("K=1, B=64", {"objective.num_particles": 1, "training.batch_size": 64}),
        ("K=5, B=16", {"objective.num_particles": 5, "training.batch_size": 16})]


def test_a_key_missing_from_some_runs_splits_them_but_adds_nothing_to_their_label() -> None:
    runs = [run("a", recipe(model__extra=1)), run("b", recipe())]
    labels = [g.label for g in group_runs(runs)]
    assert sorted(labels) == ["demo", "extra=1"]


def test_groups_with_one_label_are_numbered() -> None:
    # model.depth and encoder.depth are both written "depth=1"
    runs = [run("a", recipe(model__depth=1)), run("b", recipe(encoder__depth=1))]
    assert sorted(g.label for g in group_runs(runs)) == ["depth=1", "depth=1 #2"]


def test_options_only_one_swapped_plugin_has_are_left_out_of_the_label() -> None:
    sgd = recipe(optimizer__name="sgd", optimizer__momentum=0.9)
    adam = recipe(optimizer__name="adam")
    runs = [run("a", sgd, point={"optimizer": {"name": "sgd", "momentum": 0.9}}), run("b", adam, point={"optimizer": {"name": "adam"}})]
    assert [g.label for g in group_runs(runs)] == ["Adam", "SGD"]


def test_the_group_point_leaves_out_ignored_keys() -> None:
    (group,) = group_runs([run("a", recipe(), point={"training.seed": 3, "objective.num_particles": 1})])
    assert group.point == {"objective.num_particles": 1}
    assert isinstance(group, Group)


@pytest.mark.parametrize(("value", "expected"), [
    (3, 3.0), (2.5, 2.5), (True, True), (None, None), ("x", "x"),
    ({"b": 1, "a": (2, 3)}, {"a": [2.0, 3.0], "b": 1.0}), (Path("p"), "p"),
], ids=["int", "float", "bool", "none", "text", "mapping", "other"])
def test_normalise_gives_a_comparable_form(value: Any, expected: Any) -> None:
    out = normalise(value)
    assert out == expected and type(out) is type(expected)


def test_normalise_sorts_mapping_keys() -> None:
    assert list(normalise({"b": 1, "a": 2, "c": {"z": 1, "y": 2}})) == ["a", "b", "c"]
    assert list(normalise({"c": {"z": 1, "y": 2}})["c"]) == ["y", "z"]


@pytest.mark.parametrize(("value", "expected"), [
    (True, "true"), (4.0, "4"), (0.001, "0.001"), (1e20, "1e+20"), (7, "7"), ([1.0, 2.5], "[1, 2.5]"),
    ({"a": 1, "b": False}, "{a=1, b=false}"), ("x", "x"),
], ids=["bool", "whole-float", "small", "huge", "int", "list", "mapping", "text"])
def test_format_value_writes_values_plainly(value: Any, expected: str) -> None:
    assert format_value(value) == expected
