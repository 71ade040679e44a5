"""The metrics log: one row of ``metrics.csv`` every ``training.record_every`` steps, and the
non-finite policy applied to each step (:class:`bbvi_kit.step_log.StepLog`).

Rows stay on the device until a flush (every ``training.flush_every`` steps, and whenever an
evaluation, a diagnostic or a checkpoint needs them on disk first), then go to
``History.metrics`` and the run directory's ``metrics.csv`` in one transfer. Its checkpoint
state is the log's running sums (the squared-norm sum over updates made, the counts of updates
made and skipped).
"""

from __future__ import annotations

from typing import Any, Mapping

from bbvi_kit.config import TrainingOptions
from bbvi_kit.infer.bbvi import BBVI, StepResult
from bbvi_kit.runs import RunDirectory
from bbvi_kit.step_log import NonFiniteAtFlush, StepLog
from bbvi_kit.train.callback import Callback, LoopState
from bbvi_kit.train.history import History


class MetricsLog(Callback):
    """Records each step's loss and squared gradient norms into ``history`` and ``run``."""

    def __init__(self, bbvi: BBVI, options: TrainingOptions, history: History, run: RunDirectory | None,
                 *, writes_info: bool = True) -> None:
        self.bbvi = bbvi
        self.options = options
        self.history = history
        self.run = run
        self.writes_info = writes_info  # (data-parallel: rank 0 only)
        self.log = StepLog(bbvi.device, list(bbvi.groups), stop_on_nonfinite=options.on_nonfinite == "stop",
                           max_skips=options.max_nonfinite_skips)
        self.last_row: dict[str, float] | None = None
        self._first_step = True

    def on_fit_start(self, loop: LoopState) -> None:
        self.log.groups[:] = list(self.bbvi.groups)  # (a resumed run knows them already)
        self._first_step = True

    def on_step(self, loop: LoopState, result: StepResult) -> None:
        if self._first_step and self.run is not None and self.writes_info and self.bbvi.loss.examples is not None:
            self.run.update_info(examples=self.bbvi.loss.examples.as_dict())
        self._first_step = False
        if not self.log.groups:
            self.log.groups[:] = list(self.bbvi.groups)
        self.log.add(loop.step, loop.epoch, result)
        if not result.overflow and (loop.step % self.options.record_every == 0 or loop.last):  # (fp16: no row)
            head: dict[str, Any] = {"step": loop.step, "epoch": loop.epoch, "lr": result.lr, "time": loop.elapsed()}
            if result.beta is not None:
                head["beta"] = result.beta
            if self.options.precision == "fp16":  # steps whose overflow the gradient scaler skipped, so far
                head["scaler_skips"] = self.log.scaler_skips
            self.log.record(head, result)
        if loop.step % self.options.flush_every == 0:
            self.flush(loop)

    def flush(self, loop: LoopState) -> None:
        """Read the recorded values back and write them (a non-finite step found here raises
        after the rows before it are written)."""
        try:
            rows = self.log.flush()
        except NonFiniteAtFlush as exc:
            self._write(exc.rows)
            raise
        self._write(rows)

    def _write(self, rows: list[dict[str, float]]) -> None:
        if not rows:
            return
        self.history.metrics.extend(rows)
        if self.run is not None:
            self.run.metrics.write(rows)
        self.last_row = rows[-1]

    def state_dict(self) -> dict[str, Any]:
        return self.log.state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.log.load_state(dict(state))
