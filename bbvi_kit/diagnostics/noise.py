r"""Gradient noise and gradient signal-to-noise ratio: repeated stochastic gradients at the current
parameters, per parameter group.

Both diagnostics look at the gradient the training step uses, g = grad of the run's own surrogate
loss (``training.loss``: its objective with K = ``num_particles`` particles, its estimator) on a
mini-batch of B examples, as a per-example mean (nats per example, like the engine's losses):

.. math::
    g = \frac1B \sum_{i=1}^B h(x_{b_i}, \varepsilon_{i,1..K}),

h the per-example gradient of the K-particle bound. Its randomness has two sources: which
examples form the batch (b_1..b_B) and the latent noise eps. :class:`GradientNoise` measures
the total variance E||g - E g||^2 and splits it between the two by nested resampling;
:class:`GradientSNR` measures the signal-to-noise ratio of Rainforth et al. (2018) per group.

Shared machinery: :func:`sample_batch` (B training examples drawn at random) and
:func:`gradient_draw` (one gradient, flattened per parameter group in float64, through
:func:`~bbvi_kit.diagnostics.full_gradient.batch_gradient`: ``p.grad`` untouched, the
estimator's running state reset before each pass). Both diagnostics run inside
:func:`~bbvi_kit.diagnostics.base.preserved_training_state` (estimator state and module buffers
restored). Moments are accumulated in a streaming (Welford) way, so memory stays a few copies of
the parameter vector whatever the number of draws.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Mapping, Sequence, Sized, cast

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset, TensorDataset, default_collate

from bbvi_kit.data.base import as_args
from bbvi_kit.diagnostics.base import Diagnostic, DiagnosticContext, DiagnosticOptions, preserved_training_state
from bbvi_kit.diagnostics.full_gradient import batch_gradient, group_slices
from bbvi_kit.diagnostics.variants import build_estimators, measure_variants
from bbvi_kit.errors import InputError
from bbvi_kit.findings import Finding
from bbvi_kit.objectives.base import Objective
from bbvi_kit.parameters import ParameterGroups
from bbvi_kit.registry import estimators as estimator_registry
from bbvi_kit.registry import register_diagnostic
from bbvi_kit.results.groups import Group
from bbvi_kit.results.run import Run
from bbvi_kit.results.table import Table, last_finite
from bbvi_kit.results.words import num, short

if TYPE_CHECKING:  # pragma: no cover
    from bbvi_kit.diagnostics.training_state import TrainingState


# -- shared helpers ------------------------------------------------------------------------------
ESTIMATORS_FIELD = Field(
    None, min_length=1, max_length=16,
    description="also measure under these estimator plugins (default options), on the same parameters and batch "
                "(columns *_<estimator>)",
)


def sample_batch(dataset: Dataset, batch_size: int, *, replacement: bool, device: torch.device) -> tuple:
    """``batch_size`` examples of ``dataset`` drawn uniformly at random, as model arguments on
    ``device``: independently (with replacement) or as a random subset of distinct examples (as
    the training loop's shuffled batches are). Indices come from the global torch stream (the
    engine runs diagnostics in a forked, seeded one)."""
    n = len(cast(Sized, dataset))
    if n == 0:
        raise InputError("the training set is empty")
    if replacement:
        index = torch.randint(n, (batch_size,))
    else:
        if batch_size > n:
            raise InputError(f"a batch of {batch_size} distinct examples from a training set of {n}: "
                             "lower batch_size or set replacement: true")
        index = torch.randperm(n)[:batch_size]
    if isinstance(dataset, TensorDataset):
        batch = dataset[index]
    else:
        batch = default_collate([dataset[int(i)] for i in index])
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in as_args(batch))


def parameter_groups(training: "TrainingState", args: tuple) -> dict[str, list[torch.Tensor]]:
    """The run's parameter groups (``phi``, ``theta`` by default); before its first step they are
    found as the step would find them, from one pass of the loss (nothing is stored)."""
    if training.groups:
        return training.groups
    particles = training.loss(*args).particles
    groups = ParameterGroups(training.modules, training.declared_groups)
    groups.update(particles.model_trace, particles.guide_trace)
    return groups.groups


def gradient_draw(training: "TrainingState", args: tuple, params: Sequence[torch.Tensor], slices: Mapping[str, slice],
                  estimator_state: Mapping | None = None) -> dict[str, torch.Tensor]:
    """One stochastic gradient of the run's surrogate loss on the batch ``args`` (fresh latent
    noise), flattened per group (``slices`` of ``params``, from :func:`group_slices`) into float64
    vectors. Through :func:`batch_gradient`: ``p.grad`` is not touched, a parameter the loss does
    not reach counts as zero, and the estimator's state (a running baseline) is reset to
    ``estimator_state`` first, so every draw uses the run's current baseline."""
    grads = batch_gradient(training, args, params, estimator_state)
    return {name: torch.cat([g.reshape(-1) for g in grads[sl]]).to(torch.float64) for name, sl in slices.items()}


