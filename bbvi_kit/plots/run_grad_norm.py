"""The per-run figure ``plots/grad_norm_sq.png``: the mini-batch ‖g_n‖², its running average and
its parts, and the full_gradient diagnostic's estimates of the full-data ‖∇L‖² when it ran."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bbvi_kit.plots.run_loss import column  # noqa: E402
from bbvi_kit.runs import read_csv  # noqa: E402

__all__ = ["draw_run_grad_norm"]


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
    u, se = column(rows, "full_grad_norm_sq"), column(rows, "full_grad_norm_sq_se")
    ax.errorbar(column(rows, "step"), u, yerr=[[min(t * e, 0.999 * v) for v, e in zip(u, se)], [t * e for e in se]],
                fmt="o", ms=3, color="tab:red", lw=0.8, label=r"full-data $\|\nabla L\|^2$ (± t SE)")
    if "full_grad_norm_sq_avg" in rows[0]:
        ax.plot(column(rows, "block_end"), column(rows, "full_grad_norm_sq_avg"), lw=2.0, color="tab:red",
                label=r"full-data running average $\frac{1}{n}\sum_k \|\nabla L_k\|^2$ (the theorems')")


def draw_run_grad_norm(run_dir: Path, metrics: list[dict[str, float]]) -> plt.Figure:
    """The squared-gradient-norm figure of the run in ``run_dir`` from its ``metrics`` rows."""
    steps = column(metrics, "step")
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(steps, column(metrics, "minibatch_grad_norm_sq"), lw=0.6, alpha=0.45, label=r"mini-batch $\|g_n\|^2$")
    ax.plot(steps, column(metrics, "minibatch_grad_norm_sq_avg"), lw=2.2, color="black",
            label=r"its running average $\frac{1}{n}\sum_k \|g_k\|^2$")
    for key in metrics[0]:
        if key.startswith("minibatch_grad_norm_sq_") and key != "minibatch_grad_norm_sq_avg":
            ax.plot(steps, column(metrics, key), lw=0.8, ls="--", alpha=0.7,
                    label=rf"mini-batch $\|g_{{\{key[len('minibatch_grad_norm_sq_'):]}}}\|^2$")
    _draw_full_gradient(ax, run_dir / "diagnostics" / "full_gradient.csv")
    ax.set_yscale("log")
    ax.set_xlabel("iteration n")
    ax.set_ylabel("squared gradient norm")
    ax.set_title(f"Squared gradient norms — {run_dir.parent.name}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig
