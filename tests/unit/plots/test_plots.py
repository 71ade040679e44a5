"""Figures across runs and sweeps (bbvi_kit.plots, bbvi_kit.results), from synthetic run directories with known values."""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml

from bbvi_kit.errors import InputError
from bbvi_kit.plots import FiguresWarning, draw_figures
from bbvi_kit.results import aggregate, find_runs, fit_log_rate, group_runs

BASE_RECIPE: dict[str, Any] = {
    "name": "synthetic",
    "description": "",
    "plugins": [],
    "model": {"name": "gaussian_vae", "latent_dim": 8, "hidden": [16],
              "activation": {"name": "generalized_soft_clipping", "s1": 0.0, "s2": 50.0, "sharpness": 5.0}},
    "data": {"name": "digits", "test_fraction": 0.2, "split_seed": 0, "labels": False},
    "objective": {"name": "elbo", "num_particles": 1},
    "estimator": {"name": "pathwise"},
    "optimizer": {"name": "adam", "lr": 0.001},
    "schedule": {"name": "constant"},
    "training": {"batch_size": 64, "epochs": 4, "iterations": None, "seed": 0, "device": "cpu",
                 "record_every": 1, "eval_every": None},
    "output": {"root": "runs"},
}


def rate(n: np.ndarray) -> np.ndarray:
    return np.log(n) / np.sqrt(n)


def make_run(
    path: Path,
    *,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    point: dict[str, Any] | None = None,
    point_label: str = "",
    epochs: int = 4,
    per_epoch: int = 25,
    stop: int | None = None,
    avg: Callable[[np.ndarray], np.ndarray] = lambda n: 3 * rate(n),
    gns: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    test_loss: Callable[[np.ndarray], np.ndarray] = lambda e: 100.0 / (e + 1),
    test_objective: Callable[[np.ndarray], np.ndarray] | None = None,
    status: str = "completed",
) -> Path:
    """A run directory as the runner writes it: epoch-end evaluations, one metrics row per update.

    ``avg(n)`` is written as minibatch_grad_norm_sq_avg, ``gns(n, epoch)`` as minibatch_grad_norm_sq (default: avg),
    ``test_loss(epoch)`` and ``test_objective(epoch)`` as the eval columns; ``stop`` cuts the run
    after that many updates (a failed or running seed).
    """
    path.mkdir(parents=True)
    recipe = copy.deepcopy(BASE_RECIPE)
    for dotted, value in (overrides or {}).items():
        *parents, last = dotted.split(".")
        node = recipe
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)
    recipe["training"]["seed"] = seed
    recipe["training"]["epochs"] = epochs
    (path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    info = {"status": status, "seed": seed, "point": point or {}, "point_label": point_label}
    (path / "run.json").write_text(json.dumps(info))
    total = epochs * per_epoch if stop is None else stop
    n = np.arange(1, total + 1, dtype=float)
    epoch = (n - 1) // per_epoch
    g = avg(n) if gns is None else gns(n, epoch)
    lines = ["step,epoch,loss,minibatch_grad_norm_sq,minibatch_grad_norm_sq_avg,minibatch_grad_norm_sq_phi,lr,time"]
    lines += [f"{int(s)},{int(e)},{10 + 1 / s!r},{gv!r},{av!r},{gv / 2!r},0.001,{s / 100!r}"
              for s, e, gv, av in zip(n.tolist(), epoch.tolist(), g.tolist(), avg(n).tolist())]
    (path / "metrics.csv").write_text("\n".join(lines) + "\n")
    done = int(total // per_epoch)
    ev = np.arange(done, dtype=float)
    objective = test_objective or test_loss
    rows = ["step,epoch,test_loss,test_objective_loss,time"]
    rows += [f"{int((e + 1) * per_epoch)},{int(e)},{t!r},{o!r},{e!r}"
             for e, t, o in zip(ev.tolist(), test_loss(ev).tolist(), objective(ev).tolist())]
    (path / "eval.csv").write_text("\n".join(rows) + "\n")
    (path / "plots").mkdir()
    return path


def make_sweep(root: Path, axis: str, values: list[Any], seeds: list[int], label: Callable[[Any], str],
               **kwargs: Any) -> Path:
    """A sweep directory with one run per (value, seed) and a sweep.json."""
    root.mkdir(parents=True)
    (root / "sweep.json").write_text(json.dumps({"name": root.name, "axes": {axis: values}, "seeds": seeds}))
    for i, value in enumerate(values):
        overrides = dict(kwargs.get("overrides", {}))
        keys = axis.split(",")
        for key, val in zip(keys, value if len(keys) > 1 else [value]):
            overrides[key] = val
        for seed in seeds:
            make_run(root / f"p{i}-s{seed}", seed=seed, point={axis: value}, point_label=label(value),
                     **{**kwargs, "overrides": overrides})
    return root


def read_summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "figures.json").read_text())


