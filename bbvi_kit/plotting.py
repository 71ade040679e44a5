"""A run's own figures (``plots/loss.png``, ``plots/grad_norm_sq.png``): kept for
``bbvi_kit.plotting.plot_run``; the code lives in :mod:`bbvi_kit.plots.run`."""

from bbvi_kit.plots.run import plot_run

__all__ = ["plot_run"]
