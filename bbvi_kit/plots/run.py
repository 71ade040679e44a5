"""``plot_run``: a run's own figures, ``plots/loss.png`` and ``plots/grad_norm_sq.png``, drawn from
its CSV files (never from live objects), so ``bbvi-kit plot RUN_DIR`` redraws them at any time."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bbvi_kit.errors import InputError  # noqa: E402
from bbvi_kit.plots.run_grad_norm import draw_run_grad_norm  # noqa: E402
from bbvi_kit.plots.run_loss import draw_run_loss  # noqa: E402
from bbvi_kit.runs import ensure_folder, read_csv  # noqa: E402

__all__ = ["plot_run"]


def _save(fig: plt.Figure, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


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
    paths = [_save(draw_run_loss(run_dir, metrics, evals), out / "loss.png")]
    paths.append(_save(draw_run_grad_norm(run_dir, metrics), out / "grad_norm_sq.png"))
    return paths
