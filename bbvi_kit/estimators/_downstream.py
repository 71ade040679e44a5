r"""Rao-Blackwellised score-function terms: each held site's score times its downstream cost only.

The score-function gradient of the ELBO, with every latent z_i held fixed (no gradient path), is

.. math:: \nabla \mathcal{L} = \mathbb{E}_q\Big[\sum_i c(z)\, \nabla \log q(z_i \mid \cdot)\Big]
          + \mathbb{E}_q[\nabla_{\text{path}} \log w],
          \qquad c(z) = \log w = \sum_j \text{cost}_j(z),

where the cost terms are the model's log densities log p (observations, factors, latents) and the
guide's -log q, scaled as in log w. A term that does not depend on z_i has, given z_i's parents, a
constant expectation, and its product with the zero-mean score of z_i averages to zero: it can be
dropped from z_i's factor (Schulman, Heess, Weber & Abbeel, "Gradient Estimation Using
Stochastic Computation Graphs", NeurIPS 2015, section 4). What remains is the **downstream cost**

.. math:: c_i(z) = \sum_{j \in \mathrm{down}(i)} \text{cost}_j(z),

the sum of the terms computed from z_i's value. Which terms those are is found the way Pyro's
``TraceGraph_ELBO`` (1.9) finds them: by provenance tracking (Wingate, Goodman, Stuhlmüller &
Siskind 2011) -- every held value is wrapped in a :class:`pyro.ops.provenance.ProvenanceTensor`
naming its site (:class:`TrackHeld`), every tensor computed from it carries that name, and a
cost term is downstream of the sites its log density names. The dependence is through values, so
a term reached from z_i only through Python control flow (``if z.item(): ...``) is not seen: as
with Pyro's estimator, keep Rao-Blackwellisation off for such programs.

Plates: a site inside a vectorised plate at index b is an independent draw per b. Its cost is
summed to the site's own plates (as Pyro's ``MultiFrameTensor.sum_to``): a term in the same plate
stays per index, one in a plate the site is not in is summed over it, one outside the plate is
added to every index. bbvi-kit's particle plate is an outer plate of every site, so each
particle's cost stays its own.

:func:`site_scores` returns, per held site, its score function (the unscaled, unmasked log
density with the site's plate dims, Pyro's ``ScoreParts.score_function``) and its downstream
cost (detached, same shape); :class:`bbvi_kit.estimators.score.ScoreFunction` combines them with
per-site baselines (:mod:`bbvi_kit.estimators.baselines`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pyro.ops.provenance import detach_provenance, get_provenance, track_provenance
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from bbvi_kit.errors import InputError


@dataclass
class SiteScore:
    """One held site's factors in the Rao-Blackwellised surrogate.

    Attributes:
        name: the sample site.
        score: ``[K, *plate dims]`` its unscaled, unmasked log density at the held value, with
            its graph (the score function); one dim per plate level (size 1 outside its plates).
        cost: the same shape: its downstream cost, scaled as log w (without the kept data plate's
            subsampling scale), detached.
        infer: the site's ``infer`` dict (where per-site ``baseline`` options live).
    """

    name: str
    score: torch.Tensor
    cost: torch.Tensor
    infer: dict[str, Any]


class TrackHeld(Messenger):
    """Wrap the value of every held site (a name in ``held``, which the site's drawing handler
    fills) in a provenance tensor naming the site.

    Enter it outside the traced model and guide, after the handler that draws the latents: its
    post-processing then runs before the trace records the site, which so keeps the tracked
    value, and ``replay`` hands that value on to the model.
    """

    def __init__(self, held: set[str]) -> None:
        super().__init__()
        self.held = held

    def _pyro_post_sample(self, msg: Any) -> None:
        if msg["is_observed"] or site_is_subsample(msg) or msg["name"] not in self.held:
            return
        msg["value"] = track_provenance(msg["value"], frozenset({msg["name"]}))


def vectorised_frames(site: dict[str, Any]) -> frozenset[Any]:
    """The site's vectorised plates (the particle plate among them when K > 1)."""
    return frozenset(f for f in site["cond_indep_stack"] if f.dim is not None)


def aligned(tensor: torch.Tensor, total_dims: int, site_name: str) -> torch.Tensor:
    """``tensor`` with size-1 dims prepended up to ``total_dims`` (one per plate level)."""
    if tensor.dim() > total_dims:
        raise InputError(f"sample site {site_name!r} has log_prob shape {tuple(tensor.shape)}, more batch dims than "
                         f"its plates ({total_dims - 1}); declare event dims with .to_event() or wrap it in a plate")
    return tensor.reshape((1,) * (total_dims - tensor.dim()) + tuple(tensor.shape))


def sum_to_frames(term: torch.Tensor, term_frames: frozenset[Any], target: frozenset[Any]) -> torch.Tensor:
    """Sum ``term`` (aligned) over the dims of its plates that are not ``target``'s, keeping dims."""
    dims = [f.dim for f in term_frames if f not in target and term.shape[f.dim] != 1]
    return term.sum(dim=dims, keepdim=True) if dims else term


def site_scores(
    held_scores: dict[str, tuple[dict[str, Any], torch.Tensor]],
    cost_terms: list[tuple[dict[str, Any], float]],
    total_dims: int,
) -> list[SiteScore]:
    """Per held site, in the order of ``held_scores`` (site message, unscaled log density), its
    score and downstream cost (see the module docstring).

    ``cost_terms`` are the sites whose scaled ``site["log_prob"]`` enters log w, with their sign
    (+1 for the model's log p, -1 for the guide's log q); each one's provenance says which held
    sites it is downstream of.
    """
    downstream: dict[str, list[tuple[frozenset[Any], torch.Tensor]]] = {name: [] for name in held_scores}
    for site, sign in cost_terms:
        term = site["log_prob"]
        names = get_provenance(term) & downstream.keys()
        if not names:
            continue
        value = aligned(detach_provenance(term).detach(), total_dims, site["name"])
        if sign < 0:
            value = -value
        for name in names:
            downstream[name].append((vectorised_frames(site), value))
    out = []
    for name, (site, unscaled) in held_scores.items():
        score = aligned(detach_provenance(unscaled), total_dims, name)
        target = vectorised_frames(site)
        cost: torch.Tensor | None = None
        for frames, value in downstream[name]:
            part = sum_to_frames(value, frames, target)
            cost = part if cost is None else cost + part
        if cost is None:  # nothing is computed from this site: its score term is zero
            cost = torch.zeros((), dtype=score.dtype, device=score.device)
        shape = torch.broadcast_shapes(score.shape, cost.shape)
        if shape != score.shape:
            score = score.expand(shape)
        out.append(SiteScore(name, score, cost.expand(shape), site["infer"]))
    return out


def concatenate_passes(passes: list[list[SiteScore]]) -> list[SiteScore]:
    """The site scores of K single-particle passes as those of one K-particle pass."""
    names = [s.name for s in passes[0]]
    if any([s.name for s in p] != names for p in passes):
        raise InputError("rao_blackwellise: the particles drawn one pass at a time held different sites; "
                         "a model whose sites change from draw to draw needs a model that broadcasts over particles")
    return [SiteScore(first.name, torch.cat([p[i].score for p in passes]), torch.cat([p[i].cost for p in passes]),
                      first.infer) for i, first in enumerate(passes[-1])]


def without_provenance(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """``tensor`` as a plain tensor (its graph kept), where it was computed from tracked values."""
    return None if tensor is None else detach_provenance(tensor)
