"""Every recipe in recipes/ validates as written, and runs end to end (every sweep point, one seed,
a couple of iterations) on tiny datasets generated in the real on-disk formats."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from bbvi_kit.sweep import load_plan
from tests.support.datasets_on_disk import make_celeba, make_cifar100
from tests.support import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
NOT_PAPER = {"quickstart", "iwae_snr_k_sweep", "iwae_estimators"}  # the embedded-data recipes
PAPER = [r for r in RECIPES if r.stem not in NOT_PAPER]

# The paper's settings (Surendran et al., AISTATS 2025) that every experiment recipe keeps.
PAPER_TRAINING = {"batch_size": 256, "epochs": 100, "seeds": [0, 1, 2, 3, 4]}

# recipe -> (number of sweep points, what the sweep varies)
EXPECTED_POINTS = {
    "celeba_vae_softclip": 5,
    "celeba_beta_vae": 4,
    "celeba_iwae": 3,
    "cifar100_iwae": 5,
    "cifar100_beta_vae": 4,
    "celeba_depth": 3,
    "batch_size": 5,
    "sgd_vs_adam": 2,
    "linear_vae_ppca": 1,
}


# recipe -> the legend of its figures, one entry per sweep point
FIGURE_LABELS = {
    "celeba_vae_softclip": ["soft-clip s=1", "soft-clip s=2", "soft-clip s=5", "soft-clip s=10", "relu"],
    "celeba_beta_vae": ["β=1", "β=2", "β=4", "β=8"],
    "celeba_iwae": ["K=1", "K=5", "K=10"],
    "cifar100_iwae": ["K=1", "K=5", "K=10", "K=50", "K=100"],
    "cifar100_beta_vae": ["β=1", "β=2", "β=4", "β=8"],
    "celeba_depth": ["extra_fc_layers=0, extra_conv_layers=0", "extra_fc_layers=0, extra_conv_layers=1",
                     "extra_fc_layers=1, extra_conv_layers=0"],
    "batch_size": ["B=32", "B=64", "B=128", "B=256", "B=512"],
    "sgd_vs_adam": ["Adam", "SGD"],
    "linear_vae_ppca": ["linear_vae_ppca"],
}


def test_every_experiment_of_the_issue_has_a_recipe() -> None:
    assert {r.stem for r in PAPER} == set(EXPECTED_POINTS)


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_validates_as_written(recipe: Path) -> None:
    plan = load_plan(recipe)
    assert plan.name == recipe.stem
    if recipe.stem in EXPECTED_POINTS:
        assert len(plan.points) == EXPECTED_POINTS[recipe.stem]
        assert plan.seeds == PAPER_TRAINING["seeds"]
        first = plan.runs[0].recipe
        assert first.training.epochs == PAPER_TRAINING["epochs"]
        if "batch_size" not in recipe.stem:
            assert first.training.batch_size == PAPER_TRAINING["batch_size"]


def test_paper_recipes_use_the_papers_networks_and_optimizer() -> None:
    for recipe in PAPER:
        for run in load_plan(recipe).points:
            r = run.recipe
            if r.data.name in ("celeba", "cifar100"):
                o = r.model.options
                assert o.network == "conv" and o.latent_dim == 100 and o.likelihood == "bernoulli"
                expected = ([64, 128, 256, 512], [1024]) if r.data.name == "celeba" else ([32, 64, 128], [256])
                assert (o.channels, o.hidden) == expected, recipe.stem
            if r.optimizer.name == "adam":
                assert r.optimizer.options.betas == (0.9, 0.999) and r.optimizer.options.eps == 1e-8
                assert r.optimizer.options.lr == (3e-2 if r.model.name == "linear_vae" else 1e-3)
            assert r.schedule.name in ("inv_sqrt_epoch", "inv_sqrt_iteration")


def test_paper_recipes_state_their_kl_and_the_vae_family_takes_the_closed_form() -> None:
    """The authors compute the VAE's KL term in closed form: every ELBO and beta recipe says
    ``kl: analytic``; the IWAE recipes say why they have no such option."""
    for recipe in PAPER:
        text = recipe.read_text()
        for run in load_plan(recipe).points:
            objective = run.recipe.objective
            if objective.name in ("elbo", "beta"):
                assert objective.options.kl == "analytic" and "kl: analytic" in text, recipe.stem
            else:
                assert objective.name == "iwae" and "no kl option" in text, recipe.stem


def test_sweeps_vary_what_the_figures_compare() -> None:
    def values(stem: str) -> list[Any]:
        return [list(run.point.values())[0] for run in load_plan(REPO / "recipes" / f"{stem}.yaml").points]

    assert values("celeba_iwae") == [1, 5, 10]
    assert values("cifar100_iwae") == [1, 5, 10, 50, 100]
    sharpness = [a["sharpness"] for a in values("celeba_vae_softclip") if isinstance(a, dict)]
    assert sharpness == [1.0, 2.0, 5.0, 10.0] and "relu" in values("celeba_vae_softclip")
    assert values("celeba_depth") == [[0, 0], [1, 0], [0, 1]]
    assert [o["name"] for o in values("sgd_vs_adam")] == ["sgd", "adam"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_celeba(root, n_train=4, n_valid=1, n_test=2)
    make_cifar100(root, n_train=4, n_test=2)
    return root


def smoke_overrides(recipe: Path, data_root: Path) -> list[str]:
    """Overrides that make a recipe take seconds: one seed, two iterations, generated data, and one
    checkpoint (at the end), except for CelebA: its network's checkpoint with the Adam state is
    259 MB (0.8 s and a quarter of a gigabyte of disk per point, 15 points); its parts are those of
    the CIFAR-100 recipes' checkpoints (the same model plugin, objectives and optimizers)."""
    overrides = ["training.seeds=[0]", "training.iterations=2", "training.checkpoint_every=2", "training.num_workers=0",
                 "training.progress=false", "training.device=cpu"]
    data = load_plan(recipe).runs[0].recipe.data.name
    if data in ("celeba", "cifar100"):
        overrides.append(f"data.root={data_root}")
    if data == "celeba":
        overrides.append("training.keep_checkpoints=0")
    if data == "synthetic_ppca":
        overrides += ["data.num_train=64", "data.num_test=16"]
    return overrides