def quiet_draw(paths: list[Path], out: Path) -> tuple[list[Path], list[str]]:
    messages: list[str] = []
    return draw_figures(paths, out, warn=messages.append), messages


# ------------------------------------------------------------------ aggregation and the fit


def test_aggregate_mean_min_max_over_seeds() -> None:
    x = [1, 2, 3, 4]
    band = aggregate([(x, [1.0, 2.0, 3.0, 4.0]), (x, [3.0, 2.0, 1.0, 0.0]), (x, [2.0, 5.0, 2.0, 2.0])])
    np.testing.assert_allclose(band.x, x)
    np.testing.assert_allclose(band.mean, [2.0, 3.0, 2.0, 2.0])
    np.testing.assert_allclose(band.lo, [1.0, 2.0, 1.0, 0.0])
    np.testing.assert_allclose(band.hi, [3.0, 5.0, 3.0, 4.0])
    assert band.n == 3


def test_aggregate_uses_the_common_prefix_and_a_single_seed_collapses() -> None:
    band = aggregate([([1, 2, 3, 4, 5], [1.0, 1, 1, 1, 1]), ([1, 2, 3], [3.0, 3, 3])])
    np.testing.assert_allclose(band.x, [1, 2, 3])
    np.testing.assert_allclose(band.mean, [2, 2, 2])
    one = aggregate([([1, 2], [4.0, 5.0])])
    np.testing.assert_array_equal(one.lo, one.mean)
    np.testing.assert_array_equal(one.hi, one.mean)


def test_thinning_keeps_ends_and_is_for_drawing_only() -> None:
    n = np.arange(1, 10_001, dtype=float)
    band = aggregate([(n, rate(n + 1))])
    thin = band.thinned(500, log_x=True)
    assert len(thin) <= 500 and thin.x[0] == 1 and thin.x[-1] == 10_000
    assert np.all(np.diff(thin.x) > 0)


def test_fit_log_rate_recovers_c_on_the_second_half() -> None:
    n = np.arange(1, 1001, dtype=float)
    assert fit_log_rate(n, 3 * rate(n)) == pytest.approx(3, rel=1e-12)
    # early values outside n >= n_max/2 do not count
    y = 7 * rate(n)
    y[:400] *= 100
    assert fit_log_rate(n, y) == pytest.approx(7, rel=1e-12)
    assert fit_log_rate([1.0, 2.0], [1.0, 1.0]) is None  # n >= 3 never reached


# ------------------------------------------------------------------ finding and grouping


def test_find_runs_recursively_and_empty_paths_are_errors(tmp_path: Path) -> None:
    make_run(tmp_path / "a" / "sweep1" / "r1")
    make_run(tmp_path / "a" / "sweep2" / "deeper" / "r2", seed=1)
    (tmp_path / "a" / "sweep1" / "r1" / "plots" / "junk").mkdir()
    runs = find_runs([tmp_path / "a", tmp_path / "a" / "sweep1" / "r1"])  # overlap is read once
    assert sorted(r.path.name for r in runs) == ["r1", "r2"]
    assert runs[0].recipe["model"]["name"] == "gaussian_vae" and runs[0].metrics[0]["step"] == 1.0
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no run directory"):
        find_runs([tmp_path / "empty"])
    with pytest.raises(InputError, match="no such file"):
        find_runs([tmp_path / "missing"])


def test_runs_without_rows_are_skipped_with_a_warning(tmp_path: Path) -> None:
    make_run(tmp_path / "ok")
    (tmp_path / "starting").mkdir()
    (tmp_path / "starting" / "run.json").write_text('{"status": "running", "seed": 3}')
    (tmp_path / "starting" / "metrics.csv").write_text("step,epoch,loss\n")
    with pytest.warns(FiguresWarning, match="starting: no metrics rows"):
        runs = find_runs([tmp_path])
    assert [r.path.name for r in runs] == ["ok"]
    with pytest.warns(FiguresWarning), pytest.raises(InputError, match="no run with metrics rows"):
        find_runs([tmp_path / "starting"])


