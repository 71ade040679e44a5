"""Vectorised particle traces and per-example log weights for any Pyro model/guide pair.

For K particles and a batch, this runs the guide once inside an outer ``pyro.plate`` of size K
(so all K samples come from one batched pass, never a Python loop), replays the model against it,
and returns the log importance weights

    log w[k, b] = log p(x_b, z_kb) - log q(z_kb | x_b),

one per particle k and per example b. "Examples" are the entries of the plates common to every
sample site (as in Pyro's ``RenyiELBO``): for a VAE that is the data plate, so the IWAE bound is
taken per example; a model whose latents are all global has no such plate and gets one log weight
per particle. Site log densities include their ``poutine.scale`` factors (mini-batch subsampling,
beta), exactly as Pyro's own ELBOs use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from pyro.poutine.trace_struct import Trace

from bbvi_kit.errors import InputError

PARTICLE_PLATE = "_bbvi_particles"


class LatentScale(Messenger):
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


class DetachSamples(Messenger):
    """Draw every latent sample without a gradient path, for score-function estimators.

    It must be the outermost handler so the plates inside it have already broadcast ``fn``.
    """

    def _process_message(self, msg: Any) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and msg["value"] is None:
            with torch.no_grad():
                msg["value"] = msg["fn"](*msg["args"], **msg["kwargs"])


@dataclass
class Particles:
    """The result of one vectorised pass over model and guide.

    Attributes:
        log_weights: ``[K, *batch]`` log p(x, z) - log q(z|x), with gradients.
        guide_log_prob: ``[K, *batch]`` unscaled log q(z|x) of the (detached) samples, the factor
            of the score-function term; ``None`` for pathwise passes.
        num_examples: what a per-example value divides by: the product of the full sizes of the
            plates around every observed site (the data plate), or 1 when there is none.
        model_trace, guide_trace: the Pyro traces, for diagnostics.
    """

    log_weights: torch.Tensor
    guide_log_prob: torch.Tensor | None
    num_examples: float
    model_trace: Trace
    guide_trace: Trace


def sample_sites(trace: Trace) -> list[dict[str, Any]]:
    """The sample sites of ``trace`` in order, without the index draws plates record as sites."""
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def _log_prob(trace: Trace, site: dict[str, Any]) -> torch.Tensor:
    """The site's scaled and masked log density, as ``Trace.compute_log_prob`` stores it in
    ``site["log_prob"]`` (with ``site["unscaled_log_prob"]``), but without the sum over the site
    and the NaN / inf warnings it adds when validation is on: each of those reads the value back
    to the host, a synchronisation on every step."""
    if "log_prob" not in site:
        try:
            log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
        except ValueError as exc:
            shapes = trace.format_shapes(last_site=site["name"])
            raise ValueError(f"Error while computing log_prob at site '{site['name']}':\n{exc}\n{shapes}") from exc
        site["unscaled_log_prob"] = log_p
        site["log_prob"] = scale_and_mask(log_p, site["scale"], site["mask"])
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


def trace_particles(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    *,
    num_particles: int,
    max_plate_nesting: int,
    latent_scale: float = 1.0,
    detach_samples: bool = False,
) -> Particles:
    """Run guide and model once, vectorised over ``num_particles``; see the module docstring."""
    total_dims = max_plate_nesting + 1
    particle_dim = -total_dims

    def vectorised(fn: Callable) -> Callable:
        if num_particles == 1:  # one particle needs no plate: its dim is added below, as size 1
            return fn

        def wrapped(*a: Any, **k: Any) -> Any:
            with pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim):
                return fn(*a, **k)

        return wrapped

    handlers: list[Messenger] = []
    if detach_samples:
        handlers.append(DetachSamples())
    if latent_scale != 1.0:
        handlers.append(LatentScale(latent_scale))
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

    # Plates record their index draws as sample sites; they are not random variables of the model.
    model_sites = sample_sites(model_trace)
    guide_sites = [s for s in sample_sites(guide_trace) if not s["is_observed"]]
    all_sites = model_sites + guide_sites
    common = set.intersection(*(_vectorised_frames(s) for s in all_sites)) if all_sites else set()
    keep = {f.dim for f in common} | {particle_dim}

    # Each operation here is one more autograd node on every step: none is added that the
    # shapes do not need (no "0 +" to start the sums, no reshape, expand or squeeze to the same shape).
    log_w: torch.Tensor | None = None
    for sign, trace, sites in ((1.0, model_trace, model_sites), (-1.0, guide_trace, guide_sites)):
        for site in sites:
            term = _reduce_to(_log_prob(trace, site), total_dims, keep, site["name"])
            log_w = _add(log_w, term, sign)
    if log_w is None:
        raise InputError("the model and guide have no sample sites: nothing to infer")

    guide_log_prob = None
    if detach_samples:
        log_q: torch.Tensor | None = None
        for site in guide_sites:
            unscaled = scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"])
            log_q = _add(log_q, _reduce_to(unscaled, total_dims, keep, site["name"]), 1.0)
        guide_log_prob = log_q if log_q is not None else torch.zeros_like(log_w)

    squeeze_dims = [d for d in range(-total_dims, 0) if d not in keep]
    if log_w.shape[0] != num_particles:  # no site depends on the particle
        shape = (num_particles, *log_w.shape[1:])
        log_w = log_w.expand(shape)
        if guide_log_prob is not None:
            guide_log_prob = guide_log_prob.expand(shape)
    if guide_log_prob is not None and guide_log_prob.shape != log_w.shape:
        guide_log_prob = guide_log_prob.expand(log_w.shape)
    if squeeze_dims:
        log_w = log_w.squeeze(squeeze_dims)
        if guide_log_prob is not None:
            guide_log_prob = guide_log_prob.squeeze(squeeze_dims)

    observed = [s for s in model_sites if s["is_observed"]]
    data_frames = set.intersection(*(_vectorised_frames(s) for s in observed)) if observed else set()
    num_examples = 1.0
    for frame in data_frames:
        if frame.name != PARTICLE_PLATE:
            # A subsampled plate's ``size`` is the batch; ``full_size`` is the data set.
            num_examples *= float(frame.full_size if frame.full_size is not None else frame.size)
    return Particles(log_w, guide_log_prob, num_examples, model_trace, guide_trace)