class RunningMoments:
    r"""Streaming mean and centred sum of squares of vectors (Welford's algorithm).

    After n updates with v_1..v_n: ``mean`` = (1/n) sum v_t and ``m2`` = sum_t (v_t - mean)^2,
    per coordinate (``per_coordinate=True``) or summed over coordinates (a scalar, which is all
    a trace of a covariance needs and saves one vector of memory).
    """

    def __init__(self, per_coordinate: bool = False) -> None:
        self.per_coordinate = per_coordinate
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, value: torch.Tensor) -> None:
        self.count += 1
        if self.mean is None:
            self.mean = value.clone()
            self.m2 = torch.zeros_like(value) if self.per_coordinate else value.new_zeros(())
            return
        delta = value - self.mean
        self.mean += delta / self.count
        product = delta * (value - self.mean)
        self.m2 = self.m2 + (product if self.per_coordinate else product.sum())  # type: ignore[operator]

    def variance(self) -> torch.Tensor:
        """Unbiased sample variance: m2 / (n - 1) (per coordinate, or its sum: the trace)."""
        assert self.m2 is not None and self.count > 1
        return self.m2 / (self.count - 1)


def _batch_size(context: DiagnosticContext, option: int | None) -> int:
    if option is not None:
        return option
    return min(context.training.batch_size, len(cast(Sized, context.train)))


# -- gradient noise ------------------------------------------------------------------------------
@register_diagnostic("gradient_noise")
class GradientNoise(Diagnostic):
    r"""Total variance of the stochastic gradient, split into its mini-batch and latent parts.

    For the gradient g of the run's loss on a mini-batch of B examples with K particles each
    (per-example mean, see :mod:`bbvi_kit.diagnostics.noise`), the law of total variance splits
    the trace of its covariance:

    .. math::
        \mathbb E\|g - \mathbb E g\|^2
        = \underbrace{\mathbb E_{\rm batch}\big[\mathbb E_z \|g - \mathbb E_z[g|{\rm batch}]\|^2\big]}_{\rm latent}
        + \underbrace{\mathbb E_{\rm batch}\|\mathbb E_z[g|{\rm batch}] - \mathbb E g\|^2}_{\rm batch}.

    With h(x, eps) the gradient of one example's K-particle bound and examples drawn
    independently, batch = (1/B) Var_x(E_eps h) and, for the ELBO (K particles averaged),
    latent = (1/(B K)) E_x Var_eps(h_1) (h_1: one particle): the batch part falls as 1/B, the
    latent part as 1/(B K). This is the noise term d* log n / (B K sqrt n) of Surendran et al.
    (AISTATS 2025).

    Estimated by nested resampling, a one-way random-effects analysis of variance on vectors:
    R = ``num_batches`` batches b_r of B training examples, and on each S = ``samples_per_batch``
    gradients g_rs with fresh latent noise. With gbar_r = (1/S) sum_s g_rs and gbar = (1/R) sum_r
    gbar_r,

    .. math::
        W = \frac1R \sum_r \frac{1}{S-1} \sum_s \|g_{rs} - \bar g_r\|^2, \qquad
        A = \frac{1}{R-1} \sum_r \|\bar g_r - \bar g\|^2,

    ``grad_var_latent`` = W, ``grad_var_batch`` = A - W / S, ``grad_var_total`` = their sum, all
    three unbiased (the batch part can come out slightly negative when it is small against the
    latent part: it is not clipped), and ``grad_mean_norm_sq`` = ||gbar||^2 - A / R, an unbiased
    estimate of ||E g||^2 (||gbar||^2 alone exceeds it by Var(gbar) = A / R on average). Each
    also per parameter group (``_phi``, ``_theta``, or the groups the model plugin names); the
    totals are sums over groups. Columns ``batch_size`` (B) and ``num_particles`` (K) say what was
    measured.

    Batches are drawn with replacement by default (``replacement: true``: B independent
    examples, so the batch part is exactly the training set's per-example variance over B);
    ``replacement: false`` draws B distinct examples, as the training loop's shuffled batches
    are, and the batch part carries the finite-population factor (N - B) / (N - 1) for a
    training set of N examples.

    With ``estimators: [pathwise, stl, ...]`` every column is measured again under each estimator
    plugin, on the same batches and latent draws (columns ``<column>_<estimator>``; see
    :mod:`bbvi_kit.diagnostics.variants`).

    Cost: R * S forward and backward passes of one mini-batch of B examples with K particles
    (default 32), and about three float64 copies of the parameter vector. The modules stay in
    the mode they are in (training mode during a run); buffers a forward pass may update
    (batch-norm statistics) and the estimator's state (a running baseline, reset before each
    pass so every pass uses the run's current one) are restored.
    """

    class Options(DiagnosticOptions):
        num_batches: int = Field(8, ge=2, le=1_000_000, description="R, mini-batches drawn (outer samples)")
        samples_per_batch: int = Field(
            4, ge=2, le=1_000_000, description="S, gradients with fresh latent noise per mini-batch (inner samples)"
        )
        batch_size: int | None = Field(
            None, ge=1, le=10_000_000, description="B, examples per mini-batch; null: training.batch_size (at most the training set)"
        )
        replacement: bool = Field(
            True, description="draw each batch's examples with replacement; false: B distinct examples"
        )
        estimators: list[str] | None = ESTIMATORS_FIELD

    options: Options

    def measure(self, context: DiagnosticContext) -> dict[str, float]:
        return measure_variants(context, self._measure, estimators=self.options.estimators or (),
                                keep=lambda column: column.startswith("grad_"), key="gradient_noise.estimators")

    def check(self, objective: Objective, key: str) -> None:
        build_estimators(self.options.estimators or (), objective, f"{key}.estimators")

    def _measure(self, context: DiagnosticContext) -> dict[str, float]:
        o = self.options
        training = context.training
        batch_size = _batch_size(context, o.batch_size)
        R, S = o.num_batches, o.samples_per_batch
        with preserved_training_state(training) as estimator_state:
            within_sum: dict[str, torch.Tensor] = {}
            outer: dict[str, RunningMoments] = {}
            groups: Mapping[str, list[torch.Tensor]] | None = None
            for _ in range(R):
                args = sample_batch(context.train, batch_size, replacement=o.replacement, device=context.device)
                if groups is None:
                    groups = parameter_groups(training, args)
                    params, slices = group_slices(groups)
                    outer = {name: RunningMoments() for name in groups}
                inner = {name: RunningMoments() for name in groups}
                for _ in range(S):
                    for name, g in gradient_draw(training, args, params, slices, estimator_state).items():
                        inner[name].update(g)
                for name, moments in inner.items():
                    within = moments.variance()
                    within_sum[name] = within_sum[name] + within if name in within_sum else within
                    assert moments.mean is not None
                    outer[name].update(moments.mean)
        assert groups is not None
        columns: dict[str, torch.Tensor] = {}
        for name in groups:
            latent = within_sum[name] / R
            between = outer[name].variance()
            mean = outer[name].mean
            assert mean is not None
            columns[f"grad_var_total_{name}"] = between - latent / S + latent
            columns[f"grad_var_batch_{name}"] = between - latent / S
            columns[f"grad_var_latent_{name}"] = latent
            columns[f"grad_mean_norm_sq_{name}"] = mean.square().sum() - between / R
        names = list(groups)
        totals = {
            key: torch.stack([columns[f"{key}_{name}"] for name in names]).sum()
            for key in ("grad_var_total", "grad_var_batch", "grad_var_latent", "grad_mean_norm_sq")
        }
        ordered = {**totals, **columns}
        values = torch.stack(list(ordered.values())).tolist()  # one transfer to the host
        return {**dict(zip(ordered, values)), "batch_size": batch_size,
                "num_particles": training.objective.num_particles}

    headline_column = "grad_var_total"  # the column whose trend the report states

    @classmethod
    def findings(cls, table: Table, run: Run, label: str = "") -> list[Finding]:
        """The shares of the gradient variance from mini-batching and from latent sampling."""
        batch, latent = last_finite(table, "grad_var_batch"), last_finite(table, "grad_var_latent")
        if batch is None or latent is None or not batch[1] + latent[1] > 0:
            return []
        share = batch[1] / (batch[1] + latent[1])
        more = ("a larger batch B reduces it more than a larger K" if share > 0.5 else
                "more latent samples K (or a larger B) reduce most of it")
        who = f"{label}: " if label else ""
        return [Finding(
            f"{who}at n = {num(batch[0])}, mini-batching makes {share:.0%} of the gradient variance and latent "
            f"sampling {1 - share:.0%}: {more}.", "info", "diagnostic:gradient_noise",
            {"step": batch[0], "batch_share": share, "latent_share": 1 - share})]


