"""One estimator (and, optionally, one objective) for the guide's parameters, another for the model's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field, ValidationError, field_validator

from bbvi_kit.estimators.base import Estimator, SurrogateLoss
from bbvi_kit.estimators._particles import Particles
from bbvi_kit.objectives.base import Objective
from bbvi_kit.parameters import leaf_tensors, site_tensors
from bbvi_kit.errors import InputError
from bbvi_kit.plugin import PluginOptions, validation_error_line
from bbvi_kit.registry import estimators, objectives, register_estimator


def _plugin(registry: Any, name: str) -> Any:
    """``registry.get(name)``, its one-line error (with a "did you mean") as a ``ValueError`` for
    pydantic's validators."""
    try:
        return registry.get(name)
    except InputError as exc:
        raise ValueError(str(exc)) from None


def _build_estimator(spec: str | dict[str, Any]) -> Estimator:
    """An estimator from a name or a mapping ``{name: ..., <its options>}``; ``ValueError`` in one
    line for an unknown name, ``split`` itself, or options its schema refuses."""
    options = dict(spec) if isinstance(spec, dict) else {"name": spec}
    name = options.pop("name", None)
    if not isinstance(name, str):
        raise ValueError("give an estimator name, or a mapping with name: and its options")
    if name == "split":
        raise ValueError("split cannot contain split")
    try:
        return _plugin(estimators, name)(**options)
    except ValidationError as exc:
        raise ValueError(validation_error_line(exc)) from None


@dataclass
class GuideGradient:
    """phi's part of a split step: the ids of the guide's parameters and their gradients."""

    guide: set[int]
    pairs: list[tuple[torch.Tensor, torch.Tensor | None]]


@register_estimator("split")
class PerGroup(Estimator):
    r"""The gradient of the guide's parameters phi from one estimator, that of the model's
    parameters theta from another, each on its own pass of particles:

    .. math:: \hat g = \big(\hat g_\phi^{A}(\mathcal{L}_\phi),\ \hat g_\theta^{B}(\mathcal{L})\big),

    A = ``phi`` (e.g. ``dreg``, ``stl``, ``score``, or ``{name: score, baseline: leave_one_out}``),
    B = ``theta`` (default ``pathwise``),
    L the run's objective and L_phi = ``phi_objective`` with ``phi_num_particles`` particles
    (default: the run's objective and K). Each part is unbiased for its own bound's gradient in
    its own group, so the pair is an unbiased estimate of (grad_phi L_phi, grad_theta L): with
    L_phi = L, of L's gradient. With ``phi_objective: elbo`` under an IWAE run this is PIWAE
    (Rainforth et al., "Tighter Variational Bounds are Not Necessarily Better", ICML 2018: the
    IWAE bound for theta, an ELBO-type bound for phi, whose SNR does not fall with K).

    For guide latents the estimators of this package all give theta the same gradient at the
    same draws (theta does not move the draws): ``dreg`` alone already is "IWAE for theta and
    DReG for phi". The split matters where the two groups should see different bounds or
    different draws, and to compare estimators group by group.

    phi is every trainable tensor that the guide's draws or log densities depend on (as
    :mod:`bbvi_kit.parameters` classifies them), theta every other one the bound reaches. The
    step costs two particle passes and two backward passes (``torch.autograd.grad`` on each,
    restricted to its group; phi's is taken before theta's pass is drawn, so the two graphs are
    not held at once); the surrogate handed back is linear in the parameters, with the two
    gradients as its coefficients, so one ``backward`` puts them in place. The reported loss is
    the run's objective, from the theta pass.
    """

    class Options(PluginOptions):
        phi: str | dict[str, Any] = Field(
            description="the estimator of the guide's parameters: a name (dreg, stl, score, ...) or {name: ..., options}"
        )
        theta: str | dict[str, Any] = Field("pathwise", description="the estimator of the model's parameters (as phi)")
        phi_objective: str | None = Field(
            None, description="the objective phi is trained on (e.g. elbo for PIWAE); null: the run's"
        )
        phi_num_particles: int | None = Field(
            None, ge=1, le=100_000, description="K of phi's objective; null: the run's K"
        )

        @field_validator("phi", "theta")
        @classmethod
        def _estimator(cls, spec: str | dict[str, Any]) -> str | dict[str, Any]:
            _build_estimator(spec)
            return spec

        @field_validator("phi_objective")
        @classmethod
        def _objective(cls, name: str | None) -> str | None:
            if name is not None:
                _plugin(objectives, name)
            return name

    options: Options

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.phi = _build_estimator(self.options.phi)
        self.theta = _build_estimator(self.options.theta)

    def phi_objective(self, objective: Objective) -> Objective:
        """The objective phi's estimator differentiates, given the run's ``objective``."""
        name = self.options.phi_objective
        if name is None:
            options = objective.options.model_dump()
            cls: type[Objective] = type(objective)
        else:
            options = {"num_particles": objective.num_particles}
            cls = objectives.get(name)
        if self.options.phi_num_particles is not None:
            options["num_particles"] = self.options.phi_num_particles
        return cls(**options)

    def check(self, objective: Objective) -> None:
        for group, estimator, bound in (("phi", self.phi, self.phi_objective(objective)),
                                        ("theta", self.theta, objective)):
            try:
                estimator.check(bound)
            except ValueError as exc:
                raise ValueError(f"{group}: {exc}") from None

    def surrogate(self, objective: Objective, particles: Particles) -> SurrogateLoss:
        raise TypeError("estimator split draws two passes of particles: call it through BBVILoss")

    def guide_gradient(self, phi: SurrogateLoss) -> GuideGradient:
        """phi's part's gradient in the guide's parameters, taken at once so that its pass's graph is
        freed before theta's pass is drawn."""
        guide = leaf_tensors(site_tensors(phi.particles.guide_trace))
        params = list(guide.values())
        grads: tuple[torch.Tensor | None, ...] = ()
        if params and phi.surrogate.requires_grad:
            grads = torch.autograd.grad(phi.surrogate, params, allow_unused=True)
        return GuideGradient(set(guide), list(zip(params, grads)))

    def combine(self, phi: GuideGradient, theta: SurrogateLoss) -> SurrogateLoss:
        """The surrogate whose gradient is phi's part's in the guide's parameters and theta's part's
        in the model's (class docstring)."""
        model = [t for i, t in leaf_tensors([theta.surrogate]).items() if i not in phi.guide]
        pairs = list(phi.pairs)
        if model and theta.surrogate.requires_grad:
            pairs += zip(model, torch.autograd.grad(theta.surrogate, model, allow_unused=True))
        surrogate: torch.Tensor = theta.surrogate.detach() * 0.0  # (nothing reached: no gradient)
        for p, grad in pairs:
            if grad is not None:
                surrogate = surrogate + (grad.detach() * p).sum()
        return SurrogateLoss(surrogate=surrogate, loss=theta.loss, particles=theta.particles)

    def state_dict(self) -> dict[str, Any]:
        return {"phi": self.phi.state_dict(), "theta": self.theta.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phi.load_state_dict(state.get("phi") or {})
        self.theta.load_state_dict(state.get("theta") or {})
