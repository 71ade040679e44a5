"""Checkpoints of a run: written every ``training.checkpoint_every`` steps (default: at each
epoch's end), after the last step, and when a SIGTERM or SIGINT stops the run.

A checkpoint is the union of the run's states: the step's (parameters, optimizer, estimator),
the diagnostics' and the random streams' (the ``state`` function, e.g.
:meth:`bbvi_kit.engine.Trainer.state_dict`), and under ``loop`` the loop's position joined with
every callback's state (:meth:`LoopState.state_dict`); with the byte sizes of the run's CSV files
(``logs``, so that a resume cuts them back to this step) and the run's identity. The metrics are
flushed first. See :mod:`bbvi_kit.checkpoint` for how the file is written and kept.
"""

from __future__ import annotations

from typing import Any, Callable

from bbvi_kit.checkpoint import Checkpoints
from bbvi_kit.errors import OutputError, TrainingError
from bbvi_kit.infer.bbvi import StepResult
from bbvi_kit.runs import RunDirectory
from bbvi_kit.train.callback import Callback, LoopState


class Checkpointing(Callback):
    """Saves ``state()`` plus the loop's and callbacks' states into ``checkpoints`` when due."""

    def __init__(self, checkpoints: Checkpoints, run: RunDirectory, state: Callable[[], dict[str, Any]],
                 every: int | None = None) -> None:
        self.checkpoints = checkpoints
        self.run = run
        self.state = state
        self.every = every
        self.last_step = -1

    def on_step(self, loop: LoopState, result: StepResult) -> None:
        if (self.every is not None and loop.step % self.every == 0) or (self.every is None and loop.epoch_end) \
                or loop.last:
            self.save(loop)

    def save(self, loop: LoopState) -> None:
        loop.flush()
        state = self.state()
        state["loop"] = loop.state_dict()
        state["logs"] = self.run.log_sizes()
        state["identity"] = self.run.identity()
        self.checkpoints.save(state, loop.step)
        self.last_step = loop.step

    def on_interrupt(self, loop: LoopState) -> str | None:
        if self.last_step != loop.step:
            self.save(loop)
        return f"checkpoint at step {loop.step}"

    def on_error(self, loop: LoopState, error: BaseException) -> BaseException | None:
        """A training error says where the latest checkpoint is (an output error also where it
        happened)."""
        if not isinstance(error, TrainingError):
            return None
        where = f"step {loop.step} (epoch {loop.epoch}): " if isinstance(error, OutputError) else ""
        return type(error)(f"{where}{error}; {self.checkpoints.describe_latest()}")
