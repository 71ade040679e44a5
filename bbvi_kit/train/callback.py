"""What the training loop tells the parts that watch it: the :class:`Callback` hooks and the
:class:`LoopState` they read.

The loop (:func:`bbvi_kit.train.loop.fit`) only takes steps; everything else a run does — the
metrics log, evaluation, diagnostics, checkpoints, the progress bar, and whatever a user adds —
is a callback. After every step each callback's :meth:`Callback.on_step` runs, in the order
given. A callback that buffers rows writes them in :meth:`Callback.flush`, which the loop calls
through :meth:`LoopState.flush` whenever a later callback needs everything before it on disk
(an evaluation, a diagnostic, a checkpoint) and at the end. A checkpoint's ``loop`` entry is the
loop's position joined with every callback's :meth:`Callback.state_dict`; on resume each
callback gets that same mapping back in :meth:`Callback.load_state_dict`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from bbvi_kit.infer.bbvi import StepResult


class Callback:
    """A part of a training run that acts after steps; every hook is optional."""

    def on_fit_start(self, loop: "LoopState") -> None:
        """Before the first step of this call of ``fit`` (after a resume's state is loaded)."""

    def on_step(self, loop: "LoopState", result: StepResult) -> None:
        """After step ``loop.step`` (its update made or skipped)."""

    def flush(self, loop: "LoopState") -> None:
        """Write what is buffered (rows kept on the device); may raise the error a buffered step
        carries (a non-finite step found at flush)."""

    def on_interrupt(self, loop: "LoopState") -> str | None:
        """A SIGTERM or SIGINT arrived during the step just finished; what was saved, in a few
        words for the message (``None``: nothing)."""
        return None

    def on_error(self, loop: "LoopState", error: BaseException) -> BaseException | None:
        """The run fails with ``error``: a better-worded error to raise instead, or ``None``."""
        return None

    def close(self, loop: "LoopState") -> None:
        """The call of ``fit`` ends, however it ends."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to go on exactly (joined into the checkpoint's ``loop``)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from a checkpoint's ``loop`` mapping (every callback's entries together)."""


@dataclass
class LoopState:
    """Where the loop is: read by callbacks, moved only by the loop."""

    total: int  # the run's last step
    per_epoch: int  # steps per epoch
    callbacks: Sequence[Callback] = ()
    step: int = 0  # steps taken (n after step n)
    epoch: int = 0  # 0-based
    batch_index: int = 0  # batches of this epoch taken
    epoch_generator: torch.Tensor | None = None  # the batch order's generator state at this epoch's start
    start: float = field(default_factory=time.perf_counter)  # perf_counter at (resumed) time 0

    @property
    def epoch_end(self) -> bool:
        """Whether the step just taken was its epoch's last."""
        return self.batch_index == self.per_epoch

    @property
    def last(self) -> bool:
        """Whether the step just taken was the run's last."""
        return self.step == self.total

    def elapsed(self) -> float:
        """Seconds of training so far (resumed runs count from their first start)."""
        return time.perf_counter() - self.start

    def flush(self) -> None:
        """Every callback writes what it buffers (:meth:`Callback.flush`)."""
        for callback in self.callbacks:
            callback.flush(self)

    def state_dict(self) -> dict[str, Any]:
        """The loop's position and every callback's state: a checkpoint's ``loop`` entry."""
        state: dict[str, Any] = {"epoch": self.epoch, "batch_index": self.batch_index,
                                 "epoch_generator": self.epoch_generator}
        for callback in self.callbacks:
            state.update(callback.state_dict())
        state["elapsed"] = self.elapsed()
        return state