# -- signal-to-noise ratio -----------------------------------------------------------------------
@register_diagnostic("snr")
class GradientSNR(Diagnostic):
    r"""Gradient signal-to-noise ratio per parameter group: encoder phi and decoder theta.

    Rainforth et al., "Tighter Variational Bounds are Not Necessarily Better" (ICML 2018) define,
    for each gradient coordinate j, SNR_j = |E g_j| / sd(g_j), and show for the pathwise IWAE
    gradient with K particles that SNR grows as sqrt(K) for the model (theta) and falls as
    1/sqrt(K) for the inference network (phi): E g_phi vanishes as O(1/K) while its sd falls as
    O(1/sqrt K) only (summarised in Surendran et al., AISTATS 2025: sqrt(B K) for theta,
    sqrt(B / K) for phi). With M = ``num_draws`` gradients g_1..g_M, sample mean gbar and unbiased
    sample variance v_j per coordinate, per group:

    .. math::
        {\rm snr} = \frac{1}{d'} \sum_{j:\, v_j > 0} \frac{|\bar g_j|}{\sqrt{v_j}}, \qquad
        {\rm snr\_norm} = \frac{\|\bar g\|^2 - \sum_j v_j / M}{\sum_j v_j},

    ``snr_<group>`` the mean over the d' coordinates that vary (Rainforth et al.'s summary;
    constant coordinates, e.g. parameters the loss does not reach, are left out; NaN if none
    varies), ``snr_norm_<group>`` a norm-based ratio ||E g||^2 / E||g - E g||^2, the numerator
    corrected by its bias tr(Cov)/M so that it is consistent at any M (it may come out slightly
    negative when the signal is below the noise). The per-coordinate ratio is the plain plug-in
    estimate: with little signal it does not fall below about sqrt(2 / (pi M)).

    By default (``resample_batch: false``) the M gradients share one mini-batch of B training
    examples and differ only in their latent noise, as in Rainforth et al.: the SNR of the
    estimator of that batch's gradient. ``resample_batch: true`` draws a fresh batch for each,
    giving the SNR of the training step's stochastic gradient (mini-batch noise included).
    ``replacement`` says how a batch's examples are drawn (see ``gradient_noise``). Columns
    ``batch_size`` (B) and ``num_particles`` (K) say what was measured. With ``num_particles:
    [k1, k2, ...]`` the same measurement is repeated at each K on the same parameters and the
    same mini-batch (the objective's K swapped for the measurement only), giving
    ``snr_<group>_K<k>`` and ``snr_norm_<group>_K<k>``: the SNR against K at one point of the
    trajectory, free of the differences between runs trained with different K. With ``estimators:
    [pathwise, stl, dreg]`` the same measurement is repeated under each estimator plugin
    (:mod:`bbvi_kit.diagnostics.variants`), giving ``snr_<group>_<estimator>`` (and
    ``snr_<group>_<estimator>_K<k>`` with ``num_particles``): which estimator gives the encoder
    more signal, at one point of the trajectory (Tucker et al. 2019: under IWAE, DReG's SNR(φ)
    rises as √K where the pathwise one falls as 1/√K).

    Cost: M forward and backward passes of one mini-batch of B examples with K particles (default
    16), M more at each extra K, and about three float64 copies of the parameter vector. Modules stay in their mode;
    buffers and the estimator's state are restored, as for ``gradient_noise``.
    """

    class Options(DiagnosticOptions):
        num_draws: int = Field(16, ge=2, le=1_000_000, description="M, gradients drawn")
        batch_size: int | None = Field(
            None, ge=1, le=10_000_000, description="B, examples per mini-batch; null: training.batch_size (at most the training set)"
        )
        resample_batch: bool = Field(
            False,
            description="a fresh mini-batch for every draw; false: one batch, latent noise only (Rainforth et al.)",
        )
        replacement: bool = Field(
            True, description="draw a batch's examples with replacement; false: B distinct examples"
        )
        num_particles: list[Annotated[int, Field(ge=1, le=100_000)]] | None = Field(
            None, min_length=1, max_length=32,
            description="also measure at these K, on the same parameters and batch (columns *_K<k>)",
        )
        estimators: list[str] | None = ESTIMATORS_FIELD

    options: Options

    def measure(self, context: DiagnosticContext) -> dict[str, float]:
        return measure_variants(context, self._measure, estimators=self.options.estimators or (),
                                num_particles=self.options.num_particles or (),
                                keep=lambda column: column.startswith("snr"), key="snr.estimators")

    def check(self, objective: Objective, key: str) -> None:
        build_estimators(self.options.estimators or (), objective, f"{key}.estimators")

    def _measure(self, context: DiagnosticContext) -> dict[str, float]:
        o = self.options
        training = context.training
        batch_size = _batch_size(context, o.batch_size)
        with preserved_training_state(training) as estimator_state:
            args = sample_batch(context.train, batch_size, replacement=o.replacement, device=context.device)
            params, slices = group_slices(parameter_groups(training, args))
            moments = {name: RunningMoments(per_coordinate=True) for name in slices}
            for m in range(o.num_draws):
                if o.resample_batch and m > 0:
                    args = sample_batch(context.train, batch_size, replacement=o.replacement, device=context.device)
                for name, g in gradient_draw(training, args, params, slices, estimator_state).items():
                    moments[name].update(g)
        columns: dict[str, torch.Tensor] = {}
        for name, mom in moments.items():
            assert mom.mean is not None
            var = mom.variance()
            varies = var > 0
            ratio = mom.mean.abs()[varies] / var[varies].sqrt()
            columns[f"snr_{name}"] = ratio.mean() if ratio.numel() else var.new_tensor(float("nan"))
            noise = var.sum()
            columns[f"snr_norm_{name}"] = (mom.mean.square().sum() - noise / o.num_draws) / noise
        values = torch.stack(list(columns.values())).tolist()
        return {**dict(zip(columns, values)), "batch_size": batch_size,
                "num_particles": training.objective.num_particles}

    headline_column = "snr_phi"  # the column whose trend the report states

    @classmethod
    def findings(cls, table: Table, run: Run, label: str = "") -> list[Finding]:
        """The last SNR(φ) and SNR(θ); a warning when SNR(φ) is below 1; with ``estimators``,
        SNR(φ) under each (:func:`estimator_comparison`)."""
        phi, theta = last_finite(table, "snr_phi"), last_finite(table, "snr_theta")
        if phi is None:
            return []
        who = f"{label}: " if label else ""
        text = f"{who}at n = {num(phi[0])}, SNR(φ) = {short(phi[1])}"
        numbers = {"step": phi[0], "snr_phi": phi[1]}
        if theta is not None:
            text += f" and SNR(θ) = {short(theta[1])}"
            numbers["snr_theta"] = theta[1]
        found = [Finding(text + ": the encoder's gradient is mostly noise (SNR(φ) below 1).", "warning",
                         "diagnostic:snr", numbers) if phi[1] < 1 else Finding(text + ".", "info", "diagnostic:snr",
                                                                             numbers)]
        return found + estimator_comparison(table, who)

    @classmethod
    def comparison_findings(cls, name: str, groups: Sequence[Group]) -> list[Finding]:
        """SNR(φ) and SNR(θ) at the end against K, per series of points that differ only in K:
        the log-log slope of the mean over seeds (Rainforth et al. 2018 predict −1/2 and +1/2)."""
        return snr_against_k(name, groups)


