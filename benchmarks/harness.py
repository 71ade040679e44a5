"""Measuring: interleaved per-step timings, peak memory in a fresh process, and the machine.

Timings are taken side by side in one process: every round runs each contender for a few steps
in turn, so a slow spell of the machine (another process, frequency scaling) falls on all of
them alike. The first steps of every round are warm-up and are dropped; what is reported is the
median and the interquartile range of the remaining per-step times.

Peak memory is measured in a fresh child process per contender, so that no other contender's
allocations (kept by the allocator for reuse) are counted: the child sets everything up, then
reports how far its resident memory rose above that while it trained (:class:`PeakRss`). On CUDA
the peak of allocated device memory (``torch.cuda.max_memory_allocated``) is reported as well.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch

from bbvi_kit.data.base import available_cpus

REPO = Path(__file__).resolve().parents[1]


class Contender(Protocol):
    """One way of running a training step."""

    name: str

    def run(self, steps: int, warmup: int) -> list[float]:
        """Run ``steps`` training steps; the wall time of each after the first ``warmup``, in
        seconds."""


@dataclass
class Timing:
    """Per-step wall times of one contender (seconds), warm-up steps removed."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def iqr(self) -> tuple[float, float]:
        q = statistics.quantiles(self.times, n=4)
        return q[0], q[2]


def synchronize() -> None:
    """Wait for the accelerator, so a step's time includes its device work."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved(contenders: Sequence[Contender], *, rounds: int, steps: int, warmup: int) -> dict[str, Timing]:
    """Per-step times of each contender: ``rounds`` rounds of ``steps`` steps each, in turn,
    the first ``warmup`` steps of every round dropped."""
    timings = {c.name: Timing() for c in contenders}
    for _ in range(rounds):
        for contender in contenders:
            timings[contender.name].times.extend(contender.run(steps, warmup))
    return timings


def median_call_time(fn: Callable[[], object], *, repeats: int = 200, warmup: int = 20) -> float:
    """Median wall time of ``fn()`` (seconds), device work included."""
    times = []
    for i in range(repeats + warmup):
        synchronize()
        start = _now()
        fn()
        synchronize()
        if i >= warmup:
            times.append(_now() - start)
    return statistics.median(times)


def _now() -> float:
    import time

    return time.perf_counter()


def current_rss_mib() -> float:
    """This process's resident memory now, MiB (Linux's /proc/self/statm)."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """The highest resident memory seen while the ``with`` body runs, above what it was at the
    start (MiB): a thread samples /proc/self/statm every half millisecond (torch releases the
    GIL in its kernels, so the samples keep coming during a step)."""

    def __enter__(self) -> "PeakRss":
        self.start = self.peak = current_rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.0005):
            self.peak = max(self.peak, current_rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_mib())

    @property
    def rise_mib(self) -> float:
        return self.peak - self.start


def peak_memory(fn: Callable[[], object]) -> dict[str, float]:
    """How far ``fn()`` raises resident memory (``rss_mib``) and, on CUDA, the peak of device
    memory allocated while it runs (``cuda_mib``)."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with PeakRss() as rss:
        fn()
        synchronize()
    out = {"rss_mib": rss.rise_mib}
    if cuda:
        out["cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def measure_in_child(module: str, *args: str) -> dict[str, float]:
    """Run ``python -m <module> <args>`` from the repository root and parse the JSON object it
    prints last (the child's memory report)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    # A fixed mmap threshold makes glibc hand every large freed block straight back to the
    # system, so resident memory follows what is alive instead of what was ever allocated.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import pyro

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = available_cpus()
    info = {
        "cpu": f"{cpu}, {cores} cores available, {torch.get_num_threads()} torch threads",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "device": "cpu",
    }
    if torch.cuda.is_available():
        info["device"] = f"cuda: {torch.cuda.get_device_name(0)}"
    return info