@pytest.mark.slow
@pytest.mark.parametrize("recipe", PAPER, ids=[r.stem for r in PAPER])
def test_recipe_smoke_runs_every_point_on_generated_data(
    recipe: Path, data_root: Path, tmp_path: Path, cli_run: Callable
) -> None:
    code, out, err = cli_run(["run", recipe, *smoke_overrides(recipe, data_root), "--out", tmp_path])
    assert code == 0, err
    sweep_dir = Path(out.split("sweep directory: ")[1].strip())
    with open(sweep_dir / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == EXPECTED_POINTS[recipe.stem]
    for row in rows:
        assert row["status"] == "completed", row["error"]
        assert float(row["final_test_loss"]) == float(row["final_test_loss"])  # not NaN
        info = json.loads((sweep_dir / row["run_dir"] / "run.json").read_text())
        assert info["status"] == "completed"
    assert (sweep_dir / "plots" / "grad_norm_sq.png").is_file()
    assert (sweep_dir / "plots" / "test_loss.pdf").is_file()
    labels = [g["label"] for g in json.loads((sweep_dir / "plots" / "figures.json").read_text())["groups"]]
    assert labels == FIGURE_LABELS[recipe.stem]
    if recipe.stem.endswith("_iwae"):
        assert (sweep_dir / "plots" / "iwae_bound_vs_K.png").is_file()
    if recipe.stem == "linear_vae_ppca":
        assert "final_train_loss_gap" in rows[0] and float(rows[0]["final_train_loss_gap"]) > -0.05


def test_headline_command_without_celeba_fails_clearly(tmp_path: Path, cli_run: Callable) -> None:
    code, out, err = cli_run(["run", REPO / "recipes" / "celeba_iwae.yaml", f"data.root={tmp_path / 'empty'}",
                              "--out", tmp_path / "runs"])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "list_eval_partition" in lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("stem", ["celeba_iwae", "cifar100_iwae", "linear_vae_ppca"])
def test_recipe_runs_on_cuda(stem: str, data_root: Path, tmp_path: Path, cli_run: Callable) -> None:
    """The paper recipes on the GPU (device auto picks it), every point, with the ppca reference."""
    recipe = REPO / "recipes" / f"{stem}.yaml"
    overrides = [o for o in smoke_overrides(recipe, data_root) if o != "training.device=cpu"]
    code, out, err = cli_run(["run", recipe, *overrides, "training.num_workers=2", "--out", tmp_path])
    assert code == 0, err
    sweep_dir = Path(out.split("sweep directory: ")[1].strip())
    for run_json in sweep_dir.glob("*/run.json"):
        info = json.loads(run_json.read_text())
        assert info["status"] == "completed" and info["device"].startswith("cuda")


def test_an_unreadable_image_in_a_worker_is_a_one_line_error(data_root: Path, tmp_path: Path, cli_run: Callable) -> None:
    """Found by a DataLoader worker mid-run (decoding per epoch, ``cache: false``): one line
    (torch wraps it in the worker's traceback). With the decoded-image cache it is found while
    the cache is built, before anything is written."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_root / "celeba", root / "celeba")
    broken = sorted((root / "celeba" / "img_align_celeba").glob("*.jpg"))[1]
    broken.write_bytes(b"not a jpeg")
    recipe = REPO / "recipes" / "celeba_iwae.yaml"
    common = [o for o in smoke_overrides(recipe, data_root) if not o.startswith(("data.root", "training.num_workers"))]
    common += [f"data.root={root}", "training.num_workers=2", "sweep.objective.num_particles=[2]"]
    expected = f"dataset celeba: cannot read image {broken}: UnidentifiedImageError"

    code, out, err = cli_run(["run", recipe, *common, "--out", tmp_path / "cached"])
    assert code == 2 and out == "" and err.splitlines() == [err.strip()] and err.startswith(f"error: {expected}")
    assert not (tmp_path / "cached").exists()
    common.append("data.cache=false")

    # one run: exit code 2 (bad input), one line
    code, out, err = cli_run(["run", recipe, *common, "sweep=null", "training.seeds=null", "--out", tmp_path / "one"])
    assert code == 2 and out == "", err
    assert err.splitlines() == [err.strip()] and err.startswith(f"error: {expected}")
    (info,) = [json.loads(p.read_text()) for p in (tmp_path / "one").rglob("run.json")]
    assert info["status"] == "failed" and info["error"].startswith(expected) and "\n" not in info["error"]
    assert info["data_files"] == str((root / "celeba" / "img_align_celeba").resolve())

    # in a sweep: that run is marked failed with the same short message
    code, out, err = cli_run(["run", recipe, *common, "--out", tmp_path / "sweep"])
    assert code == 1 and "Traceback" not in err and "worker process" not in err
    with open(next((tmp_path / "sweep").rglob("summary.csv")), newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["status"] == "failed" and row["error"].startswith(expected)


def test_snr_recipe_measures_snr_at_every_k(tmp_path: Path, cli_run: Callable) -> None:
    recipe = REPO / "recipes" / "iwae_snr_k_sweep.yaml"
    code, out, err = cli_run(["run", recipe, "training.seeds=[0]", "training.iterations=4", "training.progress=false",
                              "training.device=cpu", "sweep.objective.num_particles=[1, 4]",
                              "diagnostics=[{name: snr, every: 2, num_draws: 4, num_particles: [1, 16]}]",
                              "--out", tmp_path])
    assert code == 0, err
    sweep_dir = Path(out.split("sweep directory: ")[1].strip())
    for run in ("p00-K=1-seed0", "p01-K=4-seed0"):
        with open(sweep_dir / run / "diagnostics" / "snr.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["step"] for r in rows] == ["2", "4"]
        assert {"snr_phi_K1", "snr_theta_K16", "snr_norm_phi_K16"} <= set(rows[0])


def test_estimators_recipe_compares_snr_against_k_per_estimator(tmp_path: Path, cli_run: Callable) -> None:
    recipe = REPO / "recipes" / "iwae_estimators.yaml"
    assert [(p["objective.num_particles"], p["estimator"]["name"]) for p in
            (run.point for run in load_plan(recipe).points)] == [
        (k, name) for k in (1, 4, 16, 64) for name in ("pathwise", "dreg", "stl")]
    code, out, err = cli_run(["run", recipe, "training.iterations=2", "training.progress=false", "training.device=cpu",
                              "sweep.objective.num_particles=[1, 4]",
                              "diagnostics=[{name: snr, every: 2, num_draws: 4}]", "--out", tmp_path])
    assert code == 0, err
    sweep_dir = Path(out.split("sweep directory: ")[1].strip())
    with open(sweep_dir / "summary.csv", newline="") as fh:
        assert [row["status"] for row in csv.DictReader(fh)] == ["completed"] * 6
    assert (sweep_dir / "plots" / "snr_vs_K.png").is_file()
    assert "snr_vs_K.png" in json.loads((sweep_dir / "plots" / "figures.json").read_text())["files"]
