"""A plugin file for fault-injection tests: named in a recipe's ``plugins:``, it patches the
step (:mod:`bbvi_kit.infer.bbvi`) and the run directory in the process that runs the recipe, driven by environment variables, so that a real
``bbvi-kit run`` subprocess dies exactly where a test wants it to. Without the variables it does
nothing, so the same recipe resumes (and runs as the reference) untouched.

- ``BBVI_TEST_KILL_AT_STEP=N``: SIGKILL itself at the start of step N's gradient norm (counted
  per process); with ``BBVI_TEST_KILL_ONCE_MARKER=path`` only the first process to get there,
  which creates that file.
- ``BBVI_TEST_KILL_IN_CHECKPOINT=N``: during the N-th checkpoint write, SIGKILL itself after half
  of the file's bytes are on disk.
- ``BBVI_TEST_KILL_AFTER_RENAME=N``: SIGKILL itself after the N-th checkpoint file is renamed into
  place but before ``index.json`` names it.
- ``BBVI_TEST_SIGNAL_AT_STEP=N`` with ``BBVI_TEST_SIGNAL=TERM`` (or ``INT``): send that signal to
  itself at the start of step N's gradient norm, i.e. in the middle of step N (counted per
  process); ``BBVI_TEST_SIGNAL_TWICE=1`` sends it a second time right after the first.
- ``BBVI_TEST_PID_DIR=folder``: create a file named after the process id there when imported
  (in every process that loads the recipe: a sweep's driver and its pool workers).
- ``BBVI_TEST_SIGNAL_ON_LOAD=TERM`` (or ``INT``): send it to itself while this plugin is imported,
  during start-up.
- ``BBVI_TEST_STEP_DELAY=seconds``: sleep in every step (so a test can kill it from outside at a
  random moment).
- ``BBVI_TEST_METRICS_FULL_AT=bytes``: ``metrics.csv`` behaves as on a disk that is full once the
  file holds that many bytes: the write that crosses it stores what fits and fails with ENOSPC.
"""

FAULT_PLUGIN = '''\
import builtins
import errno
import io
import os
import signal
import time

import bbvi_kit.checkpoint as checkpoint
import bbvi_kit.infer.bbvi as step
import bbvi_kit.runs as runs


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


if os.environ.get("BBVI_TEST_PID_DIR"):  # which processes train (a sweep's pool workers)
    with open(os.path.join(os.environ["BBVI_TEST_PID_DIR"], str(os.getpid())), "w"):
        pass

if os.environ.get("BBVI_TEST_SIGNAL_ON_LOAD"):  # a signal during start-up (the recipe's plugins load)
    os.kill(os.getpid(), getattr(signal, "SIG" + os.environ["BBVI_TEST_SIGNAL_ON_LOAD"]))

_kill_at = int(os.environ.get("BBVI_TEST_KILL_AT_STEP", "0"))
_signal_at = int(os.environ.get("BBVI_TEST_SIGNAL_AT_STEP", "0"))
_signal = getattr(signal, "SIG" + os.environ.get("BBVI_TEST_SIGNAL", "TERM"))
_signal_twice = os.environ.get("BBVI_TEST_SIGNAL_TWICE") == "1"
_kill_once = os.environ.get("BBVI_TEST_KILL_ONCE_MARKER")
_delay = float(os.environ.get("BBVI_TEST_STEP_DELAY", "0"))
if _kill_at or _delay or _signal_at:
    _norms = step.squared_grad_norms
    _calls = [0]

    def squared_grad_norms(groups):
        _calls[0] += 1
        if _calls[0] == _kill_at:
            if _kill_once is None:
                _die()
            try:  # only the first process to get here dies (a worker that is preempted once)
                os.close(os.open(_kill_once, os.O_CREAT | os.O_EXCL))
                _die()
            except FileExistsError:
                pass
        if _calls[0] == _signal_at:
            os.kill(os.getpid(), _signal)
            if _signal_twice:
                os.kill(os.getpid(), _signal)
        if _delay:
            time.sleep(_delay)
        return _norms(groups)

    step.squared_grad_norms = squared_grad_norms

_kill_in_write = int(os.environ.get("BBVI_TEST_KILL_IN_CHECKPOINT", "0"))
if _kill_in_write:
    _save = checkpoint.torch.save
    _saves = [0]

    def save(obj, f, *args, **kwargs):
        _saves[0] += 1
        if _saves[0] != _kill_in_write:
            return _save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        _save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        _die()

    checkpoint.torch.save = save

_kill_after_rename = int(os.environ.get("BBVI_TEST_KILL_AFTER_RENAME", "0"))
if _kill_after_rename:
    _replace = checkpoint.os.replace
    _renames = [0]

    def replace(src, dst):
        _replace(src, dst)
        if str(dst).endswith(".pt"):
            _renames[0] += 1
            if _renames[0] == _kill_after_rename:
                _die()

    checkpoint.os.replace = replace

_full_at = int(os.environ.get("BBVI_TEST_METRICS_FULL_AT", "0"))
if _full_at:

    class _FullDisk:
        def __init__(self, fh):
            self._fh = fh

        def write(self, text):
            room = _full_at - self._fh.tell()
            if len(text) > room:
                self._fh.write(text[: max(room, 0)])
                self._fh.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self._fh.write(text)

        def __getattr__(self, name):
            return getattr(self._fh, name)

    def _open(path, mode="r", *args, **kwargs):
        fh = builtins.open(path, mode, *args, **kwargs)
        return _FullDisk(fh) if str(path).endswith("metrics.csv") and mode in ("x", "a") else fh

    runs.open = _open
'''

# A dataset plugin with NaN pixels where a test wants them: the digits, with a NaN in the first
# pixel of the listed training and test examples (indices in each split's order).
NAN_DATA_PLUGIN = '''\
from pydantic import Field
from torch.utils.data import TensorDataset
from bbvi_kit import register_dataset
from bbvi_kit.data.base import DataSplits
from bbvi_kit.data.digits import Digits


@register_dataset("nan_digits")
class NaNDigits(Digits):
    class Options(Digits.Options):
        train_nan: list[int] = Field(default_factory=list, description="training examples given a NaN")
        test_nan: list[int] = Field(default_factory=list, description="test examples given a NaN")

    def load(self) -> DataSplits:
        splits = super().load()

        def poisoned(dataset, examples):
            images = dataset.tensors[0].clone()
            images[examples, 0, 0, 0] = float("nan")
            return TensorDataset(images, *dataset.tensors[1:])

        return DataSplits(train=poisoned(splits.train, self.options.train_nan),
                          test=poisoned(splits.test, self.options.test_nan), info=splits.info)
'''
