"""The per-run figure ``plots/loss.png``: the training loss per mini-batch and the test losses per
evaluation, drawn from ``metrics.csv`` and ``eval.csv``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

__all__ = ["draw_run_loss"]


def column(rows: list[dict[str, float]], key: str) -> list[float]:
    """Column ``key`` of rows as :func:`bbvi_kit.runs.read_csv` gives them."""
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


def draw_run_loss(run_dir: Path, metrics: list[dict[str, float]], evals: list[dict[str, float]]) -> plt.Figure:
    """The loss figure of the run in ``run_dir`` from its ``metrics`` and ``evals`` rows."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(column(metrics, "step"), column(metrics, "loss"), lw=0.8, alpha=0.6, label="training loss (mini-batch)")
    if evals:
        ax.plot(column(evals, "step"), column(evals, "test_loss"), "o-", lw=2, label="test negative ELBO")
        label = _objective_label(run_dir)
        if label is not None:
            ax.plot(column(evals, "step"), column(evals, "test_objective_loss"), "s--", lw=1.5, label=label)
    ax.set_xlabel("iteration n")
    ax.set_ylabel("nats per example")
    ax.set_title(f"Loss — {run_dir.parent.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
