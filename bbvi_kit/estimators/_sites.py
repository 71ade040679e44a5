"""Per-site semantics of a Pyro model/guide pair: what each sample site is and how it is drawn.

The roles, as Pyro's own ELBOs give them (``Trace_ELBO``, ``TraceGraph_ELBO``):

- a **guide latent** (a sample site of the guide, observed or auxiliary sites excepted) is part
  of the proposal q; its log density enters ``log w`` with a minus sign;
- a **model-only latent** (unobserved in the model, absent from the guide) is drawn from its
  prior, which is then part of the proposal: its log density appears in p and in q and cancels
  from ``log w``, but, like a guide latent, it needs a score term when it is not reparameterised;
- an **observed** model site, a ``pyro.factor`` and a ``pyro.deterministic`` enter ``log p``.

Each latent (guide or model-only) is drawn in one of two ways, chosen by the estimator:

- ``reparam``: drawn with ``rsample``, so the gradient flows through the value (pathwise);
- ``score``: drawn without a gradient path and *held fixed*; its unscaled, unmasked log density
  (Pyro's ``ScoreParts.score_function``) multiplies the learning signal in the surrogate.

A held-fixed value is a new tensor, so a transformed distribution (a normalizing flow) must
invert it to evaluate its density, and that inversion keeps its graph in the flow's parameters;
the value that the forward pass cached was computed without one. A ``Delta`` whose value depends
on parameters (``AutoDelta``, a MAP site) has no density in those parameters: it cannot be held
fixed, and is refused in ``score`` mode.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from pyro import distributions as dist
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from bbvi_kit.errors import InputError

Mode = Literal["reparam", "score"]
SiteModePolicy = Callable[[dict[str, Any]], Mode]
"""Given a latent site's message (``name``, ``fn``, ``infer``), how to draw it; raises
:class:`InputError` for a site the estimator cannot serve."""


def base_distribution(fn: Any) -> Any:
    """``fn`` without the wrappers that keep its family (``Independent``, ``Expanded``,
    ``Masked``, ``to_event``, ``expand``, ``mask``)."""
    wrappers = (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution,
                torch.distributions.Independent)
    while isinstance(fn, wrappers):
        fn = fn.base_dist
    return fn


def is_delta(fn: Any) -> bool:
    return isinstance(base_distribution(fn), dist.Delta)


def is_factor(site: dict[str, Any]) -> bool:
    """A ``pyro.factor`` statement (an observed ``Unit`` site)."""
    return isinstance(base_distribution(site["fn"]), dist.Unit)


def is_deterministic(site: dict[str, Any]) -> bool:
    """A ``pyro.deterministic`` statement (an observed, masked ``Delta``: log density 0)."""
    return bool(site["infer"].get("_deterministic"))


def is_enumerated(site: dict[str, Any]) -> bool:
    return site["infer"].get("enumerate") in ("parallel", "sequential")


def describe(fn: Any) -> str:
    return type(base_distribution(fn)).__name__


def latent_sample_sites(trace: Any) -> list[dict[str, Any]]:
    """Unobserved sample sites, without the index draws that plates record as sites."""
    return [s for s in trace.nodes.values()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)]


def reparameterised(estimator: str) -> SiteModePolicy:
    """The policy of a pathwise estimator named ``estimator``: every latent reparameterised; a
    site without ``rsample`` is refused."""
    def policy(site: dict[str, Any]) -> Mode:
        if not site["fn"].has_rsample:
            raise InputError(
                f"estimator {estimator}: site {site['name']!r} ({describe(site['fn'])}) has no rsample and "
                "cannot be reparameterised; use estimator 'auto' (score-function terms for such sites) or 'score'"
            )
        return "reparam"

    return policy


pathwise_mode = reparameterised("pathwise")


def score_mode(site: dict[str, Any]) -> Mode:
    """Every latent held fixed (the Delta check happens when it is drawn)."""
    return "score"


def auto_mode(site: dict[str, Any]) -> Mode:
    """As Pyro's ``Trace_ELBO``: reparameterised where ``rsample`` exists, else a score term."""
    return "reparam" if site["fn"].has_rsample else "score"


class DrawLatents(Messenger):
    """Draw every latent sample site the way ``policy`` says, recording which are held fixed.

    Enter it outside the traced model and guide: Pyro lets the innermost handlers see a message
    first, so the plates around a site (the particle plate too) have broadcast its distribution
    and ``replay`` has filled the model's guide-covered sites before this handler looks at them.
    """

    def __init__(self, policy: SiteModePolicy, path_scales: Any = None) -> None:
        super().__init__()
        self.policy = policy
        self.path_scales = path_scales  # a _stopped.PathScales: reparameterised values get a scaled path
        self.held: set[str] = set()  # names of the sites drawn in score mode

    def _process_message(self, msg: Any) -> None:
        if msg["type"] != "sample" or msg["is_observed"] or msg["value"] is not None or site_is_subsample(msg):
            return
        if self.policy(msg) == "reparam":
            if self.path_scales is not None:  # Pyro's draw, whose gradient DReG weighs on the way back
                from bbvi_kit.estimators._stopped import scaled_path

                value = msg["fn"](*msg["args"], **msg["kwargs"])
                msg["value"] = scaled_path(value, self.path_scales, msg["name"])
            return  # else Pyro's default draw: ``fn()``, which is ``rsample`` where it exists
        fn = msg["fn"]
        if is_delta(fn):
            value = fn(*msg["args"], **msg["kwargs"])
            if value.requires_grad:
                raise InputError(
                    f"estimator score: site {msg['name']!r} is a Delta whose value depends on parameters "
                    "(a point estimate such as AutoDelta's): it has no score function; use estimator "
                    "'auto' or 'pathwise'"
                )
        else:
            # ``fn()`` draws as Pyro's ELBOs do (``rsample`` where it exists: the same random
            # stream at the same seed), here without a graph; ``detach`` makes it a new tensor
            # that a cached transform cannot recognise (see the module docstring).
            with torch.no_grad():
                value = fn(*msg["args"], **msg["kwargs"])
            value = value.detach()
        msg["value"] = value
        self.held.add(msg["name"])


def refuse_model_enumeration(model_only: list[dict[str, Any]]) -> None:
    """Refuse model-side enumeration: bbvi-kit draws model-only latents, never sums them out."""
    for site in model_only:
        if is_enumerated(site):
            raise InputError(
                f"model site {site['name']!r} is marked for enumeration (infer={{'enumerate': "
                f"{site['infer']['enumerate']!r}}}): bbvi-kit does not sum out discrete model sites; "
                "sample it in the guide (estimator 'auto' or 'score'), or train with Pyro's TraceEnum_ELBO"
            )
