r"""Posterior collapse: active units and the KL of each latent dimension.

A latent unit is one coordinate z_u of a per-example latent. Burda, Grosse & Salakhutdinov
(*Importance Weighted Autoencoders*, ICLR 2016, section 5.2) call it *active* when its encoder
mean varies with the data,

    A_u = Cov_x( E_{q(z|x)}[z_u] ) > threshold (0.01),

since a unit whose posterior mean ignores x carries no information about x (its posterior has
collapsed to something that does not depend on the example, usually the prior). The KL of each
unit to its prior,

    KL_u = mean over examples x of KL( q(z_u | x) || p(z_u) ),

says the same in nats: a collapsed unit has KL_u ≈ 0 and costs nothing in the ELBO, whose KL term
is Σ_u KL_u for a factorised q and p. For a Gaussian q and prior,
KL(N(μ, σ²) || N(m, s²)) = log(s/σ) + (σ² + (μ − m)²) / (2 s²) − 1/2, which for the standard
normal prior is ½ (μ² + σ² − 1 − log σ²).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Sequence, cast

import torch
from pydantic import Field
from pyro import poutine
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from bbvi_kit.diagnostics.base import Diagnostic, DiagnosticContext, DiagnosticOptions
from bbvi_kit.errors import InputError
from bbvi_kit.findings import Finding
from bbvi_kit.registry import register_diagnostic
from bbvi_kit.results.groups import Group
from bbvi_kit.results.run import Run
from bbvi_kit.results.table import Table, last_finite
from bbvi_kit.results.words import num

COLLAPSE_FRACTION = 0.5
"""The default ``warn_below``: posterior collapse is reported when fewer than this fraction of
the latent units are active."""

__all__ = ["LatentUnits", "PosteriorCollapse", "PosteriorCollapseWarning", "latent_units"]


class PosteriorCollapseWarning(UserWarning):
    """Fewer than ``warn_below`` of the latent units are active."""


@dataclass
class _SiteAccumulator:
    """Running per-unit statistics of one latent site over the examples seen so far (float64):
    the count, the mean and the sum of squared deviations of the encoder means (Chan et al.'s
    pairwise update), the summed per-unit KL, and the summed KL of sites whose q or prior does not
    factorise over units."""

    num_units: int
    count: int = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None
    kl_sum: torch.Tensor | None = None  # [units], None when the KL does not factorise
    site_kl_sum: torch.Tensor | None = None  # scalar, for non-factorised sites

    def add(self, means: torch.Tensor, kl: torch.Tensor | None, site_kl: torch.Tensor | None) -> None:
        """``means``: [examples, units]; ``kl``: [examples, units] or None; ``site_kl``: [examples]."""
        b = means.shape[0]
        batch_mean = means.mean(0)
        batch_m2 = ((means - batch_mean) ** 2).sum(0)
        if self.mean is None or self.m2 is None:
            self.mean, self.m2 = batch_mean, batch_m2
        else:
            total = self.count + b
            delta = batch_mean - self.mean
            self.mean = self.mean + delta * (b / total)
            self.m2 = self.m2 + batch_m2 + delta**2 * (self.count * b / total)
        self.count += b
        if kl is not None:
            self.kl_sum = kl.sum(0) if self.kl_sum is None else self.kl_sum + kl.sum(0)
        if site_kl is not None:
            self.site_kl_sum = site_kl.sum() if self.site_kl_sum is None else self.site_kl_sum + site_kl.sum()


@dataclass
class LatentUnits:
    """Per-unit results for one latent site: ``activity`` A_u (the unbiased variance over the
    examples of the encoder mean, NaN with one example), ``kl`` the mean over examples of
    KL(q(z_u|x) || p(z_u)) (NaN for every unit when q or the prior does not factorise over the
    units), ``site_kl`` the mean over examples of the whole site's KL, and ``num_examples``."""

    activity: torch.Tensor
    kl: torch.Tensor
    site_kl: float
    num_examples: int
    units: list[str] = field(default_factory=list)


def _unwrap(d: Distribution) -> Distribution:
    while isinstance(d, Independent):
        d = d.base_dist
    return d


def _full_shape(d: Distribution) -> torch.Size:
    return d.batch_shape + d.event_shape


def _mean(q: Distribution, mc_samples: int) -> torch.Tensor:
    """E_q[z] over the site's batch and event shape: ``q.mean``, else a Monte Carlo mean."""
    try:
        mean = q.mean
    except NotImplementedError:
        mean = q.sample((mc_samples,)).double().mean(0)
    return mean.double().expand(_full_shape(q))


