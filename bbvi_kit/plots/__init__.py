"""Figures drawn only from run directories (matplotlib, never live objects).

``draw_figures(paths, out)`` (:mod:`~bbvi_kit.plots.figures`) draws the figures of Surendran,
Godichon-Baggioni & Le Corff, *Theoretical Convergence Guarantees for Variational Autoencoders*
(AISTATS 2025) for every run under ``paths``: a bold line for the mean over seeds, a band from the
minimum to the maximum over seeds, one colour per group of runs that differ only in their seed,
and a dashed reference C log n / √n. Each figure is a module:

``grad_norm_sq`` (:mod:`~bbvi_kit.plots.grad_norm`)
    (a) the mini-batch ‖g_k‖² averaged over each epoch against epochs, log y; with
    ``scale="paper"`` instead the quantity the authors' code logged per epoch,
    (1 / (N d)) Σ_{k in the epoch} B_k² ‖g_k‖²; (b) running averages against the iteration n on
    log-log axes: the mini-batch (1/n) Σ_{k≤n} ‖g_k‖² (solid; its expectation carries the noise
    floor tr Cov(g)) and, when ``full_gradient`` ran with ``schedule: stratified``, the full-data
    (1/n) Σ_{k≤n} ‖∇L(θ_k)‖² (dotted, markers), the quantity the theorems bound by O(log n / √n).
    Curves of more than :data:`~bbvi_kit.results.bands.MAX_POINTS` points are thinned for drawing.
``test_loss`` (:mod:`~bbvi_kit.plots.test_loss`)
    test negative ELBO against epochs completed (or iterations), and the test negative training
    objective when some group does not train the one-sample ELBO.
``iwae_bound_vs_K`` (:mod:`~bbvi_kit.plots.iwae_vs_k`)
    with IWAE runs at two or more K: the final test −IWAE_K bound and test −ELBO against K.
``snr_vs_K`` (:mod:`~bbvi_kit.plots.snr_vs_k`)
    with ``snr`` runs at two or more K: the final SNR(φ) and SNR(θ) against K, one line per
    series (e.g. per estimator), with the predicted slopes ∓1/2 dashed.

The constant C is fitted per group by least squares in log space over the second half of the
iterations (:func:`bbvi_kit.results.rates.fit_log_rate`); the fitted values, the log-log slope
and the final means and ranges per group go to ``figures.json`` beside the figures.

``plot_run(run_dir)`` (:mod:`~bbvi_kit.plots.run`) draws a run's own ``plots/loss.png``
(:mod:`~bbvi_kit.plots.run_loss`) and ``plots/grad_norm_sq.png``
(:mod:`~bbvi_kit.plots.run_grad_norm`); ``diagnostic_figure`` (:mod:`~bbvi_kit.plots.diagnostic`)
draws any diagnostic's CSV for the report. Reading and statistics live in :mod:`bbvi_kit.results`.

References:
    S. Surendran, A. Godichon-Baggioni, S. Le Corff. Theoretical Convergence Guarantees for
    Variational Autoencoders. AISTATS 2025, PMLR 258:3547–3555. arXiv:2410.16750.
"""

from bbvi_kit.plots.diagnostic import diagnostic_figure
from bbvi_kit.plots.figures import draw_figures
from bbvi_kit.plots.run import plot_run
from bbvi_kit.results.discover import FiguresWarning

__all__ = ["FiguresWarning", "diagnostic_figure", "draw_figures", "plot_run"]
