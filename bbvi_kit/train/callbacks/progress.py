"""The progress bar: steps done of the run's total, with the last recorded loss."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

from bbvi_kit.infer.bbvi import StepResult
from bbvi_kit.train.callback import Callback, LoopState
from bbvi_kit.train.callbacks.metrics import MetricsLog


class ProgressBar(Callback):
    """A ``tqdm`` bar over the run's steps (shown when ``enabled``), its postfix the loss of the
    last metrics row written."""

    def __init__(self, metrics: MetricsLog, enabled: bool = True) -> None:
        self.metrics = metrics
        self.enabled = enabled
        self.bar: Any = None
        self._shown: dict[str, float] | None = None

    def on_fit_start(self, loop: LoopState) -> None:
        self.bar = tqdm(total=loop.total, initial=loop.step, disable=not self.enabled, unit="it",
                        dynamic_ncols=True, leave=True)

    def _show_loss(self) -> None:
        row = self.metrics.last_row
        if row is not None and row is not self._shown:
            self.bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)
            self._shown = row

    def on_step(self, loop: LoopState, result: StepResult) -> None:
        self._show_loss()
        self.bar.update(1)

    def close(self, loop: LoopState) -> None:
        if self.bar is not None:
            self._show_loss()
            self.bar.close()
