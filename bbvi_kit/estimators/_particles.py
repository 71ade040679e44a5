"""Vectorised particle traces and per-example log weights for any Pyro model/guide pair.

For K particles and a batch, this runs the guide once inside an outer ``pyro.plate`` of size K
(so all K samples come from one batched pass), replays the model against it, and returns the log
importance weights

    log w[k, b] = log p(x_b, z_kb) - log q(z_kb | x_b),

one per particle k and per example b. "Examples" are the entries of the plates common to every
sample site (as in Pyro's ``RenyiELBO``): for a VAE that is the data plate, so the IWAE bound is
taken per example; a model with a global latent has no such plate and gets one log weight per
particle (the joint). What each site contributes follows :mod:`bbvi_kit.estimators._sites`
(guide latents, model-only latents drawn from their prior, observations, factors).

Scales: site log densities carry their ``poutine.scale`` factors (beta, user scales), exactly as
Pyro's ELBOs use them, except the subsampling scale N/B of a kept data plate: that one is the
same for every term of an example, and it belongs *outside* the per-example bound
(``data_scale``), so that IWAE with a subsampled plate is (N/B) sum_b IWAE_K(x_b) and not the
log-mean-exp of scaled weights.

A model that cannot broadcast over the extra leftmost particle dimension (a tensor transposed
with ``.t()``, a shape hard-coded from the data) is found on the first pass; its K particles are
then drawn in a loop of K single-particle passes (K times the cost of one pass), with a warning
naming the site.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, cast

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.runtime import Message
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from pyro.util import check_model_guide_match, check_site_shape

from bbvi_kit.errors import InputError
from bbvi_kit.estimators._downstream import SiteScore, TrackHeld, concatenate_passes, site_scores, without_provenance
from bbvi_kit.estimators._examples import Examples, ExamplesSpec, find_examples
from bbvi_kit.estimators._sites import (
    DrawLatents, SiteModePolicy, describe, is_deterministic, is_enumerated, latent_sample_sites,
    refuse_model_enumeration,
)
from bbvi_kit.estimators._kl import check_analytic, kl_terms
from bbvi_kit.estimators._stopped import PathScales, refuse_dependent_sites, stopped_log_prob

PARTICLE_PLATE = "_bbvi_particles"


class LatentScale(pyro.poutine.messenger.Messenger):
    """Multiply the log density of every latent (unobserved) sample site by ``scale``.

    Applied to both model and guide it turns ``log p(x|z) + log p(z) - log q(z|x)`` into
    ``log p(x|z) + beta * (log p(z) - log q(z|x))``: the beta-VAE objective of Higgins et al.
    (2017), with beta a property of the objective rather than of the network.
    """

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def _process_message(self, msg: Any) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.scale * msg["scale"]


@dataclass
class Particles:
    """The result of one pass over model and guide with K particles.

    Attributes:
        log_weights: ``[K, *examples]`` log p(x, z) - log q(z|x), with gradients, without the
            subsampling scale of the kept data plate.
        score_log_prob: ``[K, *examples]`` the unscaled, unmasked log density of the sites held
            fixed (score mode), the factor of the score-function term; ``None`` when none is.
        data_scale: the subsampling scale N/B of the kept data plate (1.0 without subsampling);
            the per-example bound is multiplied by it.
        examples: the divisor of per-example values (:mod:`bbvi_kit.estimators._examples`).
        model_trace, guide_trace: the Pyro traces (of the last particle when drawn in a loop).
        keep_shape: the shape of ``log_weights`` with the plate dims summed over kept as size 1.
        path_scales: where this pass's latent values read the factor of their gradient (DReG).
        site_scores: per held site, its score function and downstream cost (``rao_blackwellise``;
            :mod:`bbvi_kit.estimators._downstream`); ``None`` when not asked for.
    """

    log_weights: torch.Tensor
    score_log_prob: torch.Tensor | None
    data_scale: float | torch.Tensor
    examples: Examples
    model_trace: Trace
    guide_trace: Trace
    keep_shape: tuple[int, ...] = ()
    path_scales: PathScales | None = None
    site_scores: list[SiteScore] | None = None

    @property
    def num_examples(self) -> float:
        return self.examples.count

    def at_guide_sites(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """``weights`` (shaped as ``log_weights``) shaped to broadcast against the value of each
        guide latent (its batch dims, then size 1 for its event dims)."""
        full = weights.reshape(self.keep_shape)
        out = {}
        for site in latent_sample_sites(self.guide_trace):
            events = len(site["fn"].event_shape)
            batch = site["value"].dim() - events
            lead = full.shape[: full.dim() - batch]
            if any(size != 1 for size in lead):
                raise InputError(f"site {site['name']!r} has fewer batch dims than the particles and examples "
                                 "it should vary over; declare its plates")
            here = full.reshape(full.shape[full.dim() - batch:])
            out[site["name"]] = here.reshape(here.shape + (1,) * events)
        return out


def sample_sites(trace: Trace) -> list[dict[str, Any]]:
    """The sample sites of ``trace`` in order, without the index draws plates record as sites."""
    sites = [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]
    return cast(list[dict[str, Any]], sites)  # Pyro's Message TypedDicts, read as plain dicts


def is_one(scale: float | torch.Tensor) -> bool:
    """Whether ``scale`` is the plain float 1.0: multiplying by it would only add an operation."""
    return isinstance(scale, float) and scale == 1.0


def _density(site: dict[str, Any]) -> torch.Tensor:
    """A model-only site's unscaled log density (not part of log w; its score factor and shape)."""
    if "unscaled_log_prob" not in site:
        site["unscaled_log_prob"] = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return site["unscaled_log_prob"]


