r"""Per-site baselines for the Rao-Blackwellised score-function estimator.

With Rao-Blackwellisation each held site i has its own learning signal, its downstream cost c_i
(:mod:`bbvi_kit.estimators._downstream`), and so its own baseline b_i: any b_i that does not
depend on z_i (given its parents) keeps the estimator unbiased, since
E[b_i grad log q(z_i)] = b_i E[grad log q(z_i)] = 0, and one close to E[c_i] lowers its variance
(Mnih & Gregor, "Neural Variational Inference and Learning in Belief Networks", ICML 2014).

Where a baseline comes from, per site:

- the site's ``infer={"baseline": {...}}`` dict, as Pyro's ``TraceGraph_ELBO`` reads it (it
  overrides the estimator's option for that site; an empty dict means no baseline):

  - ``use_decaying_avg_baseline`` / ``baseline_beta`` (default 0.9): b is an exponential moving
    average of c_i, entry by entry (its shape is the cost's, ``[K, *plates]``), starting at 0:
    each step subtracts the average of the steps before it. The average restarts at 0 when the
    cost's shape changes (a short last batch, another K), where Pyro would fail;
  - ``nn_baseline`` (an ``nn.Module``, registered with ``pyro.module`` in the guide so that it is
    trained) applied to ``nn_baseline_input`` (detached), or ``baseline_value`` (a tensor): b is
    its output, broadcast to the cost's shape (one value per example, say), and the squared
    error (c_i - b)^2, averaged over particles, is added to the surrogate so that the optimiser
    fits b to the cost (it adds nothing to the other parameters' gradients). Either can be added
    to the decaying average, as in Pyro. The cost here is per example, without the kept data
    plate's subsampling scale N/B, so one fitted b serves any batch size. :class:`BaselineNet`
    is a ready-made ``nn_baseline``;

- else the estimator's ``baseline`` option, per site: ``running_mean`` (an exponential moving
  average with ``baseline_decay`` of the site's cost averaged over particles and entries, the
  first step initialising it without subtracting), ``leave_one_out`` (the mean cost of the
  other K-1 particles: b_k = (sum_j c_j - c_k) / (K - 1)), ``none``.

:class:`SiteBaselines` holds the running state (saved and restored through the estimator's
``state_dict``, so that a skipped step or a checkpoint puts it back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bbvi_kit.distributed import global_mean
from bbvi_kit.errors import InputError
from bbvi_kit.estimators._downstream import SiteScore

PYRO_BASELINE_KEYS = ("nn_baseline", "nn_baseline_input", "use_decaying_avg_baseline", "baseline_beta",
                      "baseline_value")


class BaselineNet(nn.Module):
    r"""A small learned baseline b(x): an MLP from an input of ``input_dim`` features per example
    to one scalar per example (output shape: the input's batch shape).

    Use it as a site's ``nn_baseline`` (register it in the guide, e.g.
    ``pyro.module("baseline", net)``, so the optimiser trains it on the squared error
    (c - b(x))^2 the estimator adds)::

        pyro.sample("z", dist.Bernoulli(logits=encoder(x)),
                    infer={"baseline": {"nn_baseline": net, "nn_baseline_input": x}})

    Input-dependent baselines are NVIL's (Mnih & Gregor, ICML 2014).

    Args:
        input_dim: features per example (the last dim of ``nn_baseline_input``).
        hidden: width of the one hidden layer (tanh).
    """

    def __init__(self, input_dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(input_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


@dataclass(frozen=True)
class PyroBaseline:
    """A site's ``infer["baseline"]`` options, with Pyro's defaults."""

    nn_baseline: nn.Module | None = None
    nn_baseline_input: Any = None
    use_decaying_avg_baseline: bool = False
    baseline_beta: float = 0.9
    baseline_value: torch.Tensor | None = None

    @classmethod
    def of(cls, site: str, options: dict[str, Any]) -> PyroBaseline:
        unknown = sorted(set(options) - set(PYRO_BASELINE_KEYS))
        if unknown:
            raise InputError(f"site {site!r}: unknown baseline option(s) {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(PYRO_BASELINE_KEYS)})")
        parsed = cls(**options)
        if parsed.nn_baseline is not None and parsed.baseline_value is not None:
            raise InputError(f"site {site!r}: baseline options nn_baseline and baseline_value exclude each other")
        if parsed.nn_baseline is not None and parsed.nn_baseline_input is None:
            raise InputError(f"site {site!r}: baseline option nn_baseline needs nn_baseline_input")
        if not 0.0 <= float(parsed.baseline_beta) < 1.0:
            raise InputError(f"site {site!r}: baseline_beta must be in [0, 1), got {parsed.baseline_beta}")
        return parsed


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(v) for v in value)
    return value


class SiteBaselines:
    """Per-site baselines (see the module docstring) and their running state."""

    def __init__(self) -> None:
        self.running_means: dict[str, torch.Tensor] = {}  # the estimator-wide running_mean, per site
        self.decaying_averages: dict[str, torch.Tensor] = {}  # Pyro's use_decaying_avg_baseline, per site

    def centre(self, site: SiteScore, default: str, decay: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(c_i - b_i, squared error)`` for ``site``: its cost less its baseline (no gradient
        flows into it through the first), and, for a fitted baseline (``nn_baseline``,
        ``baseline_value``), (c_i - b)^2 with b's graph, shaped as the cost; else ``None``."""
        cost = site.cost
        options = site.infer.get("baseline")
        if options is None:
            return cost - self._default(site.name, cost, default, decay), None
        parsed = PyroBaseline.of(site.name, dict(options))
        baseline: torch.Tensor | None = None
        if parsed.use_decaying_avg_baseline:
            baseline = self._decaying(site.name, cost, float(parsed.baseline_beta))
        fitted: torch.Tensor | None = None
        if parsed.nn_baseline is not None:
            fitted = parsed.nn_baseline(_detached(parsed.nn_baseline_input))
        elif parsed.baseline_value is not None:
            fitted = torch.as_tensor(parsed.baseline_value, dtype=cost.dtype, device=cost.device)
        if fitted is not None:
            if torch.broadcast_shapes(fitted.shape, cost.shape) != cost.shape:
                raise InputError(f"site {site.name!r}: its baseline has shape {tuple(fitted.shape)}, which does not "
                                 f"broadcast to its downstream cost's {tuple(cost.shape)} (particles, then its plates)")
            baseline = fitted if baseline is None else baseline + fitted
        if baseline is None:
            return cost, None
        squared_error = (cost - baseline).pow(2).expand(cost.shape) if fitted is not None else None
        return cost - baseline.detach(), squared_error

    def _default(self, name: str, cost: torch.Tensor, option: str, decay: float) -> torch.Tensor | float:
        if option == "leave_one_out":
            k = cost.shape[0]
            return (cost.sum(0, keepdim=True) - cost) / (k - 1)
        if option == "running_mean":
            current = global_mean(cost)  # over every rank's examples in data-parallel training
            previous = self.running_means.get(name)
            if previous is None:  # the first step initialises it, without subtracting
                self.running_means[name] = current
                return 0.0
            self.running_means[name] = decay * previous + (1.0 - decay) * current
            return previous
        return 0.0

    def _decaying(self, name: str, cost: torch.Tensor, beta: float) -> torch.Tensor:
        previous = self.decaying_averages.get(name)
        if previous is None or previous.shape != cost.shape:
            previous = torch.zeros_like(cost)
        self.decaying_averages[name] = beta * previous + (1.0 - beta) * cost
        return previous

    def state_dict(self) -> dict[str, Any]:
        return {"running_means": dict(self.running_means), "decaying_averages": dict(self.decaying_averages)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.running_means = dict(state.get("running_means") or {})
        self.decaying_averages = dict(state.get("decaying_averages") or {})
