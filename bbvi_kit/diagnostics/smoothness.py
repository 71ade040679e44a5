r"""A local estimate of the gradient's Lipschitz constant along the training trajectory."""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from pydantic import Field

from bbvi_kit.diagnostics.base import Diagnostic, DiagnosticContext, DiagnosticOptions
from bbvi_kit.diagnostics.full_gradient import batch_gradient, group_slices, preserved_training_state
from bbvi_kit.findings import Finding
from bbvi_kit.registry import register_diagnostic
from bbvi_kit.results.run import Run
from bbvi_kit.results.table import Table, finite
from bbvi_kit.results.words import short

if TYPE_CHECKING:  # pragma: no cover
    from bbvi_kit.diagnostics.training_state import TrainingState


@contextmanager
def parameters_at(params: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> Iterator[None]:
    """Temporarily set ``params`` (in place) to ``values``; their own values are put back
    bit for bit on exit, whatever happens inside."""
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, v in zip(params, values):
                p.copy_(v)
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


def crn_gradient(training: Any, args: tuple, params: Sequence[torch.Tensor], estimator_state: Mapping,
                 seed: int) -> list[torch.Tensor]:
    """The training surrogate's gradient on batch ``args`` with the random stream seeded by
    ``seed`` (the common random numbers: the same latent noise eps at any parameters), in a
    forked stream so the caller's is untouched."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return batch_gradient(training, args, params, estimator_state)


def _squared_norms(tensors: Sequence[torch.Tensor], slices: Mapping[str, slice]) -> torch.Tensor:
    """``[total, group_1, group_2, ...]`` squared norms (float64) of a list split by ``slices``."""
    per_group = [
        sum((t.double().square().sum() for t in tensors[part]), torch.zeros((), dtype=torch.float64,
                                                                          device=tensors[0].device))
        for part in slices.values()
    ]
    stacked = torch.stack(per_group)
    return torch.cat([stacked.sum().reshape(1), stacked])


@register_diagnostic("smoothness")
class Smoothness(Diagnostic):
    r"""The ratio of gradient change to parameter change between consecutive measurements, with
    common random numbers: a local estimate of the smoothness constant L (the Lipschitz constant
    of the gradient) that the convergence theorems of Surendran et al. (AISTATS 2025) assume.

    With x_n the parameters (all groups) at this measurement, x_p those at the previous one of
    this diagnostic (p = n - ``every``; p = n - 1 with ``every: 1``, i.e. the parameters before
    the last optimizer step), a mini-batch xi of ``batch_size`` training examples and a seed for
    the latent noise eps drawn afresh at each measurement, and \hat g(x; xi, eps) the gradient of
    the training surrogate (the run's objective, K and estimator; nats per example):

    .. math::
        \hat L_n = \frac{\| \hat g(x_n; \xi, \epsilon) - \hat g(x_p; \xi, \epsilon) \|}
                        {\| x_n - x_p \|}.

    Both gradients use the same batch and the same eps (common random numbers), so the
    sampling noise cancels and \hat L_n is the secant slope of one fixed function's gradient:
    for a quadratic objective with Hessian H it is exactly ||H d|| / ||d||, d = x_n - x_p, and
    it never exceeds the largest |eigenvalue| of H. In general it is a lower bound on the
    Lipschitz constant of \hat g(.; xi, eps) on the segment [x_p, x_n] (mean-value theorem), and
    its expectation over (xi, eps) bounds the same ratio for the full objective from above
    (Jensen), so it tracks the L of the theorems along the trajectory. The old gradient is
    recomputed at the stored x_p with the new batch and noise (caching the old gradient would
    lose the common random numbers).

    Columns: ``lipschitz`` = \hat L_n; ``lipschitz_<group>`` = ||(\hat g(x_n) - \hat g(x_p))_group|| /
    ||x_n - x_p|| for each parameter group (``phi``, ``theta``): each group's share of the
    gradient change per unit of total step, with sum_group lipschitz_group^2 = lipschitz^2;
    ``param_step_norm`` = ||x_n - x_p|| and ``param_step_norm_<group>``; ``steps_apart`` = n - p.
    The first measurement of a run has no x_p: its values are NaN (and ``steps_apart`` 0);
    ``lipschitz`` is NaN too when the parameters did not move.

    Cost: two forward and backward passes over one mini-batch per measurement (about two
    training steps), and memory for one copy of the parameters, kept between measurements.
    Parameters are set to x_p for the second pass and restored bit for bit; the estimator's
    state and module buffers are restored too.
    """

    class Options(DiagnosticOptions):
        batch_size: int | None = Field(
            None, ge=1, le=10_000_000, description="examples in the common mini-batch; null: training.batch_size"
        )

    options: Options

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # (the training state it came from, its step, the parameters then)
        self._previous: tuple[weakref.ref, int, list[torch.Tensor]] | None = None

    def state_dict(self) -> dict[str, Any]:
        if self._previous is None:
            return {}
        _, step, params = self._previous
        return {"step": step, "parameters": [p.cpu() for p in params]}

    def load_state_dict(self, state: dict[str, Any], training: "TrainingState") -> None:
        if not state:
            self._previous = None
            return
        params = [p.to(training.device) for p in state["parameters"]]
        self._previous = (weakref.ref(training), int(state["step"]), params)

    def reset(self) -> None:
        """Forget the stored parameters (the next measurement starts afresh)."""
        self._previous = None

    def measure(self, context: DiagnosticContext) -> dict[str, float]:
        training = context.training
        params, slices = group_slices(training.groups)
        current = [p.detach().clone() for p in params]
        previous, self._previous = self._previous, (weakref.ref(training), context.step, current)
        names = ["lipschitz", *(f"lipschitz_{g}" for g in slices), "param_step_norm",
                 *(f"param_step_norm_{g}" for g in slices)]
        if (previous is None or previous[0]() is not training or previous[1] >= context.step
                or [p.shape for p in previous[2]] != [p.shape for p in current]):
            return {**{name: float("nan") for name in names}, "steps_apart": 0}
        old = previous[2]

        batch_size = self.options.batch_size or training.batch_size
        order = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        args = next(iter(context.batches(context.train, batch_size, shuffle=True, generator=order)))
        seed = int(torch.randint(2**62, ()))
        with preserved_training_state(training) as state:
            g_new = crn_gradient(training, args, params, state, seed)
            with parameters_at(params, old):
                g_old = crn_gradient(training, args, params, state, seed)
        grad_change = _squared_norms([a - b for a, b in zip(g_new, g_old)], slices).sqrt()
        step = _squared_norms([a - b for a, b in zip(current, old)], slices).sqrt()
        total_step = step[0]
        lipschitz = torch.where(total_step > 0, grad_change / total_step, torch.full_like(grad_change, float("nan")))
        values = torch.cat([lipschitz, step]).tolist()  # one transfer from the device
        return {**dict(zip(names, values)), "steps_apart": context.step - previous[1]}

    headline_column = "lipschitz"  # the column whose trend the report states

    @classmethod
    def findings(cls, table: Table, run: Run, label: str = "") -> list[Finding]:
        """The range of the local Lipschitz estimate along the trajectory."""
        values = finite(table.column("lipschitz")) if "lipschitz" in table.columns else np.array([])
        if not len(values):
            return []
        who = f"{label}: " if label else ""
        return [Finding(
            f"{who}the local Lipschitz estimate L ranges from {short(values.min())} to {short(values.max())} "
            f"(median {short(np.median(values))}) along the trajectory; the L of the theorems is at least the "
            f"largest, {short(values.max())}.", "info", "diagnostic:smoothness",
            {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())})]