def _log_prob(trace: Trace, site: dict[str, Any], data_scale: float | torch.Tensor) -> torch.Tensor:
    """The site's scaled and masked log density (the kept data plate's scale taken out), as
    ``Trace.compute_log_prob`` stores it in ``site["log_prob"]`` (with ``unscaled_log_prob``),
    without the sum over the site and the NaN / inf warnings it adds under validation: each of
    those reads the value back to the host, a synchronisation on every step."""
    if "log_prob" not in site:
        try:
            log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
        except NotImplementedError as exc:
            raise InputError(
                f"site {site['name']!r} ({describe(site['fn'])}) cannot evaluate its log density at its value "
                f"({exc or 'not implemented'}); a flow without an inverse cannot score a sample held fixed: "
                "use estimator 'auto' or 'pathwise'"
            ) from None
        except ValueError as exc:
            shapes = trace.format_shapes(last_site=site["name"])
            raise ValueError(f"Error while computing log_prob at site '{site['name']}':\n{exc}\n{shapes}") from exc
        site["unscaled_log_prob"] = log_p
        scale = site["scale"] if is_one(data_scale) else site["scale"] / data_scale
        site["log_prob"] = scale_and_mask(log_p, scale, site["mask"])
    return site["log_prob"]


def _vectorised_frames(site: dict[str, Any]) -> set[Any]:
    return {f for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None}


def guess_max_plate_nesting(model: Callable, guide: Callable, args: tuple, kwargs: dict) -> int:
    """How many batch dims the model and guide's plates use: one unvectorised trace of each.

    The trace runs inside forked RNG states so guessing does not shift the random stream of the
    training run.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    dims = [
        -f.dim
        for trace in (guide_trace, model_trace)
        for site in sample_sites(trace)
        for f in _vectorised_frames(site)
    ]
    return max(dims, default=0)


def _reduce_to(log_prob: torch.Tensor, total_dims: int, keep: set[int], site_name: str) -> torch.Tensor:
    """Sum ``log_prob`` over every plate dim not in ``keep``, keeping all dims (size 1)."""
    if log_prob.dim() > total_dims:
        raise InputError(
            f"sample site {site_name!r} has log_prob shape {tuple(log_prob.shape)}, more batch dims than "
            f"its plates ({total_dims - 1}); declare event dims with .to_event() or wrap it in a plate"
        )
    if log_prob.dim() < total_dims:
        log_prob = log_prob.reshape((1,) * (total_dims - log_prob.dim()) + log_prob.shape)
    sum_dims = [d for d in range(-total_dims, 0) if d not in keep]
    return log_prob.sum(dim=sum_dims, keepdim=True) if sum_dims else log_prob


def _add(total: torch.Tensor | None, term: torch.Tensor, sign: float) -> torch.Tensor:
    """``total + sign * term``, where ``None`` is an empty sum (the result is exactly what
    ``0 + sign * term`` would be, without the extra operation)."""
    if total is None:
        return term if sign > 0 else -term
    return total + term if sign > 0 else total - term


def first_line(exc: Exception) -> str:
    """The first line of an error's message (Pyro and torch append shapes and tensor dumps)."""
    return str(exc).strip().splitlines()[0].strip() if str(exc).strip() else type(exc).__name__


