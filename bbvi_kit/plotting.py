"""Figures drawn from a run directory's CSV files (never from live objects).

Because plots read only ``metrics.csv``, ``eval.csv`` and ``diagnostics/full_gradient.csv``, they
can be redrawn at any time with ``bbvi-kit plot RUN_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bbvi_kit.errors import InputError  # noqa: E402
from bbvi_kit.runs import ensure_folder, read_csv  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _column(rows: list[dict[str, float]], key: str) -> list[float]:
    return [r[key] for r in rows]


def _objective_label(run_dir: Path) -> str | None:
    """Legend of the test-objective curve; ``None`` when it is the one-sample ELBO again."""
    recipe_path = run_dir / "recipe.yaml"
    if not recipe_path.is_file():
        return "test negative objective"
    objective = (yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}).get("objective") or {}
    name, k = objective.get("name", "objective"), objective.get("num_particles", 1)
    if name == "elbo" and k == 1:
        return None
    details = ", ".join(f"{key}={objective[key]}" for key in ("num_particles", "beta") if key in objective)
    return f"test negative {name} ({details})" if details else f"test negative {name}"


def _draw_full_gradient(ax: plt.Axes, path: Path) -> None:
    """The full_gradient diagnostic's estimates of the full-data ‖∇L‖² (U ± t SE, positive ones on
    the log axis) and, under the stratified schedule, their running average ± 2 SE, the quantity
    the theorems bound."""
    if not path.is_file():
        return
    rows = [r for r in read_csv(path) if r.get("full_grad_norm_sq", float("nan")) > 0]
    if not rows:
        return
    from bbvi_kit.diagnostics.full_gradient import interval_multiplier

    t = interval_multiplier(int(rows[0]["num_estimates"]))
    u, se = _column(rows, "full_grad_norm_sq"), _column(rows, "full_grad_norm_sq_se")
    ax.errorbar(_column(rows, "step"), u, yerr=[[min(t * e, 0.999 * v) for v, e in zip(u, se)], [t * e for e in se]],
                fmt="o", ms=3, color="tab:red", lw=0.8, label=r"full-data $\|\nabla L\|^2$ (± t SE)")
    if "full_grad_norm_sq_avg" in rows[0]:
        ax.plot(_column(rows, "block_end"), _column(rows, "full_grad_norm_sq_avg"), lw=2.0, color="tab:red",
                label=r"full-data running average $\frac{1}{n}\sum_k \|\nabla L_k\|^2$ (the theorems')")


def plot_run(run_dir: str | Path) -> list[Path]:
    """Draw ``plots/loss.png`` and ``plots/grad_norm_sq.png`` for one run; returns their paths."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.csv"
    if not metrics_path.is_file():
        raise InputError(f"{run_dir}: not a run directory with metrics (no metrics.csv)")
    metrics = read_csv(metrics_path)
    if not metrics:
        raise InputError(f"{metrics_path}: no rows to plot")
    evals = read_csv(run_dir / "eval.csv") if (run_dir / "eval.csv").is_file() else []
    out = ensure_folder(run_dir / "plots")
    steps = _column(metrics, "step")

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(steps, _column(metrics, "loss"), lw=0.8, alpha=0.6, label="training loss (mini-batch)")
    if evals:
        ax.plot(_column(evals, "step"), _column(evals, "test_loss"), "o-", lw=2, label="test negative ELBO")
        label = _objective_label(run_dir)
        if label is not None:
            ax.plot(_column(evals, "step"), _column(evals, "test_objective_loss"), "s--", lw=1.5, label=label)
    ax.set_xlabel("iteration n")
    ax.set_ylabel("nats per example")
    ax.set_title(f"Loss — {run_dir.parent.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    paths = [_save(fig, out / "loss.png")]

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(steps, _column(metrics, "minibatch_grad_norm_sq"), lw=0.6, alpha=0.45, label=r"mini-batch $\|g_n\|^2$")
    ax.plot(steps, _column(metrics, "minibatch_grad_norm_sq_avg"), lw=2.2, color="black",
            label=r"its running average $\frac{1}{n}\sum_k \|g_k\|^2$")
    for key in metrics[0]:
        if key.startswith("minibatch_grad_norm_sq_") and key != "minibatch_grad_norm_sq_avg":
            ax.plot(steps, _column(metrics, key), lw=0.8, ls="--", alpha=0.7,
                    label=rf"mini-batch $\|g_{{\{key[len('minibatch_grad_norm_sq_'):]}}}\|^2$")
    _draw_full_gradient(ax, run_dir / "diagnostics" / "full_gradient.csv")
    ax.set_yscale("log")
    ax.set_xlabel("iteration n")
    ax.set_ylabel("squared gradient norm")
    ax.set_title(f"Squared gradient norms — {run_dir.parent.name}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "grad_norm_sq.png"))
    return paths
