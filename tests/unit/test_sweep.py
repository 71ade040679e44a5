"""Seeds and sweeps: expanding the grid, validating every point, running it into one sweep
directory with a summary, and keeping the other runs when one fails."""

from __future__ import annotations

import csv
import json
import re
import textwrap
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from bbvi_kit.errors import InputError
from bbvi_kit.recipe import load_recipe
from bbvi_kit.sweep_runner import run_plan
from bbvi_kit.sweep import load_plan, point_label
from tests.support.flaky_plugin import FLAKY_PLUGIN
from tests.support import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
TINY = ["training.iterations=3", "training.progress=false", "model.hidden=[8]", "model.latent_dim=2",
        "training.device=cpu"]


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def read_summary(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# -- expansion ----------------------------------------------------------------------------------
def test_a_recipe_without_seeds_or_sweep_is_one_run() -> None:
    plan = load_plan(QUICKSTART)
    assert not plan.is_sweep and len(plan.runs) == 1
    assert plan.runs[0].recipe.as_dict() == load_recipe(QUICKSTART).as_dict()


def test_grid_is_the_product_of_axes_times_seeds() -> None:
    plan = load_plan(QUICKSTART, ["training.seeds=[3, 4]", "sweep.objective.num_particles=[1, 5]",
                                  "sweep.training.batch_size=[16, 32, 64]"])
    assert plan.is_sweep and plan.seeds == [3, 4]
    assert len(plan.runs) == 2 * 3 * 2 and len(plan.points) == 6
    seen = {(r.recipe.objective.options.num_particles, r.recipe.training.batch_size, r.recipe.training.seed)
            for r in plan.runs}
    assert seen == {(k, b, s) for k in (1, 5) for b in (16, 32, 64) for s in (3, 4)}
    for run in plan.runs:
        assert run.recipe.training.seeds is None  # each run's recipe is one seed, re-runnable alone
        assert run.point == {"objective.num_particles": run.recipe.objective.options.num_particles,
                             "training.batch_size": run.recipe.training.batch_size}
    assert [r.label for r in plan.points][:2] == ["K=1, B=16", "K=1, B=32"]
    assert len({r.folder for r in plan.runs}) == len(plan.runs)


def test_seeds_alone_make_a_sweep_of_identical_points() -> None:
    plan = load_plan(QUICKSTART, ["training.seeds=[0, 1, 2]"])
    assert plan.is_sweep and [r.seed for r in plan.runs] == [0, 1, 2]
    assert [r.folder for r in plan.runs] == ["seed0", "seed1", "seed2"]
    first, second = (r.recipe.as_dict() for r in plan.runs[:2])
    assert first["training"]["seed"] == 0 and second["training"]["seed"] == 1
    first["training"]["seed"] = second["training"]["seed"] = None
    assert first == second


def test_zipped_axis_moves_its_keys_together(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        model: {name: gaussian_vae, hidden: [8], latent_dim: 2}
        sweep:
          model.latent_dim,model.hidden: [[2, [8]], [3, [4, 4]]]
          model.activation: [relu, {name: generalized_soft_clipping, sharpness: 2.0}]
        """)
    plan = load_plan(path)
    combos = [(r.recipe.model.options.latent_dim, r.recipe.model.options.hidden, r.recipe.model.options.activation)
              for r in plan.runs]
    assert combos == [
        (2, [8], "relu"), (2, [8], {"name": "generalized_soft_clipping", "sharpness": 2.0}),
        (3, [4, 4], "relu"), (3, [4, 4], {"name": "generalized_soft_clipping", "sharpness": 2.0}),
    ]
    assert plan.runs[1].label == "latent_dim=2, hidden=[8], activation=generalized_soft_clipping(sharpness=2)"


def test_a_section_can_be_swept_whole(tmp_path: Path) -> None:
    plan = load_plan(QUICKSTART, ["sweep.optimizer=[{name: sgd, lr: 0.01}, {name: adam, lr: 0.001}]"])
    assert [(r.recipe.optimizer.name, r.recipe.optimizer.options.lr) for r in plan.runs] == [("sgd", 0.01), ("adam", 0.001)]
    assert point_label(plan.runs[0].point) == "optimizer=sgd(lr=0.01)"


def test_overrides_replace_or_remove_an_axis(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        model: {name: gaussian_vae}
        training: {seeds: [0, 1]}
        sweep: {objective.num_particles: [1, 5, 10]}
        """)
    assert len(load_plan(path).runs) == 6
    assert [r.point for r in load_plan(path, ["sweep.objective.num_particles=[2]"]).runs] == [{"objective.num_particles": 2}] * 2
    assert len(load_plan(path, ["sweep.objective.num_particles=null"]).runs) == 2
    assert len(load_plan(path, ["sweep=null", "training.seeds=null"]).runs) == 1
    assert not load_plan(path, ["sweep=null", "training.seeds=null"]).is_sweep


@pytest.mark.parametrize(
    ("sweep", "problem"),
    [
        ("[1, 2]", "sweep: expected a mapping"),
        ("{objective.num_particles: 5}", "sweep.objective.num_particles: expected a non-empty list"),
        ("{objective.num_particles: []}", "sweep.objective.num_particles: expected a non-empty list"),
        ("{objective: {num_particles: [1]}}", "sweep.objective: expected a list of values; write dotted keys"),
        ("{name: [a, b]}", "sweep.name: name cannot be swept"),
        ("{output.root: [a, b]}", "output.root cannot be swept"),
        ("{training.seed: [1, 2]}", "list seeds in training.seeds instead"),
        ("{'objective..x': [1]}", "an axis is a dotted key"),
        ("{'model.hidden,model.latent_dim': [[[8], 2], [4]]}", "sweep.model.hidden,model.latent_dim.1: a zipped axis takes lists of 2"),
        ("{model.activation: [relu], model.activation.sharpness: [1]}", "overlaps another sweep axis"),
    ],
)
def test_malformed_sweeps_are_one_line_errors_naming_the_key(tmp_path: Path, sweep: str, problem: str) -> None:
    path = write(tmp_path, f"model: {{name: gaussian_vae}}\nsweep: {sweep}\n")
    with pytest.raises(InputError) as info:
        load_plan(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and problem in message, message


def test_a_bad_value_is_reported_with_its_point_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_plan(QUICKSTART, ["sweep.objective.num_particles=[1, 0]"])
    message = str(info.value)
    assert "[sweep point K=0]" in message and "objective.num_particles" in message, message
    with pytest.raises(InputError, match=r"sweep point activation=relux.*did you mean 'relu'"):
        load_plan(QUICKSTART, ["sweep.model.activation=[relux]"])


@pytest.mark.parametrize("seeds", ["[]", "[1, 1]", "[-1]", "3"])
def test_bad_seed_lists_are_errors(seeds: str) -> None:
    with pytest.raises(InputError, match="training.seeds"):
        load_plan(QUICKSTART, [f"training.seeds={seeds}"])


def test_an_oversized_grid_is_refused() -> None:
    with pytest.raises(InputError, match="more than the 10000 allowed"):
        load_plan(QUICKSTART, ["sweep.training.batch_size=" + str(list(range(1, 200))),
                               "sweep.optimizer.lr=" + str([0.1] * 60)])


# -- running ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep_with_a_failure(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """2 points x 2 seeds; the second point fails after its first step (the model's third call)."""
    tmp = tmp_path_factory.mktemp("sweep")
    name = f"flaky_vae_{uuid.uuid4().hex[:8]}"
    (tmp / "flaky.py").write_text(FLAKY_PLUGIN.replace("{name}", name), encoding="utf-8")
    recipe = write(tmp, f"""\
        name: flaky
        plugins: [flaky.py]
        model: {{name: {name}, hidden: [8], latent_dim: 2}}
        training: {{seeds: [0, 1], iterations: 3, progress: false, device: cpu, batch_size: 64}}
        sweep: {{model.fail_at: [0, 3]}}
        """)
    plan = load_plan(recipe)
    reports: list[tuple[str, int, str]] = []
    warnings: list[str] = []
    result = run_plan(plan, tmp / "runs", on_run_done=lambda run, row: reports.append((run.label, run.seed, row["status"])),
                      warn=warnings.append)
    return {"plan": plan, "result": result, "reports": reports, "tmp": tmp, "warnings": warnings}


def test_a_failing_point_is_reported_and_the_others_complete(sweep_with_a_failure: dict[str, Any]) -> None:
    result, reports = sweep_with_a_failure["result"], sweep_with_a_failure["reports"]
    assert result.failed == 2
    assert reports == [("fail_at=0", 0, "completed"), ("fail_at=0", 1, "completed"),
                       ("fail_at=3", 0, "failed"), ("fail_at=3", 1, "failed")]
    info = json.loads((result.path / "sweep.json").read_text())
    assert info["status"] == "completed_with_failures"
    assert [r["status"] for r in info["runs"]] == ["completed", "completed", "failed", "failed"]
    failed = json.loads((result.path / "p01-fail_at=3-seed0" / "run.json").read_text())
    assert failed["status"] == "failed" and "injected failure" in failed["error"]
    step = int(re.match(r"step (\d+) ", failed["error"]).group(1))
    assert step >= 2 and failed["steps_done"] == step
    # the rows of the steps before the failure are kept
    rows = (result.path / "p01-fail_at=3-seed0" / "metrics.csv").read_text().splitlines()
    assert len(rows) == step and rows[-1].startswith(f"{step - 1},")


def test_summary_has_one_row_per_point_and_seed_with_final_values(sweep_with_a_failure: dict[str, Any]) -> None:
    result = sweep_with_a_failure["result"]
    rows = read_summary(result.path / "summary.csv")
    assert [(r["model.fail_at"], r["seed"], r["status"]) for r in rows] == [
        ("0", "0", "completed"), ("0", "1", "completed"), ("3", "0", "failed"), ("3", "1", "failed")]
    for row in rows[:2]:
        run_dir = result.path / row["run_dir"]
        info = json.loads((run_dir / "run.json").read_text())
        assert info["status"] == "completed" and info["point"] == {"model.fail_at": 0}
        metrics = list(csv.DictReader(open(run_dir / "metrics.csv")))
        evals = list(csv.DictReader(open(run_dir / "eval.csv")))
        assert row["steps"] == "3" and float(row["final_loss"]) == float(metrics[-1]["loss"])
        assert float(row["final_minibatch_grad_norm_sq_avg"]) == float(metrics[-1]["minibatch_grad_norm_sq_avg"])
        assert float(row["final_test_loss"]) == float(evals[-1]["test_loss"])
        assert row["error"] == ""
    assert "injected failure" in rows[2]["error"] and rows[2]["final_loss"] == ""
    for in_memory, on_disk in zip(result.rows, rows):
        assert {k: str(in_memory.get(k, "")) for k in on_disk} == on_disk


def test_seeds_give_different_runs_and_each_run_dir_re_runs_its_point(sweep_with_a_failure: dict[str, Any]) -> None:
    result, plan = sweep_with_a_failure["result"], sweep_with_a_failure["plan"]
    a, b = (result.path / plan.runs[i].folder for i in (0, 1))
    assert (a / "metrics.csv").read_text() != (b / "metrics.csv").read_text()
    for planned in plan.runs:
        saved = load_recipe(result.path / planned.folder / "recipe.yaml")
        assert saved.as_dict() == planned.recipe.as_dict()


def test_sweep_yaml_re_plans_the_same_sweep(sweep_with_a_failure: dict[str, Any]) -> None:
    result, plan = sweep_with_a_failure["result"], sweep_with_a_failure["plan"]
    again = load_plan(result.path / "sweep.yaml")
    assert [r.recipe.as_dict() for r in again.runs] == [r.recipe.as_dict() for r in plan.runs]


def test_the_sweep_draws_its_figures(sweep_with_a_failure: dict[str, Any]) -> None:
    # the failed point has no evaluation: the figures say so instead of failing
    assert any("fail_at=3" in w and "no test curve" in w for w in sweep_with_a_failure["warnings"])
    plots = sweep_with_a_failure["result"].path / "plots"
    for stem in ("grad_norm_sq", "test_loss"):
        assert (plots / f"{stem}.png").read_bytes().startswith(b"\x89PNG")
        assert (plots / f"{stem}.pdf").read_bytes().startswith(b"%PDF")


def test_cli_reports_each_run_and_exits_1_when_some_failed(sweep_with_a_failure: dict[str, Any], cli_run: Callable) -> None:
    tmp = sweep_with_a_failure["tmp"]
    code, out, err = cli_run(["run", tmp / "recipe.yaml", "training.seeds=[0]", "--out", tmp / "cli-runs"])
    assert code == 1
    assert "[1/2] fail_at=0 seed 0: test loss" in err and "[2/2] fail_at=3 seed 0: FAILED: step " in err
    assert err.strip().splitlines()[-1].startswith("error: 1 of 2 runs failed; see ")
    assert "done: 1 of 2 runs completed" in out


def test_a_sweep_of_good_runs_exits_0(tmp_path: Path, cli_run: Callable) -> None:
    code, out, err = cli_run(["run", QUICKSTART, *TINY, "sweep.objective.num_particles=[1, 2]", "--out", tmp_path])
    assert code == 0, err
    sweep_dir = Path(out.split("sweep directory: ")[1].strip())
    assert sweep_dir.parent == tmp_path / "quickstart"
    assert [r["status"] for r in read_summary(sweep_dir / "summary.csv")] == ["completed", "completed"]


def test_validate_lists_the_points_of_a_sweep(cli_run: Callable) -> None:
    code, out, _ = cli_run(["validate", QUICKSTART, "sweep.objective.num_particles=[1, 5]", "training.seeds=[0, 1]"])
    assert code == 0
    assert out.startswith("# sweep quickstart: 2 points x seeds [0, 1] = 4 runs\n#   p00-K=1: K=1\n#   p01-K=5: K=5\n")
    first = yaml.safe_load(out.split("# first run:\n")[1])
    assert first["objective"]["num_particles"] == 1 and first["training"]["seed"] == 0


def test_a_missing_dataset_stops_a_sweep_before_anything_is_written(tmp_path: Path, cli_run: Callable) -> None:
    code, _, err = cli_run(["run", QUICKSTART, "data={name: cifar100, root: " + str(tmp_path / "nowhere") + "}",
                            "training.seeds=[0, 1]", "--out", tmp_path / "runs"])
    assert code == 2 and "cifar" in err.lower()
    assert not (tmp_path / "runs").exists()


def test_a_point_whose_model_cannot_take_the_data_stops_the_sweep_before_anything_runs(
    tmp_path: Path, cli_run: Callable
) -> None:
    code, out, err = cli_run(["run", QUICKSTART, *TINY, "sweep.model.network=[mlp, conv]", "--out", tmp_path / "runs"])
    assert code == 2 and out == ""
    line = err.strip().splitlines()[-1]
    assert len(err.strip().splitlines()) == 1
    assert f"{QUICKSTART} [sweep point network=conv]: model.channels" in line
    assert not (tmp_path / "runs").exists()


def test_a_single_run_whose_model_cannot_take_the_data_names_the_recipe(tmp_path: Path, cli_run: Callable) -> None:
    code, _, err = cli_run(["run", QUICKSTART, *TINY, "model.network=conv", "--out", tmp_path / "runs"])
    assert code == 2 and f"error: {QUICKSTART}: model.channels" in err
    assert not (tmp_path / "runs").exists()


def test_sweep_yaml_keeps_the_name_of_a_recipe_without_one(tmp_path: Path) -> None:
    recipe = write(tmp_path, """\
        model: {name: gaussian_vae, hidden: [8], latent_dim: 2}
        training: {seeds: [0], iterations: 1, progress: false, device: cpu}
        """, name="my_experiment.yaml")
    result = run_plan(load_plan(recipe), tmp_path / "runs")
    assert result.path.parent == tmp_path / "runs" / "my_experiment"
    assert load_plan(result.path / "sweep.yaml").name == "my_experiment"
    info = json.loads((result.path / "seed0" / "run.json").read_text())
    assert info["data_files"] is None  # digits ship inside scikit-learn


def test_a_sweep_whose_every_run_failed_says_so(sweep_with_a_failure: dict[str, Any]) -> None:
    tmp = sweep_with_a_failure["tmp"]
    result = run_plan(load_plan(tmp / "recipe.yaml", ["sweep.model.fail_at=[3]"]), tmp / "all-failed")
    assert result.failed == 2
    assert json.loads((result.path / "sweep.json").read_text())["status"] == "failed"


def test_the_training_section_cannot_be_swept_whole(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="sweep training's options"):
        load_plan(QUICKSTART, ["sweep.training=[{seeds: [1, 2]}]"])