def check_match(model_trace: Trace, guide_trace: Trace, max_plate_nesting: int) -> None:
    """Pyro's model/guide check, as its ELBOs make it under validation: model and guide agree on
    each shared site's event dims and batch shape. A failure is one :class:`InputError` line
    naming the site; Pyro's warnings pass on, except the one about model-only sites, which
    :func:`trace_particles` words itself (bbvi-kit gives those sites a meaning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check_model_guide_match(model_trace, guide_trace, max_plate_nesting)
        except (ValueError, NotImplementedError) as exc:
            raise InputError(f"model and guide: {first_line(exc)}") from None
    for w in caught:
        if "in model but not guide" not in str(w.message):
            warnings.warn(str(w.message), w.category, stacklevel=4)


def check_shapes(sites: list[dict[str, Any]], max_plate_nesting: int) -> None:
    """Pyro's per-site check: each log density has the batch shape its plates say (one line)."""
    for site in sites:
        try:
            check_site_shape(cast(Message, site), max_plate_nesting)
        except ValueError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            hint = (" (enclose the batched tensor in a pyro.plate, declare event dims with .to_event(), "
                    "or permute the data dims)") if "invalid log_prob shape" in lines[0] else ""
            raise InputError(" ".join(lines[:2]) + hint) from None


def _one_pass(model: Callable, guide: Callable, args: tuple, kwargs: dict, *, num_particles: int,
              max_plate_nesting: int, policy: SiteModePolicy, latent_scale: float, examples: ExamplesSpec,
              check: bool, held_log_q_in_bound: bool, stop_guide: str | None,
              path_scales: PathScales | None, analytic_kl: bool, rao_blackwellise: bool) -> Particles:
    total_dims = max_plate_nesting + 1
    particle_dim = -total_dims

    def vectorised(fn: Callable) -> Callable:
        if num_particles == 1:  # one particle needs no plate: its dim is added below, as size 1
            return fn

        def wrapped(*a: Any, **k: Any) -> Any:
            with pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim):
                return fn(*a, **k)

        return wrapped

    draw = DrawLatents(policy, path_scales)
    handlers: list[Any] = [draw]
    if latent_scale != 1.0:
        handlers.append(LatentScale(latent_scale))
    if rao_blackwellise:  # held values carry their site's name to every term computed from them
        handlers.append(TrackHeld(draw.held))
    for handler in handlers:
        handler.__enter__()
    try:
        guide_trace = poutine.trace(vectorised(guide)).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(vectorised(model), trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    finally:
        for handler in reversed(handlers):
            handler.__exit__(None, None, None)

    guide_sites = latent_sample_sites(guide_trace)
    guide_names = {s["name"] for s in guide_sites}
    model_sites = [s for s in sample_sites(model_trace) if not is_deterministic(s)]
    model_only = [s for s in model_sites if not s["is_observed"] and s["name"] not in guide_names]
    refuse_model_enumeration(model_only)
    if stop_guide is not None and model_only:
        raise InputError(f"estimator {stop_guide}: model site {model_only[0]['name']!r} is not in the guide (drawn "
                         "from its prior, whose parameters are the model's): use estimator 'pathwise'")
    nesting = total_dims if num_particles > 1 else max_plate_nesting
    if check:
        check_match(model_trace, guide_trace, nesting)
        if stop_guide is not None:
            refuse_dependent_sites(guide_sites, stop_guide)
        if model_only:
            warnings.warn(
                "bbvi-kit: model sites not in the guide are drawn from their prior (their prior is part "
                f"of the proposal and cancels from log w): {', '.join(repr(s['name']) for s in model_only)}",
                UserWarning, stacklevel=4,
            )
        enumerated = [s["name"] for s in guide_sites if is_enumerated(s)]
        if enumerated:
            warnings.warn(
                f"bbvi-kit: guide sites marked for enumeration are sampled, not summed out: "
                f"{', '.join(map(repr, enumerated))}", UserWarning, stacklevel=4,
            )
        with_baseline = [s["name"] for s in guide_sites if "baseline" in s["infer"]]
        if with_baseline and not rao_blackwellise:
            warnings.warn(
                f"bbvi-kit: guide sites with infer={{'baseline': ...}} ({', '.join(map(repr, with_baseline))}): only "
                "estimator score or auto with rao_blackwellise: true reads per-site baselines; this run ignores them",
                UserWarning, stacklevel=4,
            )

    model_only_names = {s["name"] for s in model_only}
    weighted = [s for s in model_sites if s["name"] not in model_only_names]
    structural = weighted + model_only + guide_sites
    common = set.intersection(*(_vectorised_frames(s) for s in structural)) if structural else set()
    keep = {f.dim for f in common} | {particle_dim}
    data_scale: float | torch.Tensor = 1.0
    for frame in common:
        if frame.name != PARTICLE_PLATE and frame.full_size is not None and frame.full_size != frame.size:
            data_scale = data_scale * (frame.full_size / frame.size)

    kl: dict[str, torch.Tensor] = {}
    if analytic_kl:  # each latent's log p(z) - log q(z) becomes -KL(q || p) (bbvi_kit.estimators._kl)
        priors = {s["name"]: s for s in weighted}
        if check:
            values = [(s["name"], s["value"]) for s in guide_sites + model_only]
            check_analytic(guide_sites, priors, values, draw.held)
            for trace, sites in ((model_trace, [priors[s["name"]] for s in guide_sites]), (guide_trace, guide_sites)):
                for site in sites:  # their shapes are checked below
                    _log_prob(trace, site, data_scale)
        kl = kl_terms(guide_sites, priors, data_scale)

    # Each operation here is one more autograd node on every step: none is added that the
    # shapes do not need (no "0 +" to start the sums, no reshape, expand or squeeze to the same shape).
    log_w: torch.Tensor | None = None
    for sign, trace, sites in ((1.0, model_trace, weighted), (-1.0, guide_trace, guide_sites)):
        for site in sites:
            if site["name"] in kl:
                if sign < 0:
                    log_w = _add(log_w, _reduce_to(kl[site["name"]], total_dims, keep, site["name"]), -1.0)
                continue
            if sign < 0 and stop_guide is not None:  # the same value, without the score part's gradient
                scale = site["scale"] if is_one(data_scale) else site["scale"] / data_scale
                site["log_prob"] = scale_and_mask(stopped_log_prob(site, stop_guide), scale, site["mask"])
            term = _reduce_to(_log_prob(trace, site, data_scale), total_dims, keep, site["name"])
            if sign < 0 and not held_log_q_in_bound and site["name"] in draw.held:
                term = term.detach()  # its direct gradient has expectation 0 (see Objective)
            log_w = _add(log_w, term, sign)
    if log_w is None:
        raise InputError("the model and guide have no sample sites: nothing to infer")
    score: torch.Tensor | None = None
    held_scores: dict[str, tuple[dict[str, Any], torch.Tensor]] = {}
    for trace, sites in ((guide_trace, guide_sites), (model_trace, model_only)):
        for site in sites:
            if site["name"] in draw.held:
                unscaled = site["unscaled_log_prob"] if trace is guide_trace else _density(site)
                if rao_blackwellise:
                    held_scores[site["name"]] = (site, unscaled)
                score = _add(score, _reduce_to(unscaled, total_dims, keep, site["name"]), 1.0)
    per_site: list[SiteScore] | None = None
    if rao_blackwellise:
        per_site = site_scores(held_scores, [(s, 1.0) for s in weighted] + [(s, -1.0) for s in guide_sites], total_dims)
        log_w, score = without_provenance(log_w), without_provenance(score)
        assert log_w is not None
    if check:
        for site in model_only:  # not part of log w, but their shapes are checked too
            site["log_prob"] = _density(site)
        check_shapes(weighted + model_only + guide_sites, nesting)

    squeeze_dims = [d for d in range(-total_dims, 0) if d not in keep]
    if log_w.shape[0] != num_particles:  # no site depends on the particle
        log_w = log_w.expand((num_particles, *log_w.shape[1:]))
    keep_shape = tuple(log_w.shape)
    if score is not None and score.shape != log_w.shape:
        score = score.expand(log_w.shape)
    if squeeze_dims:
        log_w = log_w.squeeze(squeeze_dims)
        if score is not None:
            score = score.squeeze(squeeze_dims)
    found = find_examples(model_trace, examples, ignore=frozenset({PARTICLE_PLATE}))
    return Particles(log_w, score, data_scale, found, model_trace, guide_trace, keep_shape, path_scales, per_site)


def trace_particles(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    *,
    num_particles: int,
    max_plate_nesting: int,
    policy: SiteModePolicy,
    latent_scale: float = 1.0,
    examples: ExamplesSpec = None,
    check: bool = False,
    vectorise: bool = True,
    held_log_q_in_bound: bool = True,
    stop_guide: str | None = None,
    path_scales: PathScales | None = None,
    analytic_kl: bool = False,
    rao_blackwellise: bool = False,
) -> Particles:
    """Run guide and model once, vectorised over ``num_particles`` (or, with ``vectorise=False``,
    once per particle); see the module docstring. ``check`` runs the model/guide shape checks of
    :func:`check_match` and :func:`check_shapes` and warns about model-only and enumerated guide
    sites. ``held_log_q_in_bound: False`` takes the log density of the sites held fixed into
    ``log w`` without its direct gradient (valid where the bound is a mean of log weights).
    ``stop_guide`` (an estimator's name, for its refusals) evaluates the guide's log densities
    with their parameters stopped (:mod:`bbvi_kit.estimators._stopped`); ``path_scales`` weighs
    each reparameterised value's gradient on the way back. ``analytic_kl`` replaces each latent
    site's log p(z) - log q(z) by -KL(q || p) in closed form (:mod:`bbvi_kit.estimators._kl`).
    ``rao_blackwellise`` also returns each held site's score and downstream cost
    (:attr:`Particles.site_scores`, :mod:`bbvi_kit.estimators._downstream`)."""
    options: dict[str, Any] = dict(max_plate_nesting=max_plate_nesting, policy=policy, latent_scale=latent_scale,
                   examples=examples, check=check, held_log_q_in_bound=held_log_q_in_bound, stop_guide=stop_guide,
                   path_scales=path_scales, analytic_kl=analytic_kl, rao_blackwellise=rao_blackwellise)
    if vectorise or num_particles == 1:
        return _one_pass(model, guide, args, kwargs, num_particles=num_particles, **options)
    if path_scales is not None:
        raise InputError(f"estimator {stop_guide}: the model does not broadcast over the particle dimension, and "
                         "its particles' paths cannot be weighed one pass at a time: use estimator 'stl' or 'pathwise'")
    passes = [_one_pass(model, guide, args, kwargs, num_particles=1, **options) for _ in range(num_particles)]
    last = passes[-1]
    score = None if last.score_log_prob is None else torch.cat([p.score_log_prob for p in passes])  # type: ignore[misc]
    per_site = concatenate_passes([p.site_scores for p in passes]) if rao_blackwellise else None  # type: ignore[misc]
    return Particles(torch.cat([p.log_weights for p in passes]), score, last.data_scale, last.examples,
                     last.model_trace, last.guide_trace, site_scores=per_site)