def _unit_kl(q: Distribution, p: Distribution, mc_samples: int) -> torch.Tensor | None:
    """KL(q(z_u) || p(z_u)) per coordinate, shaped like the site's value; ``None`` unless q and p
    both factorise over the coordinates (independent univariate factors after unwrapping
    ``Independent``). Closed form for Normal / Normal, ``kl_divergence`` where registered,
    else a Monte Carlo estimate with ``mc_samples`` draws."""
    qb, pb = _unwrap(q), _unwrap(p)
    if qb.event_shape != torch.Size() or pb.event_shape != torch.Size():
        return None
    shape = _full_shape(q)
    if isinstance(qb, Normal) and isinstance(pb, Normal):
        mq, sq = qb.loc.double(), qb.scale.double()
        mp, sp = pb.loc.double(), pb.scale.double()
        kl = torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5
    else:
        try:
            kl = kl_divergence(qb, pb).double()
        except NotImplementedError:
            z = qb.sample((mc_samples,))
            kl = (qb.log_prob(z).double() - pb.log_prob(z).double()).mean(0)
    return kl.expand(shape)


def _site_kl(q: Distribution, p: Distribution, mc_samples: int) -> torch.Tensor:
    """KL(q || p) of a whole site, shaped like its batch shape: ``kl_divergence`` where
    registered, else a Monte Carlo estimate."""
    try:
        kl = kl_divergence(q, p).double()
    except NotImplementedError:
        z = q.sample((mc_samples,))
        kl = (q.log_prob(z).double() - p.log_prob(z).double()).mean(0)
    return kl.expand(q.batch_shape)


def _frame_key(frame: Any) -> tuple[str, int]:
    return frame.name, frame.dim


def _data_frames(model_trace: Trace) -> set[tuple[str, int]]:
    """The vectorised plates around every observed site: what an "example" is."""
    observed = [s for s in model_trace.nodes.values() if s["type"] == "sample" and s["is_observed"]]
    if not observed:
        return set()
    frames = [{_frame_key(f) for f in s["cond_indep_stack"] if f.vectorized and f.dim is not None} for s in observed]
    return set.intersection(*frames)


def _examples_first(value: torch.Tensor, example_dims: list[int]) -> torch.Tensor:
    """Move ``example_dims`` (non-negative) to the front and flatten: [examples, rest]."""
    rest = [d for d in range(value.dim()) if d not in example_dims]
    permuted = value.permute(*example_dims, *rest)
    n = 1
    for d in example_dims:
        n *= value.shape[d]
    return permuted.reshape(n, -1)


def _safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def latent_units(
    model: Callable,
    guide: Callable,
    batches: Iterable[tuple],
    *,
    mc_samples: int = 100,
) -> dict[str, LatentUnits]:
    """Active-unit and per-unit KL statistics of every per-example latent site, over ``batches``.

    For each batch: one trace of the guide, ``poutine.trace(guide).get_trace(*batch)``, and one
    of the model replayed on it. Each latent site of the guide that the model also samples and
    that lies in the plates of the observed sites (the data plate) contributes its encoder mean
    (``fn.mean`` of the site's distribution) and its KL to the model's distribution at that site
    (the prior, given the other latents' sampled values when it depends on them). The data-plate
    dims of the site's value are the examples; all its other dims (other plates, event dims),
    flattened in C order, are its units, named ``<site>[j]``. Sites outside the data plate
    (global latents) are skipped: they do not vary with the example.
    Call under ``torch.no_grad()``; modules in eval mode for deterministic encoders.
    """
    accumulators: dict[str, _SiteAccumulator] = {}
    for args in batches:
        guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(*args))
        model_trace = prune_subsample_sites(poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args))
        data_frames = _data_frames(model_trace)
        if not data_frames:
            raise InputError("diagnostic posterior_collapse needs observed sites inside a plate over the examples")
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            prior_site = model_trace.nodes.get(name)
            if prior_site is None or prior_site["type"] != "sample" or prior_site["is_observed"]:
                continue  # auxiliary guide variable, not a latent of the model
            q, p = cast(Distribution, site["fn"]), cast(Distribution, prior_site["fn"])  # sample sites' fn
            full = _full_shape(q)
            batch_dims = len(q.batch_shape)
            example_dims = sorted(
                batch_dims + f.dim for f in site["cond_indep_stack"]
                if f.vectorized and f.dim is not None and _frame_key(f) in data_frames and batch_dims + f.dim >= 0
            )
            if not example_dims:
                continue  # a global latent
            means = _examples_first(_mean(q, mc_samples), example_dims)
            unit_kl = _unit_kl(q, p, mc_samples)
            kl = site_kl = None
            if unit_kl is not None:
                kl = _examples_first(unit_kl, example_dims)
            else:
                site_kl = _examples_first(_site_kl(q, p, mc_samples), example_dims).sum(1)
            units = means.shape[1]
            acc = accumulators.setdefault(name, _SiteAccumulator(num_units=units))
            if units != acc.num_units or (acc.count and (kl is None) != (acc.kl_sum is None)):
                raise InputError(
                    f"diagnostic posterior_collapse: latent site {name!r} changed shape between batches "
                    f"({acc.num_units} units, now {units} from a value of shape {tuple(full)})"
                )
            acc.add(means, kl, site_kl)
    if not accumulators:
        raise InputError(
            "diagnostic posterior_collapse needs latents in a plate over the examples; "
            "this model's latents are all global"
        )
    out: dict[str, LatentUnits] = {}
    for name, acc in accumulators.items():
        assert acc.m2 is not None
        activity = acc.m2 / (acc.count - 1) if acc.count > 1 else torch.full_like(acc.m2, float("nan"))
        if acc.kl_sum is not None:
            kl = acc.kl_sum / acc.count
            mean_site_kl = float(kl.sum())
        else:
            assert acc.site_kl_sum is not None
            kl = torch.full_like(acc.m2, float("nan"))
            mean_site_kl = float(acc.site_kl_sum / acc.count)
        out[name] = LatentUnits(activity=activity, kl=kl, site_kl=mean_site_kl, num_examples=acc.count,
                                units=[f"{name}[{j}]" for j in range(acc.num_units)])
    return out