def test_a_last_line_being_written_is_dropped(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", status="running")
    with open(run / "metrics.csv", "a") as fh:
        fh.write("101,4,10.0,0.")  # cut mid-row
    (run_record,) = find_runs([run])
    assert len(run_record.metrics) == 100


def test_empty_cells_are_nan_and_a_bad_line_is_an_error(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r")
    (run / "metrics.csv").write_text("step,epoch,loss,minibatch_grad_norm_sq,minibatch_grad_norm_sq_avg\n1,0,2.5,,4\n2,0,2.0,1,3\n")
    (record,) = find_runs([run])
    assert record.metrics[0]["step"] == 1.0 and math.isnan(record.metrics[0]["minibatch_grad_norm_sq"])
    np.testing.assert_array_equal(record.metrics.column("minibatch_grad_norm_sq_avg"), [4.0, 3.0])
    assert np.isnan(record.metrics.column("absent")).all()
    (run / "metrics.csv").write_text("step,epoch,loss\n1,0,oops\n2,0,2.0\n")
    with pytest.raises(InputError, match="metrics.csv: line 2, column loss: 'oops' is not a number"):
        find_runs([run])
    (run / "metrics.csv").write_text("step,epoch,loss\n1,0\n2,0,2.0\n")
    with pytest.raises(InputError, match="metrics.csv: line 2: 2 fields"):
        find_runs([run])


def test_groups_by_sweep_point_with_short_labels(tmp_path: Path) -> None:
    make_sweep(tmp_path / "k", "objective.num_particles", [5, 1], [0, 1, 2], lambda v: f"K={v}",
               overrides={"objective.name": "iwae"})
    groups = group_runs(find_runs([tmp_path]))
    assert [g.label for g in groups] == ["K=1", "K=5"]  # numeric order
    assert [sorted(g.seeds) for g in groups] == [[0, 1, 2], [0, 1, 2]]
    assert groups[1].point == {"objective.num_particles": 5}
    assert groups[1].key == {"objective.num_particles": 5.0}


def test_activation_labels(tmp_path: Path) -> None:
    soft = {"name": "generalized_soft_clipping", "s1": 0.0, "s2": 50.0}
    values = [{**soft, "sharpness": 2.0}, {**soft, "sharpness": 10.0}, "relu", {"name": "softplus", "beta": 1.0}]
    make_sweep(tmp_path / "act", "model.activation", values, [0], lambda v: str(v))
    labels = [g.label for g in group_runs(find_runs([tmp_path]))]
    assert labels == ["soft-clip s=2", "soft-clip s=10", "relu", "softplus"]


def test_a_nested_axis_key_labels_its_option_once(tmp_path: Path) -> None:
    make_sweep(tmp_path / "s", "model.activation.sharpness", [10.0, 1.0], [0], lambda v: f"s={v}")
    assert [g.label for g in group_runs(find_runs([tmp_path]))] == ["soft-clip s=1", "soft-clip s=10"]


def test_beta_and_objective_labels(tmp_path: Path) -> None:
    make_run(tmp_path / "elbo")
    make_run(tmp_path / "beta4", overrides={"objective.name": "beta", "objective.beta": 4.0})
    labels = [g.label for g in group_runs(find_runs([tmp_path]))]
    assert labels == ["β-ELBO, β=4", "ELBO"]  # a key a run lacks adds nothing to its label


def test_zipped_axis_label(tmp_path: Path) -> None:
    make_sweep(tmp_path / "depth", "model.extra_fc_layers,model.extra_conv_layers", [[0, 0], [1, 0], [0, 1]], [0, 1],
               lambda v: str(v))
    labels = [g.label for g in group_runs(find_runs([tmp_path]))]
    assert labels == ["extra_fc_layers=0, extra_conv_layers=0", "extra_fc_layers=0, extra_conv_layers=1",
                      "extra_fc_layers=1, extra_conv_layers=0"]


def test_two_sweeps_combined_keep_their_other_differences(tmp_path: Path) -> None:
    make_sweep(tmp_path / "adam", "objective.num_particles", [1, 5], [0, 1], lambda v: f"K={v}")
    make_sweep(tmp_path / "sgd", "objective.num_particles", [1, 5], [0, 1], lambda v: f"K={v}",
               overrides={"optimizer.name": "sgd", "optimizer.lr": 0.01})
    groups = group_runs(find_runs([tmp_path / "adam", tmp_path / "sgd"]))
    assert [g.label for g in groups] == ["K=1, Adam, γ₀=0.001", "K=1, SGD, γ₀=0.01",
                                         "K=5, Adam, γ₀=0.001", "K=5, SGD, γ₀=0.01"]
    assert all(len(g.runs) == 2 for g in groups)


def test_single_runs_group_by_differing_recipe_values(tmp_path: Path) -> None:
    make_run(tmp_path / "a", overrides={"objective.num_particles": 5, "training.batch_size": 32})
    make_run(tmp_path / "b", seed=1)
    make_run(tmp_path / "c", seed=2)  # same recipe as b up to the seed: pooled
    groups = group_runs(find_runs([tmp_path]))
    assert [(g.label, len(g.runs)) for g in groups] == [("K=1, B=64", 2), ("K=5, B=32", 1)]
    (only,) = group_runs(find_runs([tmp_path / "a"]))
    assert only.label == "synthetic"


# ------------------------------------------------------------------ figures


def assert_valid_figures(out: Path, stems: list[str]) -> None:
    for stem in stems:
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") or "tmp" in p.name]


def test_draw_figures_fits_c_and_summarises_seeds(tmp_path: Path) -> None:
    # two groups, three seeds each, running averages C * f(n) * (0.5, 1, 1.5): the mean is C * f(n)
    for k, c in ((1, 3.0), (5, 7.0)):
        for seed, factor in enumerate((0.5, 1.0, 1.5)):
            make_run(tmp_path / "sweep" / f"k{k}-s{seed}", seed=seed,
                     overrides={"objective.num_particles": k, "objective.name": "iwae"},
                     point={"objective.num_particles": k}, point_label=f"K={k}",
                     avg=lambda n, c=c, f=factor: c * f * rate(n),
                     gns=lambda n, e, c=c: 2 * c * rate((e + 1) * 25),
                     test_loss=lambda e, f=factor, k=k: 100 / (e + 1) * f + k,
                     test_objective=lambda e, f=factor, k=k: 90 / (e + 1) * f - k)
    out = tmp_path / "figs"
    written, messages = quiet_draw([tmp_path / "sweep"], out)
    assert messages == []
    assert [p.name for p in written] == ["grad_norm_sq.png", "grad_norm_sq.pdf", "test_loss.png", "test_loss.pdf",
                                         "iwae_bound_vs_K.png", "iwae_bound_vs_K.pdf", "figures.json"]
    assert_valid_figures(out, ["grad_norm_sq", "test_loss", "iwae_bound_vs_K"])
    summary = read_summary(out)
    by_label = {g["label"]: g for g in summary["groups"]}
    assert set(by_label) == {"K=1", "K=5"}
    assert by_label["K=1"]["C"] == pytest.approx(3.0, rel=1e-9)
    assert by_label["K=5"]["C"] == pytest.approx(7.0, rel=1e-9)
    assert by_label["K=1"]["C_fit_iterations"] == [50.0, 100.0]
    assert by_label["K=5"]["C_per_epoch"] == pytest.approx(14.0, rel=1e-9)
    assert by_label["K=1"]["iterations_per_epoch"] == 25
    final = by_label["K=5"]["final"]
    assert final["minibatch_grad_norm_sq_avg"]["mean"] == pytest.approx(7 * rate(100.0))
    assert final["minibatch_grad_norm_sq_avg"]["min"] == pytest.approx(3.5 * rate(100.0))
    assert final["minibatch_grad_norm_sq_avg"]["max"] == pytest.approx(10.5 * rate(100.0))
    assert final["test_loss"] == pytest.approx({"x": 100.0, "mean": 30.0, "min": 17.5, "max": 42.5, "seeds": 3})
    assert final["test_objective_loss"]["mean"] == pytest.approx(90 / 4 - 5)
    assert by_label["K=1"]["log_log_slope"] == pytest.approx(
        np.polyfit(np.log(np.arange(50, 101)), np.log(rate(np.arange(50, 101.0))), 1)[0])


def test_unequal_seed_lengths_use_the_common_prefix(tmp_path: Path) -> None:
    iwae = {"objective.name": "iwae"}
    make_run(tmp_path / "k1-s0", seed=0, overrides={**iwae, "objective.num_particles": 1})
    make_run(tmp_path / "k5-s0", seed=0, overrides={**iwae, "objective.num_particles": 5}, avg=lambda n: 2 * rate(n),
             test_objective=lambda e: 50 - e)
    make_run(tmp_path / "k5-s1", seed=1, overrides={**iwae, "objective.num_particles": 5}, avg=lambda n: 4 * rate(n),
             test_objective=lambda e: 60 - e, stop=60, status="failed")
    make_run(tmp_path / "elbo", seed=0, overrides={"training.batch_size": 32})  # not an IWAE run
    out = tmp_path / "out"
    written, messages = quiet_draw([tmp_path], out)
    assert any("60 recorded iterations common to its 2 seeds (seed 1 stops at n=60, status failed)" in m
               for m in messages)
    assert any("evaluations common" in m for m in messages)
    assert any("final values at n=100 from 1 of 2 seeds (seed 1 stops earlier)" in m for m in messages)
    assert_valid_figures(out, ["grad_norm_sq", "test_loss", "iwae_bound_vs_K"])
    groups = {g["label"]: g for g in read_summary(out)["groups"]}
    assert set(groups) == {"IWAE, K=1, B=64", "IWAE, K=5, B=64", "ELBO, K=1, B=32"}
    cut = groups["IWAE, K=5, B=64"]
    assert cut["iterations"] == 60 and cut["statuses"] == ["completed", "failed"]
    assert cut["C"] == pytest.approx(3.0)  # mean of 2 f(n) and 4 f(n) on n <= 60
    assert cut["C_fit_iterations"] == [30.0, 60.0]
    assert cut["final"]["minibatch_grad_norm_sq_epoch_mean"]["x"] == pytest.approx(60 / 25)  # epoch 3 cut after 10 of 25
    assert cut["final"]["test_objective_loss"]["x"] == 50.0  # the last evaluation both seeds reached
    assert cut["final"]["test_objective_loss"]["mean"] == pytest.approx((49 + 59) / 2)
    # the K figure uses the last evaluation, over the seeds that got there
    assert cut["last_evaluation"]["test_objective_loss"] == {"step": 100.0, "mean": 47.0, "min": 47.0,
                                                             "max": 47.0, "seeds": 1}


def test_single_seed_one_k_and_redrawing(tmp_path: Path) -> None:
    make_run(tmp_path / "runs" / "iwae5", overrides={"objective.name": "iwae", "objective.num_particles": 5})
    out = tmp_path / "runs" / "plots"  # under the input: holds no run, so it is never read as one
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        first = draw_figures([tmp_path / "runs"], out)
        before = (out / "grad_norm_sq.png").stat().st_mtime_ns
        second = draw_figures([tmp_path / "runs"], out)
    assert first == second and (out / "grad_norm_sq.png").stat().st_mtime_ns >= before
    assert not (out / "iwae_bound_vs_K.png").exists()  # one K only
    assert_valid_figures(out, ["grad_norm_sq", "test_loss"])
    (group,) = read_summary(out)["groups"]
    assert group["label"] == "synthetic" and len(group["runs"]) == 1
    band = group["final"]["minibatch_grad_norm_sq_avg"]
    assert band["min"] == band["mean"] == band["max"] and band["seeds"] == 1
    assert math.isfinite(group["C"])


def test_default_warnings_are_figures_warnings(tmp_path: Path) -> None:
    make_run(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "run.json").write_text('{"status": "running", "seed": 1}')
    (tmp_path / "b" / "metrics.csv").write_text("")
    with pytest.warns(FiguresWarning, match="no metrics rows yet"):
        assert len(find_runs([tmp_path])) == 1


def test_runs_without_evaluations_draw_the_gradient_figure_only(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r")
    (run / "eval.csv").unlink()
    out = tmp_path / "out"
    written, messages = quiet_draw([run], out)
    assert [p.name for p in written] == ["grad_norm_sq.png", "grad_norm_sq.pdf", "figures.json"]
    assert messages == ["group 'synthetic': no test curve (no eval rows from seed 0 [completed])"]
    assert_valid_figures(out, ["grad_norm_sq"])


def test_an_evaluation_inside_an_epoch_sits_at_its_fraction_of_the_epoch(tmp_path: Path) -> None:
    """training.iterations can end a run mid-epoch; its final evaluation is not a whole epoch."""
    from bbvi_kit.results import group_curves

    run = make_run(tmp_path / "run", epochs=3, per_epoch=25, stop=60)  # 2 whole epochs, then 10 steps
    with open(run / "eval.csv", "a") as fh:
        fh.write("60,2,5.0,5.0,2.4\n")  # the runner's final evaluation after step 60
    (group,) = group_runs(find_runs([run]))
    data = group_curves(group, lambda message: None)
    np.testing.assert_allclose(data.eval_epochs, [1.0, 2.0, 2.4])


def test_a_swept_section_is_labelled_by_its_plugins(tmp_path: Path) -> None:
    """sweep: {optimizer: [{name: sgd, ...}, {name: adam, ...}]}: "SGD" and "Adam", not every option."""
    sgd = {"name": "sgd", "lr": 0.001, "momentum": 0.0}
    adam = {"name": "adam", "lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8}
    for name, optimizer in (("sgd", sgd), ("adam", adam)):
        make_run(tmp_path / name, overrides={"optimizer": optimizer}, point={"optimizer": optimizer},
                 point_label=f"optimizer={name}")
    assert [g.label for g in group_runs(find_runs([tmp_path]))] == ["Adam", "SGD"]
    make_run(tmp_path / "adam-fast", overrides={"optimizer": {**adam, "lr": 0.01}},
             point={"optimizer": {**adam, "lr": 0.01}}, point_label="optimizer=adam-fast")
    assert [g.label for g in group_runs(find_runs([tmp_path]))] == ["Adam, γ₀=0.001", "Adam, γ₀=0.01", "SGD, γ₀=0.001"]


def test_the_paper_scale_is_the_authors_per_epoch_quantity(tmp_path: Path) -> None:
    """(1/(N d)) sum over an epoch's batches of ||B_k g_k||^2: 25 batches of 64 but a last one of
    N - 24 * 64 = 1550 - 1536 = 14 examples."""
    run = make_run(tmp_path / "run", gns=lambda n, e: 2.0 + 0 * n)
    info = json.loads((run / "run.json").read_text())
    info.update(num_train=1550, num_parameters=1000)
    (run / "run.json").write_text(json.dumps(info))
    out = tmp_path / "paper"
    draw_figures([run], out, warn=lambda m: None, scale="paper")
    final = read_summary(out)["groups"][0]["final"]["minibatch_grad_norm_sq_epoch_mean"]
    expected = (24 * 64**2 + 14**2) * 2.0 / (1550 * 1000)
    assert final["mean"] == pytest.approx(expected)
    assert read_summary(out)["scale"] == "paper"
    plain = tmp_path / "plain"
    draw_figures([run], plain, warn=lambda m: None)
    assert read_summary(plain)["groups"][0]["final"]["minibatch_grad_norm_sq_epoch_mean"]["mean"] == pytest.approx(2.0)
    del info["num_train"]
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="the paper scale needs num_train"):
        draw_figures([run], tmp_path / "again", warn=lambda m: None, scale="paper")
    with pytest.raises(InputError, match="scale must be plain or paper"):
        draw_figures([run], tmp_path / "again", scale="log")


def test_the_full_data_running_average_is_drawn_and_summarised(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (run / "diagnostics").mkdir()
    (run / "diagnostics" / "full_gradient.csv").write_text(
        "step,epoch,block_start,block_end,full_grad_norm_sq,full_grad_norm_sq_se,num_estimates,"
        "full_grad_norm_sq_avg,full_grad_norm_sq_avg_se,time\n"
        "1,0,1,1,9.0,1.0,4,9.0,1.0,0.1\n2,0,2,2,7.0,1.0,4,8.0,0.7,0.2\n40,1,3,50,1.0,0.1,4,1.3,0.2,0.3\n")
    out = tmp_path / "figs"
    draw_figures([run], out, warn=lambda m: None)
    final = read_summary(out)["groups"][0]["final"]["full_grad_norm_sq_avg"]
    assert final["x"] == 50 and final["mean"] == pytest.approx(1.3)


def test_runs_written_with_the_old_column_names_are_read_under_the_new_ones(tmp_path: Path) -> None:
    run = make_run(tmp_path / "old")
    text = (run / "metrics.csv").read_text()
    (run / "metrics.csv").write_text(text.replace("minibatch_grad_norm_sq", "grad_norm_sq", 3))
    (record,) = find_runs([run])
    assert record.has_column("metrics", "minibatch_grad_norm_sq_avg") and not record.has_column("metrics", "grad_norm_sq")
