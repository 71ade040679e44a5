"""The guide's log density with its parameters stopped, for the path-only estimators (STL, DReG).

For a reparameterised latent z = g(eps, phi) the total gradient of log q_phi(z) in phi has two
parts: the path through z, and the score ``d/dphi log q_phi(z)`` at z held fixed, whose
expectation under q is zero. "Sticking the landing" (Roeder, Wu & Duvenaud, NeurIPS 2017) drops
the score part: it evaluates ``log q`` under a copy of each guide distribution whose parameters are
detached, at the value that keeps its path. :func:`stopped_log_prob` builds that copy for any
distribution rebuilt from its ``arg_constraints`` (Normal, MultivariateNormal, Beta, Gamma, ...),
through ``Independent`` / ``to_event``, ``expand``, ``mask`` and transforms without parameters;
a flow (a transform with parameters) or a family it cannot rebuild is refused in one line naming
the site.

Stopping the parameters is the score part only when no guide latent's distribution depends on
another guide latent (a mean-field or amortised guide, a VAE's encoder): otherwise the stopped
copy would also cut the path through the earlier latent. :func:`refuse_dependent_sites` finds such
a dependence in the autograd graph (first step only) and refuses it, naming both sites.

DReG (Tucker, Lawson, Gu & Maddison, ICLR 2019) weighs the path of particle k by a second factor
wtilde_k; :class:`PathScales` carries it to the backward pass of each latent's value
(:func:`scaled_path`), since the weights are known only after the whole pass.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from pyro import distributions as dist
from torch.distributions import Distribution

from bbvi_kit.errors import InputError
from bbvi_kit.estimators._sites import describe


def _refuse(estimator: str, site: str, fn: Any, why: str) -> InputError:
    return InputError(f"estimator {estimator}: site {site!r} ({describe(fn)}) {why}; use estimator 'pathwise'")


def _rebuilt(fn: Distribution, estimator: str, site: str) -> Distribution:
    """``fn`` of the same family with its parameters detached (no wrappers)."""
    names = list(fn.arg_constraints)
    attempts = [names, [n for n in names if n in vars(fn)]]  # all parameters, else those it was given
    for chosen in attempts:
        try:
            params = {n: getattr(fn, n) for n in chosen}
            if not all(isinstance(p, torch.Tensor) or isinstance(p, (int, float)) for p in params.values()):
                continue
            family: Any = type(fn)
            copy = family(**{n: p.detach() if isinstance(p, torch.Tensor) else p for n, p in params.items()},
                          validate_args=False)
        except (TypeError, ValueError, NotImplementedError, AttributeError):
            continue
        if copy.batch_shape == fn.batch_shape and copy.event_shape == fn.event_shape:
            return copy
    raise _refuse(estimator, site, fn, "cannot be rebuilt from its parameters to stop them")


def stopped(fn: Distribution, estimator: str, site: str) -> Distribution:
    """``fn`` with every parameter detached, its wrappers and parameter-free transforms kept."""
    if isinstance(fn, (dist.Independent, torch.distributions.Independent)):
        return dist.Independent(stopped(fn.base_dist, estimator, site), fn.reinterpreted_batch_ndims)
    if isinstance(fn, dist.ExpandedDistribution):
        return stopped(fn.base_dist, estimator, site).expand(fn.batch_shape)
    if isinstance(fn, dist.MaskedDistribution):
        return dist.MaskedDistribution(stopped(fn.base_dist, estimator, site), fn._mask)
    if isinstance(fn, torch.distributions.TransformedDistribution):
        for transform in fn.transforms:
            tensors = list(getattr(transform, "parameters", lambda: [])()) + [
                v for v in vars(transform).values() if isinstance(v, torch.Tensor)]
            if any(t.requires_grad for t in tensors):
                raise _refuse(estimator, site, fn, "has a transform with parameters (a flow): its log density "
                              "cannot be evaluated with them stopped")
        return dist.TransformedDistribution(stopped(fn.base_dist, estimator, site), fn.transforms)
    return _rebuilt(fn, estimator, site)


def stopped_log_prob(site: dict[str, Any], estimator: str) -> torch.Tensor:
    """The site's unscaled log density at its value (path kept) with its parameters stopped."""
    copy = stopped(site["fn"], estimator, site["name"])
    return copy.log_prob(site["value"], *site["args"], **site["kwargs"])


def parameters_of(fn: Any) -> list[torch.Tensor]:
    """The tensors a distribution was built from (through its wrappers)."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    out = []
    for name in getattr(fn, "arg_constraints", {}):
        value = vars(fn).get(name)
        if isinstance(value, torch.Tensor):
            out.append(value)
    return out


def ancestors(tensors: Iterable[torch.Tensor]) -> set[Any]:
    """Every autograd node that ``tensors`` were computed from."""
    seen: set[Any] = set()
    stack = [t.grad_fn for t in tensors if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions if next_node is not None)
    return seen


def refuse_dependent_sites(guide_sites: list[dict[str, Any]], estimator: str) -> None:
    """Refuse a guide latent whose distribution's parameters were computed from an earlier one."""
    earlier: list[tuple[str, Any]] = []
    for site in guide_sites:
        nodes = ancestors(parameters_of(site["fn"]))
        for name, node in earlier:
            if node in nodes:
                raise InputError(
                    f"estimator {estimator}: guide site {site['name']!r} has parameters computed from guide site "
                    f"{name!r}; stopping them would also cut that path (a hierarchical guide): use estimator 'pathwise'"
                )
        if site["value"].grad_fn is not None:
            earlier.append((site["name"], site["value"].grad_fn))


class PathScales:
    """Per latent site, the factor its value's gradient is multiplied by in the backward pass
    (shaped to broadcast against the value); none set: the gradient passes unchanged."""

    def __init__(self) -> None:
        self.scales: dict[str, torch.Tensor] = {}


class _ScalePath(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, scales: PathScales, name: str) -> torch.Tensor:
        ctx.scales, ctx.name = scales, name
        return value.view_as(value)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        scale = ctx.scales.scales.get(ctx.name)
        return (grad if scale is None else grad * scale), None, None


def scaled_path(value: torch.Tensor, scales: PathScales, name: str) -> torch.Tensor:
    """``value`` itself, whose gradient is multiplied by ``scales.scales[name]`` on the way back."""
    return _ScalePath.apply(value, scales, name)


__all__ = ["PathScales", "ancestors", "parameters_of", "refuse_dependent_sites", "scaled_path", "stopped",
           "stopped_log_prob"]
