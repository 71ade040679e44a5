"""The per-step record of a training run, kept on the device until it is flushed.

Every step adds its loss and the squared norms of its mini-batch gradient g (columns
``minibatch_grad_norm_sq`` and ``minibatch_grad_norm_sq_<group>``); :class:`StepLog` keeps the
running sum of ||g||^2 over the updates made (``minibatch_grad_norm_sq_avg``). That average is
*not* the quantity the theorems of Surendran et al. (AISTATS 2025) bound: E||g||^2 =
||grad L||^2 + tr Cov(g), and the variance term levels off at a floor set by B and K. The
full-data ||grad L||^2 is measured by the ``full_gradient`` diagnostic
(:mod:`bbvi_kit.diagnostics.convergence` says which curve the verdict reads). It also keeps the
counts of updates made and skipped, and the rows waiting to be written. All of it stays in
device tensors: nothing is read back to the host until :meth:`StepLog.flush`,
every ``training.flush_every`` steps (and before evaluations, diagnostics and checkpoints), so
a step costs no host synchronisation.

Non-finite steps are handled in one of two ways (``training.nonfinite_check``):

- ``every_step``: the trainer reads the step's finiteness back before the update and tells the
  log what happened (:attr:`StepResult.problem`); the policy acts at once.
- ``at_flush``: the update was skipped on the device (the fused optimizer's ``found_inf``), and
  the step only leaves its finiteness flag here (:attr:`StepResult.finite`). :meth:`flush`
  finds the first step that broke the policy, writes the rows before it, and raises the same
  error ``every_step`` would have raised at that step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from bbvi_kit.errors import TrainingError
from bbvi_kit.infer.bbvi import StepResult, nonfinite_message


def skipped_steps_warning(rows: list[dict[str, Any]], warn_fraction: float) -> str | None:
    """A warning when the last of the metrics ``rows`` (``skipped_steps`` under
    ``on_nonfinite: skip``) says more than ``warn_fraction`` of the steps made no update: such a
    run "completed", but its results describe far fewer updates than its step count says."""
    if not rows or "skipped_steps" not in rows[-1]:
        return None
    steps, skipped = int(rows[-1]["step"]), int(rows[-1]["skipped_steps"])
    if steps == 0 or skipped <= warn_fraction * steps:
        return None
    return (f"{skipped} of {steps} steps ({skipped / steps:.0%}) were skipped as non-finite, more than "
            f"training.warn_skipped_fraction={warn_fraction:g}: the results describe {steps - skipped} updates")


@dataclass
class _Pending:
    head: dict[str, Any]  # step, epoch, lr, time (and a scheduled beta): known on the host
    values: torch.Tensor  # loss, minibatch_grad_norm_sq, minibatch_grad_norm_sq_avg, per group, skipped_steps


@dataclass
class StepLog:
    """See the module docstring. ``groups`` are the parameter groups' names, in column order."""

    device: torch.device
    groups: list[str]
    stop_on_nonfinite: bool
    max_skips: int
    grad_norm_sq_sum: torch.Tensor = field(init=False)
    good_steps: torch.Tensor = field(init=False)
    skipped_steps: torch.Tensor = field(init=False)
    scaler_skips: int = field(init=False, default=0)  # fp16: steps whose overflowing gradient the scaler skipped
    _rows: list[_Pending] = field(default_factory=list)
    _checks: list[tuple[int, int, torch.Tensor]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.load_state({"grad_norm_sq_sum": torch.zeros(()), "good_steps": 0, "skipped_steps": 0})

    # -- state (checkpoints) -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The running sums, for a checkpoint (call after :meth:`flush`)."""
        return {"grad_norm_sq_sum": self.grad_norm_sq_sum.detach().cpu(), "good_steps": int(self.good_steps),
                "skipped_steps": int(self.skipped_steps), "scaler_skips": self.scaler_skips}

    def load_state(self, state: dict[str, Any]) -> None:
        self.grad_norm_sq_sum = state["grad_norm_sq_sum"].to(self.device, torch.float32)
        self.good_steps = torch.tensor(int(state["good_steps"]), device=self.device)
        self.skipped_steps = torch.tensor(int(state["skipped_steps"]), device=self.device)
        self.scaler_skips = int(state.get("scaler_skips", 0))

    # -- steps ---------------------------------------------------------------------------------
    def add(self, step: int, epoch: int, result: StepResult) -> None:
        """Count the step; with a host-known problem, apply the policy now (raise or count). An
        fp16 step the gradient scaler skipped (:attr:`StepResult.overflow`) is only counted."""
        if result.overflow:
            self.scaler_skips += 1
            return
        total = result.norms["total"].float()
        if result.finite is not None:  # at_flush: the device knows
            made = result.finite
            self.grad_norm_sq_sum = self.grad_norm_sq_sum + torch.where(made, total, torch.zeros_like(total))
            self.good_steps = self.good_steps + made
            self.skipped_steps = self.skipped_steps + ~made
            self._checks.append((step, epoch, torch.stack([made.float(), result.loss.float(), total,
                                                           self.skipped_steps.float()])))
            return
        if result.problem is None:
            self.grad_norm_sq_sum = self.grad_norm_sq_sum + total
            self.good_steps = self.good_steps + 1
            return
        if self.stop_on_nonfinite:
            raise TrainingError(result.problem)
        self.skipped_steps = self.skipped_steps + 1
        skipped = int(self.skipped_steps)  # the step was read back already: one more read is free
        if skipped > self.max_skips:
            raise TrainingError(self._over_limit(result.problem, skipped))

    def record(self, head: dict[str, Any], result: StepResult) -> None:
        """Queue a metrics row of this step (``head``: step, epoch, lr, time)."""
        average = self.grad_norm_sq_sum / self.good_steps  # 0 / 0 = NaN before the first update
        values = [result.loss, result.norms["total"], average, *(result.norms[g] for g in self.groups),
                  self.skipped_steps]
        self._rows.append(_Pending(head, torch.stack([v.float() for v in values])))

    # -- reading back --------------------------------------------------------------------------
    def flush(self) -> list[dict[str, float]]:
        """The queued rows, read back in one transfer. If an at_flush check finds a step that
        broke the policy, :class:`NonFiniteAtFlush` is raised instead, carrying the rows before
        that step."""
        rows, checks = self._rows, self._checks
        self._rows, self._checks = [], []
        if not rows and not checks:
            return []
        parts = [torch.stack([r.values for r in rows]).flatten()] if rows else []
        parts += [torch.stack([c[2] for c in checks]).flatten()] if checks else []
        values = torch.cat(parts).tolist()  # one transfer for rows and checks
        width = len(rows[0].values) if rows else 0
        out = []
        for i, pending in enumerate(rows):
            vals = values[i * width:(i + 1) * width]
            row = {"step": pending.head["step"], "epoch": pending.head["epoch"]}
            names = ["loss", "minibatch_grad_norm_sq", "minibatch_grad_norm_sq_avg",
                     *(f"minibatch_grad_norm_sq_{g}" for g in self.groups)]
            row.update(zip(names, vals[:-1]))
            row["lr"] = pending.head["lr"]
            for extra in ("beta", "scaler_skips"):  # a scheduled beta; fp16's steps skipped by the scaler so far
                if extra in pending.head:
                    row[extra] = pending.head[extra]
            if not self.stop_on_nonfinite:  # skipping: the skipped_steps column
                row["skipped_steps"] = int(vals[-1])
            row["time"] = pending.head["time"]
            out.append(row)
        failure = self._first_failure(checks, values[len(rows) * width:])
        if failure is None:
            return out
        step, message = failure
        raise NonFiniteAtFlush(message, [row for row in out if row["step"] < step])

    def _first_failure(self, checks: list[tuple[int, int, torch.Tensor]], values: list[float]) -> tuple[int, str] | None:
        for i, (step, epoch, _) in enumerate(checks):
            made, loss, norm, skipped = values[4 * i:4 * i + 4]
            if made:
                continue
            message = nonfinite_message(step, epoch, loss, norm)
            if self.stop_on_nonfinite:
                return step, message
            if int(skipped) > self.max_skips:
                return step, self._over_limit(message, int(skipped))
        return None

    def _over_limit(self, message: str, skipped: int) -> str:
        return f"{message}; {skipped} steps skipped, more than training.max_nonfinite_skips={self.max_skips}"


class NonFiniteAtFlush(TrainingError):
    """A non-finite step found when the log was read back; ``rows`` are the rows before it."""

    def __init__(self, message: str, rows: list[dict[str, float]] | None = None) -> None:
        super().__init__(message)
        self.rows = rows or []

