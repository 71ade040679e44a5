"""SIGTERM and SIGINT: stop at a step boundary with a checkpoint, not wherever the signal lands.

A batch scheduler (Slurm, Kubernetes, most clusters) stops a job with SIGTERM and kills it with
SIGKILL after a grace period; Ctrl-C sends SIGINT. Inside :func:`handling_signals` (the
``bbvi-kit`` command installs it for every command, in the main thread):

- while the training loop runs (inside :func:`deferring`), the first SIGTERM or SIGINT is only
  recorded: the loop finishes the step it is in, writes the buffered rows and a checkpoint, marks
  the run ``interrupted`` with the signal's name, and raises :class:`Interrupted`; the command
  exits with 128 + the signal number (143 for SIGTERM, 130 for SIGINT). ``--resume`` then goes on
  exactly as the uninterrupted run would have. The time this takes is at most one training step
  plus one checkpoint write (and the evaluation or diagnostics due at that step).
- a second signal stops at once (:class:`Interrupted` raised where the program is; the rows
  already recorded are still written, no checkpoint).
- outside the training loop (start-up: imports, data loading, model building; the end of a run:
  plots), a signal raises :class:`Interrupted` at once, and the command prints one line.

Data-parallel runs (``torchrun``) do not defer: every process must stop at the same step, which
a signal that reaches the processes at different moments cannot promise.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

__all__ = ["Interrupted", "deferring", "handling_signals", "install_for_worker", "received", "requested",
           "signal_name"]

_HANDLED = (signal.SIGINT, signal.SIGTERM)
_state: dict[str, Any] = {"installed": False, "deferring": False, "signum": None, "escalate": True,
                          "idle": None}
_last: dict[str, int | None] = {"signum": None}  # outlives handling_signals, for the error it leaves


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (``signum``); ``exit_code`` is 128 + signum.

    A :class:`KeyboardInterrupt`, so code that treats Ctrl-C as an interruption treats SIGTERM
    the same way."""

    resume_dir: str
    """Where to resume the stopped run or sweep from: set by the runner it stopped, unset before."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        super().__init__(message or f"interrupted by {signal_name(signum)}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    """``SIGTERM``, ``SIGINT``, ... for a signal number."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _handler(signum: int, _frame: Any) -> None:
    first = _state["signum"] is None
    _state["signum"] = _last["signum"] = signum
    if _state["deferring"] and (first or not _state["escalate"]):
        return  # the training loop stops at the end of the step it is in
    idle = _state.get("idle")
    if idle is not None and idle():
        os._exit(128 + signum)  # a pool worker between jobs: nothing to save, nothing to print
    raise Interrupted(signum)


@contextmanager
def handling_signals() -> Iterator[None]:
    """Handle SIGTERM and SIGINT as the module docstring says, for the duration; outside the main
    thread (where Python cannot install handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in _HANDLED}
    saved = dict(_state)
    _state.update(installed=True, deferring=False, signum=None, escalate=True, idle=None)
    _last["signum"] = None
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.update(saved)


def install_for_worker(idle: Callable[[], bool]) -> None:
    """For the rest of this process (a sweep's pool worker): SIGTERM and SIGINT stop the training
    loop at its step boundary with a checkpoint, however many arrive (a terminal's Ctrl-C reaches
    the worker and its driver, which then asks the worker to stop too: that must not escalate);
    while ``idle()`` (no job), the process exits at once, quietly, with 128 + the signal."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s in _HANDLED:
        signal.signal(s, _handler)
    _state.update(installed=True, deferring=False, signum=None, escalate=False, idle=idle)
    _last["signum"] = None


@contextmanager
def deferring(enabled: bool = True) -> Iterator[None]:
    """While the training loop runs: a first signal is recorded (:func:`requested`) instead of
    raised, when :func:`handling_signals` is active and ``enabled``."""
    before = _state["deferring"]
    _state["deferring"] = bool(enabled and _state["installed"])
    try:
        yield
    finally:
        _state["deferring"] = before


def received() -> int | None:
    """The last signal received under :func:`handling_signals` (also after it ended), or ``None``:
    an error raised where a signal interrupted library code (an import, a data loader) is an
    interruption, not a failure to report as unexpected."""
    return _last["signum"]


def requested() -> int | None:
    """The signal received while deferring, or ``None``."""
    return _state["signum"] if _state["deferring"] else None