@register_diagnostic("posterior_collapse")
class PosteriorCollapse(Diagnostic):
    r"""Active units (Burda, Grosse & Salakhutdinov, ICLR 2016, section 5.2) and the KL of each
    latent unit, over the test set (``split: test``) or the training set.

    For every per-example latent site of the guide and every unit u of it (a coordinate of its
    value, flattened over the site's dims other than the data plate):

    .. math::
        A_u = \widehat{\mathrm{Var}}_x\big(\mathbb E_{q(z|x)}[z_u]\big), \qquad
        \mathrm{KL}_u = \frac1N \sum_x \mathrm{KL}\big(q(z_u|x)\,\|\,p(z_u)\big),

    with the unbiased variance over the N examples; u is active when A_u > ``threshold``. The
    encoder mean is the guide site's ``fn.mean`` (exact for Normal and Independent(Normal)); the
    KL is the closed form ½(μ² + σ² − 1 − log σ²) for a Normal q against the N(0, 1) prior (the
    general Normal/Normal formula for other Normal priors), ``torch.distributions.kl_divergence``
    where registered, else a Monte Carlo estimate with ``mc_samples`` draws. A site whose q or
    prior does not factorise over its units (e.g. a MultivariateNormal) gets NaN per-unit KLs and
    counts in ``kl_total`` with its whole-site KL.

    Columns: ``active_units`` (count of A_u > threshold), ``num_units``, ``active_fraction``
    (active units over the units whose A_u is defined: a Categorical latent's index has no mean,
    and one example has no variance; NaN when none is),
    ``kl_total`` (Σ_u KL_u: the mean over examples of the KL term of the ELBO, nats per example),
    ``num_examples``; with ``per_unit`` (default) also ``au_<site>_<j>`` (A_u) and
    ``kl_<site>_<j>`` (KL_u) for every unit (site names with characters other than letters,
    digits and ``_`` get ``_``), so 2 × 100 extra columns at latent dimension 100: kept in the
    diagnostic's own CSV (one row per measurement, a fixed set of columns since the units do not
    change), and switched off with ``per_unit: false`` for very wide latents. When
    ``active_fraction`` < ``warn_below`` it emits a :class:`PosteriorCollapseWarning`
    ("posterior collapse: 12 of 100 latent units active (A_u > 0.01)").

    Cost: one guide pass and one model pass (decoder included) over ``max_examples`` examples of
    the split (all by default), no backward pass, in eval mode without gradients; memory of one
    batch.
    """

    class Options(DiagnosticOptions):
        split: Literal["test", "train"] = Field("test", description="measure on the test or the training set")
        threshold: float = Field(0.01, ge=0.0, description="a unit is active when A_u exceeds this")
        warn_below: float = Field(
            0.5, ge=0.0, le=1.0, description="warn when the fraction of active units is below this"
        )
        max_examples: int | None = Field(None, ge=1, le=10**9, description="use the first N examples of the split only")
        batch_size: int | None = Field(None, ge=1, le=10_000_000, description="examples per pass; null: training.eval_batch_size")
        per_unit: bool = Field(True, description="also record au_<site>_<j> and kl_<site>_<j> for every unit")
        mc_samples: int = Field(
            100, ge=1, le=1_000_000, description="draws for means and KLs that have no closed form"
        )

    options: Options

    def measure(self, context: DiagnosticContext) -> dict[str, float]:
        o = self.options
        training = context.training
        dataset = context.test if o.split == "test" else context.train
        if dataset is None:
            raise InputError("diagnostic posterior_collapse with split: test needs a test set")
        for m in training.modules:
            m.eval()
        batch_size = o.batch_size or training.eval_batch_size
        counted = {"examples": 0}

        def batches() -> Iterable[tuple]:
            for args in context.batches(dataset, batch_size):
                if o.max_examples is not None:
                    if counted["examples"] >= o.max_examples:
                        return
                    args = tuple(a[: o.max_examples - counted["examples"]] if isinstance(a, torch.Tensor) else a
                                 for a in args)
                counted["examples"] += len(args[0])
                yield args

        with torch.no_grad():
            sites = latent_units(training.model, training.guide, batches(), mc_samples=o.mc_samples)
        return self.summarise(sites, counted["examples"])

    def summarise(self, sites: dict[str, LatentUnits], num_examples: int) -> dict[str, float]:
        """The row of one measurement from :func:`latent_units`; warns on collapse."""
        o = self.options
        activity = torch.cat([s.activity for s in sites.values()])
        active = int((activity > o.threshold).sum())
        units = activity.numel()
        defined = int(torch.isfinite(activity).sum())  # a Categorical index has no mean: NaN
        fraction = active / defined if defined else float("nan")
        row: dict[str, float] = {
            "active_units": active,
            "num_units": units,
            "active_fraction": fraction,
            "kl_total": sum(s.site_kl for s in sites.values()),
            "num_examples": num_examples,
        }
        if o.per_unit:
            for kind, attr in (("au", "activity"), ("kl", "kl")):
                for name, s in sites.items():
                    values = getattr(s, attr).tolist()
                    row.update({f"{kind}_{_safe(name)}_{j}": v for j, v in enumerate(values)})
        if defined and fraction < o.warn_below:
            warnings.warn(
                f"posterior collapse: {active} of {defined} latent units active (A_u > {o.threshold:g})",
                PosteriorCollapseWarning,
                stacklevel=2,
            )
        return row

    headline_column = "active_units"  # the column whose trend the report states

    @classmethod
    def findings(cls, table: Table, run: Run, label: str = "") -> list[Finding]:
        """How many latent units are active at the end, and whether that is posterior collapse
        (an active fraction below the run's ``warn_below``)."""
        below = float(run.diagnostic_option("posterior_collapse", "warn_below", COLLAPSE_FRACTION))
        found = collapse_finding(table, label, below)
        return [found] if found is not None else []

    @classmethod
    def sweep_findings(cls, name: str, groups: Sequence[Group]) -> list[Finding]:
        """Every run of the sweep in posterior collapse, or one sentence saying none is."""
        collapsed = []
        for g in groups:
            for r in g.runs:
                table = r.diagnostics.get(name)
                below = float(r.diagnostic_option(name, "warn_below", COLLAPSE_FRACTION))
                found = collapse_finding(table, f"point {g.label}, seed {r.seed}", below) if table is not None else None
                if found is not None and found.level == "warning":
                    collapsed.append(found)
        if collapsed:
            return collapsed
        return [Finding("No posterior collapse in any run: the fraction of active latent units at the end of each "
                        f"is at least its posterior_collapse warn_below (default {COLLAPSE_FRACTION:.0%}).", "good",
                        f"diagnostic:{name}")]