def estimator_comparison(table: Table, who: str = "") -> list[Finding]:
    """With ``estimators: [...]``: the last SNR(φ) under each estimator measured (columns
    ``snr_phi_<estimator>``, at the run's K), and which gives the encoder the most signal."""
    by_estimator = {}
    for column in table.columns:
        estimator = column[len("snr_phi_"):]
        if column.startswith("snr_phi_") and estimator in estimator_registry:  # (not a group's name, not a K)
            last = last_finite(table, column)
            if last is not None:
                by_estimator[estimator] = last
    if len(by_estimator) < 2:
        return []
    step = max(v[0] for v in by_estimator.values())
    best = max(by_estimator, key=lambda e: by_estimator[e][1])
    listed = ", ".join(f"{e} {short(v[1])}" for e, v in by_estimator.items())
    numbers = {"step": step, **{f"snr_phi_{e}": v[1] for e, v in by_estimator.items()}}
    return [Finding(f"{who}at n = {num(step)}, SNR(φ) by estimator on the same parameters and draws: {listed}; "
                    f"{best} gives the encoder the most signal.", "info", "diagnostic:snr", numbers)]


def snr_series(name: str, groups: Sequence[Group]) -> list[tuple[str, list[tuple[float, Group]]]]:
    """The groups with diagnostic ``name`` in series that differ only in K, each sorted by K and
    labelled by the other differing settings ("estimator=dreg"; empty when K is all that differs)."""
    series: dict[str, list[tuple[float, Group]]] = {}
    for g in groups:
        if not any(name in r.diagnostics for r in g.runs):
            continue
        k = g.setting("objective.num_particles", 1)
        rest = {key: v for key, v in g.key.items() if key != "objective.num_particles"}
        series.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append((float(1 if k is None else k), g))
    found = []
    for points in series.values():
        if len({k for k, _ in points}) >= 2:
            points.sort(key=lambda kg: kg[0])
            label = ", ".join(p for key, p in points[0][1].parts.items() if key != "objective.num_particles")
            found.append((label, points))
    return found


