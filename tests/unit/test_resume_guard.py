"""The checks ``bbvi-kit run --resume`` makes before anything changes (:mod:`bbvi_kit.resume_guard`):
a checkpoint of another run and an edited ``recipe.yaml`` (naming the keys that changed) are
refused; starting again must not drop rows that a lost checkpoint covered; a folder left by a
process killed while setting it up counts as not begun; ``run.json``'s status is read leniently."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bbvi_kit.config.training import TrainingOptions
from bbvi_kit.errors import InputError
from bbvi_kit.resume_guard import begun, changed_keys, check_identity, check_nothing_lost, read_status

RECIPE = "name: demo\noptimizer:\n  name: adam\n  lr: 0.001\ntraining:\n  batch_size: 4\n  seed: 0\n"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_dir(tmp_path: Path, recipe: str = RECIPE, **info: Any) -> SimpleNamespace:
    """What the checks read of a :class:`bbvi_kit.runs.RunDirectory`: its ``path`` and ``info``."""
    (tmp_path / "recipe.yaml").write_text(recipe)
    return SimpleNamespace(path=tmp_path, info={"run_uid": "uid-1", "recipe_sha256": sha(RECIPE), **info})


def checkpoint_state(recipe_text: str = RECIPE, run_uid: str = "uid-1", recipe_sha256: str | None = None) -> dict[str, Any]:
    return {"identity": {"run_uid": run_uid, "recipe_sha256": recipe_sha256 or sha(RECIPE), "recipe_text": recipe_text}}


# -- read_status -------------------------------------------------------------------------------
def test_the_status_is_read_from_run_json(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"status": "interrupted", "seed": 1}))
    assert read_status(tmp_path) == "interrupted"


@pytest.mark.parametrize("content", [None, b"{not json", b"[1, 2]", b"\xff\xfe", b'{"seed": 1}'])
def test_a_status_that_cannot_be_read_is_none(tmp_path: Path, content: bytes | None) -> None:
    if content is not None:
        (tmp_path / "run.json").write_bytes(content)
    assert read_status(tmp_path) is None


def test_a_run_json_that_is_a_folder_has_no_status(tmp_path: Path) -> None:
    (tmp_path / "run.json").mkdir()
    assert read_status(tmp_path) is None


# -- check_identity ----------------------------------------------------------------------------
def test_the_runs_own_checkpoint_and_unchanged_recipe_pass(tmp_path: Path) -> None:
    run = run_dir(tmp_path)
    check_identity(run, checkpoint_state(), tmp_path / "checkpoints" / "step-4.pt")
    check_identity(run, None, None)  # no checkpoint yet: the recipe alone is checked


def test_a_run_that_recorded_no_recipe_hash_is_not_checked(tmp_path: Path) -> None:
    run = run_dir(tmp_path, recipe="anything: else\n", recipe_sha256=None)
    check_identity(run, {"identity": {"run_uid": "someone else"}}, tmp_path / "c.pt")


@pytest.mark.parametrize("state", [
    checkpoint_state(run_uid="uid-2"),
    checkpoint_state(recipe_sha256=sha("other: recipe\n")),
    {"identity": "not a mapping"},
    {},  # a checkpoint that says nothing of its run
])
def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path, state: dict[str, Any]) -> None:
    run = run_dir(tmp_path)
    checkpoint = tmp_path / "checkpoints" / "step-4.pt"
    with pytest.raises(InputError) as excinfo:
        check_identity(run, state, checkpoint)
    assert str(excinfo.value) == (f"checkpoint {checkpoint}: refused, it belongs to another run (its run id or recipe "
                                  f"differs from {tmp_path / 'run.json'})")


def test_an_edited_recipe_is_refused_naming_the_keys_that_changed(tmp_path: Path) -> None:
    edited = RECIPE.replace("lr: 0.001", "lr: 0.01").replace("seed: 0", "seed: 0\n  epochs: 3")
    run = run_dir(tmp_path, recipe=edited)
    with pytest.raises(InputError) as excinfo:
        check_identity(run, checkpoint_state(), tmp_path / "c.pt")
    assert str(excinfo.value) == (f"{tmp_path / 'recipe.yaml'}: edited since the run started (optimizer.lr, "
                                  "training.epochs changed); a resumed run runs the recipe it started with: put it back, "
                                  "or start a new run with the new recipe")


def test_more_than_six_changed_keys_are_cut_short(tmp_path: Path) -> None:
    edited = RECIPE + "".join(f"k{i}: {i}\n" for i in range(8))
    run = run_dir(tmp_path, recipe=edited)
    with pytest.raises(InputError, match=r"edited since the run started \(k0, k1, k2, k3, k4, k5, \.\.\. changed\);"):
        check_identity(run, checkpoint_state(), tmp_path / "c.pt")


def test_an_edit_without_a_checkpoint_copy_is_refused_without_keys(tmp_path: Path) -> None:
    run = run_dir(tmp_path, recipe=RECIPE + "# a comment\n")  # same data, other text
    with pytest.raises(InputError) as excinfo:
        check_identity(run, None, None)
    assert str(excinfo.value).startswith(f"{tmp_path / 'recipe.yaml'}: edited since the run started; a resumed run")


def test_a_recipe_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    run = run_dir(tmp_path)
    (tmp_path / "recipe.yaml").unlink()
    with pytest.raises(InputError) as excinfo:
        check_identity(run, checkpoint_state(), tmp_path / "c.pt")
    assert str(excinfo.value).startswith(f"{tmp_path / 'recipe.yaml'}: cannot read it (") and "\n" not in str(excinfo.value)
    (tmp_path / "recipe.yaml").write_bytes(b"name: \xff\n")
    with pytest.raises(InputError, match="cannot read it"):
        check_identity(run, checkpoint_state(), tmp_path / "c.pt")


# -- changed_keys ------------------------------------------------------------------------------
def test_changed_keys_are_dotted_and_sorted_added_and_removed_included() -> None:
    before = "a: 1\nb: {c: 2, d: [1, 2]}\ne: {f: {g: x}}\ngone: 1\n"
    after = "a: 1\nb: {c: 3, d: [1, 2, 3]}\ne: {f: {g: x, h: y}}\nnew: {k: 1}\n"
    assert changed_keys(before, after) == ["b.c", "b.d", "e.f.h", "gone", "new.k"]


def test_an_emptied_section_is_a_change_of_the_section_and_its_keys() -> None:
    assert changed_keys("a: {b: 1}\n", "a: {}\n") == ["a", "a.b"]


def test_a_value_set_to_null_is_a_change() -> None:
    assert changed_keys("a: {b: 1}\n", "a: {b: null}\n") == ["a.b"]


def test_no_keys_for_the_same_data_or_text_that_is_not_a_mapping() -> None:
    assert changed_keys("a: 1\nb: [1]\n", "b: [1]   # moved\na: 1\n") == []
    assert changed_keys("a: [1\n", "a: 1\n") == []  # unreadable
    assert changed_keys("", "a: 1\n") == [] and changed_keys("- 1\n", "a: 1\n") == []


def test_a_number_changed_to_a_boolean_is_named() -> None:
    assert changed_keys("training: {progress: 1}\n", "training: {progress: true}\n") == ["training.progress"]


# -- check_nothing_lost ------------------------------------------------------------------------
def lost(tmp_path: Path, last_step: int | None, n_train: int = 10, **training: Any) -> None:
    """check_nothing_lost on a run whose metrics.csv reaches ``last_step`` (``None``: no file)."""
    if last_step is not None:
        rows = "".join(f"{s},{1.0 / s}\n" for s in range(1, last_step + 1))
        (tmp_path / "metrics.csv").write_text("step,loss\n" + rows)
    options = {"batch_size": 4, "epochs": 2, **training}
    recipe = SimpleNamespace(training=TrainingOptions(**options))
    check_nothing_lost(SimpleNamespace(path=tmp_path), recipe, SimpleNamespace(train=list(range(n_train))))


def test_rows_up_to_the_first_checkpoint_may_be_dropped(tmp_path: Path) -> None:
    lost(tmp_path, last_step=3)  # 10 examples, B=4: 3 steps per epoch, the first checkpoint after step 3
    lost(tmp_path, last_step=None)


def test_rows_past_the_first_checkpoint_are_not_dropped(tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        lost(tmp_path, last_step=4)
    message = str(excinfo.value)
    assert message.startswith(f"{tmp_path}: metrics.csv reaches step 4, past the first checkpoint (step 3), but "
                              f"{tmp_path / 'checkpoints'} holds none that loads: resuming would start again")
    assert "--resume DIR --from-scratch" in message and "\n" not in message
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 5  # nothing was changed


@pytest.mark.parametrize("training, first", [
    ({"checkpoint_every": 5}, 5),
    ({"checkpoint_every": 50}, 6),  # never before the run's end: 2 epochs of 3 steps
    ({"iterations": 2}, 2),  # a run stopped early checkpoints at its end
    ({"iterations": 2, "checkpoint_every": 5}, 2),
])
def test_the_first_checkpoint_step_follows_the_options(tmp_path: Path, training: dict[str, int], first: int) -> None:
    lost(tmp_path, last_step=first, **training)
    with pytest.raises(InputError, match=rf"past the first checkpoint \(step {first}\)"):
        lost(tmp_path, last_step=first + 1, **training)


def test_a_run_that_keeps_no_checkpoints_may_always_start_again(tmp_path: Path) -> None:
    lost(tmp_path, last_step=6, keep_checkpoints=0)


# -- begun -------------------------------------------------------------------------------------
def test_a_folder_left_while_setting_up_has_not_begun(tmp_path: Path) -> None:
    assert not begun(tmp_path)
    (tmp_path / "plots").mkdir()
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    assert not begun(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"status": "running"}))
    assert not begun(tmp_path)
    (tmp_path / "run.json").write_text("{half")  # killed while writing it
    assert not begun(tmp_path)


@pytest.mark.parametrize("made", ["checkpoints/", "diagnostics/", "metrics.csv", "eval.csv", "run.json:completed",
                                  "run.json:failed"])
def test_a_checkpoint_a_csv_file_or_a_finished_status_means_begun(tmp_path: Path, made: str) -> None:
    if made.endswith("/"):
        (tmp_path / made).mkdir()
    elif made.startswith("run.json:"):
        (tmp_path / "run.json").write_text(json.dumps({"status": made.split(":")[1]}))
    else:
        (tmp_path / made).write_text("step,loss\n")
    assert begun(tmp_path)