def collapse_finding(table: Table, who: str = "", below: float = COLLAPSE_FRACTION) -> Finding | None:
    """The sentence on the active latent units at the last measurement of ``table``: posterior
    collapse (a warning) when the active fraction is below ``below``; ``None`` without a value."""
    last = last_finite(table, "active_units")
    units = last_finite(table, "num_units")
    if last is None:
        return None
    step, active = last
    total = units[1] if units is not None else math.nan
    fraction = last_finite(table, "active_fraction")
    share = fraction[1] if fraction is not None else (active / total if total > 0 else math.nan)
    prefix = f"{who}: " if who else ""
    count = f"{num(active)} of {num(total)}" if math.isfinite(total) else f"{num(active)}"
    numbers = {"step": step, "active_units": active, "num_units": total, "active_fraction": share, "warn_below": below}
    topic = "diagnostic:posterior_collapse"
    if math.isfinite(share) and share < below:
        return Finding(f"{prefix}{count} latent units active at n = {num(step)}: posterior collapse.", "warning",
                       topic, numbers)
    if math.isfinite(share) and share < 1:
        return Finding(f"{prefix}{count} latent units active at n = {num(step)}: some are unused, but the active "
                       f"fraction {share:.0%} is not below the {below:.0%} at which the report calls it posterior "
                       f"collapse.", "info", topic, numbers)
    return Finding(f"{prefix}{count} latent units active at n = {num(step)}: no posterior collapse.", "good", topic,
                   numbers)