def final_snr(name: str, points: Sequence[tuple[float, Group]], column: str) -> tuple[list[float], list[float]]:
    """K and the mean over each point's runs of the last finite value of ``column`` of diagnostic
    ``name``, for the points that have one."""
    ks, means = [], []
    for k, g in points:
        finals = [last_finite(r.diagnostics[name], column) for r in g.runs if name in r.diagnostics]
        values = [f[1] for f in finals if f is not None]
        if values:
            ks.append(k)
            means.append(float(np.mean(values)))
    return ks, means


def snr_against_k(name: str, groups: Sequence[Group]) -> list[Finding]:
    """The findings of :meth:`GradientSNR.comparison_findings` (diagnostic ``name``)."""
    topic = f"diagnostic:{name}"
    found: list[Finding] = []
    for label, points in snr_series(name, groups):
        where = f" ({label})" if label else ""
        for column, predicted in (("snr_phi", -0.5), ("snr_theta", 0.5)):
            ks, means = final_snr(name, points, column)
            if len(set(ks)) < 2 or min(means) <= 0:
                continue
            slope = float(np.polyfit(np.log(ks), np.log(means), 1)[0])
            span = f"from {short(means[0])} at K = {num(ks[0])} to {short(means[-1])} at K = {num(ks[-1])}"
            fit = f"log-log slope {slope:+.2f}; predicted {predicted:+.1f}"
            numbers = {"slope": slope, "predicted": predicted, "k_first": ks[0], "k_last": ks[-1],
                       "first": means[0], "last": means[-1]}
            if column == "snr_phi" and slope < 0:
                estimator = str(points[0][1].setting("estimator.name", "auto"))
                dreg = "" if estimator == "dreg" else (
                    ", or estimator dreg (doubly reparameterised gradients, Tucker et al. 2019), whose SNR(φ) "
                    "rises with K")
                found.append(Finding(
                    f"SNR(φ) falls with K{where}, {span} ({fit}): raising K alone starves the encoder gradient; "
                    f"consider a larger batch B, which raises the SNR of both groups as √B, training φ on an "
                    f"objective of its own (the ELBO or MIWAE for φ and IWAE for θ, as in PIWAE, Rainforth et al. "
                    f"2018){dreg}.", "warning", topic, numbers))
            elif column == "snr_phi":
                found.append(Finding(f"SNR(φ) does not fall with K{where}, {span} ({fit}).", "info", topic, numbers))
            else:
                verb = "rises" if slope > 0 else "does not rise"
                found.append(Finding(f"SNR(θ) {verb} with K{where}, {span} ({fit}).", "info", topic, numbers))
    return found
