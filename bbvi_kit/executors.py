"""Where a sweep's runs execute: a local process pool, or Ray tasks on a cluster.

bbvi-kit schedules nothing itself. A sweep is a list of independent jobs
(:class:`bbvi_kit.sweep_runner.SweepJob`, plain data); an executor hands each to an existing engine and
yields the results as they finish, and the sweep driver (:func:`bbvi_kit.sweep_runner.run_plan`) writes
``sweep.json``, ``summary.csv`` and the figures exactly as for runs made one after another. Every
job writes its own run directory under the sweep directory, which all workers must see (one
machine, or a shared file system on a cluster).

- :class:`LocalExecutor` (``--executor local``): ``concurrent.futures.ProcessPoolExecutor``
  with spawned workers. Default size: one worker per GPU (each sees only its GPU), else as many
  as the CPUs allow with the CPUs shared out (``torch.set_num_threads``), so the machine is never
  oversubscribed. The workers never outlive their driver: when the driver is interrupted
  (SIGTERM, Ctrl-C) it asks every worker to stop (SIGTERM: each run ends its step and writes a
  checkpoint) and waits for them; when the driver dies (SIGKILL), each worker notices within
  half a second that its parent is gone, stops its run the same way and exits.
- :class:`RayExecutor` (``--executor ray``): one Ray task per run, asking for one GPU when the
  cluster has GPUs and the run may use one, else for one CPU; ``max_retries`` resubmits a task
  whose worker died (a preempted node), and the resubmitted run goes on from its last checkpoint.
  Needs the optional extra ``pip install 'bbvi-kit[ray]'``; connects to ``--ray-address`` or
  starts a local Ray instance.

A job whose run directory already exists resumes from its last checkpoint, so resubmitting a
whole sweep (``bbvi-kit run --resume SWEEP_DIR --executor ...``) finishes only what is left.
"""

from __future__ import annotations

import concurrent.futures as futures
import copy
import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator

import torch

from bbvi_kit import interrupts
from bbvi_kit.data.base import available_cpus
from bbvi_kit.errors import InputError
from bbvi_kit.sweep_runner import JobResult, SweepJob, execute_job, failed_job

EXECUTORS = ("local", "ray")
RAY_RETRIES = 3


def _threads_per_worker(workers: int) -> int:
    return max(1, available_cpus() // workers)


def _wants_gpu(job: SweepJob) -> bool:
    return str(job.recipe.get("training", {}).get("device", "auto")) != "cpu"


def _quiet(job: SweepJob) -> SweepJob:
    """The job without its progress bar: many runs at once would draw over each other (the
    driver prints a line as each run finishes)."""
    recipe = copy.deepcopy(job.recipe)
    recipe.setdefault("training", {})["progress"] = False
    return dataclasses.replace(job, recipe=recipe)


# -- local process pool ------------------------------------------------------------------------
ORPHAN_POLL_S = 0.5
"""How often a pool worker checks that its driver is alive."""
ORPHAN_GRACE_S = 600.0
"""How long an orphaned worker waits for its run to reach a step boundary and checkpoint."""
_busy = threading.Event()  # a job is running in this worker
_orphaned = threading.Event()  # this worker's driver is gone


def _watch_parent(parent: int) -> None:
    """A worker's watchdog: once the driver process ``parent`` is gone, stop the run in progress
    at its step boundary (SIGTERM to itself: rows and a checkpoint written), then exit."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL_S)
    _orphaned.set()
    if _busy.is_set():
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + ORPHAN_GRACE_S
        while _busy.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
    os._exit(1)


def _init_local_worker(gpus: Any, threads: int, parent: int) -> None:
    """In each pool worker, before any CUDA call: take one GPU of the queue (if any) and a fair
    share of the CPUs; stop at step boundaries on SIGTERM or SIGINT; watch the driver."""
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    torch.set_num_threads(threads)
    interrupts.install_for_worker(idle=lambda: not _busy.is_set())
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="bbvi-kit-parent-watch").start()


def _run_local(job: SweepJob) -> JobResult:
    if _orphaned.is_set():  # a job read from the queue after the driver died: leave it to --resume
        os._exit(1)
    _busy.set()
    try:
        return execute_job(job)
    finally:
        _busy.clear()


class LocalExecutor:
    """A process pool on this machine; see the module docstring."""

    def __init__(self, workers: int | None = None) -> None:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if workers is not None and workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        self.gpus = gpus
        self.workers = workers or gpus or max(1, available_cpus() // 2)
        if gpus and self.workers > gpus:
            raise InputError(f"--workers {self.workers}: this machine has {gpus} GPUs, one per worker")

    def run(self, jobs: list[SweepJob], on_start: Callable[[int], None]) -> Iterator[tuple[int, JobResult]]:
        if not jobs:
            return
        workers = min(self.workers, len(jobs))
        context = multiprocessing.get_context("spawn")
        queue = None
        if self.gpus:
            queue = context.Manager().Queue()
            for gpu in range(workers):
                queue.put(gpu)
        pool = futures.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_local_worker,
                                           initargs=(queue, _threads_per_worker(workers), os.getpid()))
        try:
            pending = {}
            for job in jobs:
                pending[pool.submit(_run_local, _quiet(job))] = job
                on_start(job.index)
            for future in futures.as_completed(pending):
                job = pending[future]
                try:
                    done = future.result()
                except futures.process.BrokenProcessPool as exc:  # a worker was killed (e.g. out of memory)
                    done = failed_job(job, f"the worker process running it died ({exc}); --resume finishes it")
                yield job.index, done
        except BaseException:
            # interrupted (SIGTERM, Ctrl-C) or failed: no new run starts; the running ones end their
            # step and write a checkpoint (SIGTERM to each worker), and the driver waits for that
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                if process.is_alive():
                    process.terminate()
            for process in processes:
                process.join(ORPHAN_GRACE_S)
            raise
        pool.shutdown(wait=True)


# -- Ray -----------------------------------------------------------------------------------------
def _import_ray() -> Any:
    try:
        import ray
        import ray.exceptions  # noqa: F401 - used as ray.exceptions below
    except ImportError:
        raise InputError("--executor ray needs Ray, which is not installed: pip install 'bbvi-kit[ray]'") from None
    return ray


def _run_ray(job: SweepJob, threads: int) -> JobResult:
    torch.set_num_threads(threads)
    return execute_job(job)


class RayExecutor:
    """One Ray task per run; see the module docstring. ``address`` is an existing cluster's
    (``ray://...`` or ``host:port``); without it, the Ray instance this process already started,
    else a new local one. ``workers`` caps the runs in flight (default: as many as the cluster's
    resources allow)."""

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self.ray = _import_ray()
        if workers is not None and workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        self.address, self.workers = address, workers

    def _connect(self) -> None:
        if self.ray.is_initialized():
            return
        try:
            self.ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        except Exception as exc:  # noqa: BLE001 - a wrong address, a cluster that is down ...
            where = self.address or "a local instance"
            raise InputError(f"--executor ray: cannot connect to {where}: {type(exc).__name__}: {exc}") from None

    def run(self, jobs: list[SweepJob], on_start: Callable[[int], None]) -> Iterator[tuple[int, JobResult]]:
        if not jobs:
            return
        self._connect()
        ray = self.ray
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        remote = ray.remote(_run_ray)
        waiting = list(jobs)
        in_flight: dict[Any, SweepJob] = {}
        cap = self.workers or len(jobs)
        try:
            while waiting or in_flight:
                while waiting and len(in_flight) < cap:
                    job = waiting.pop(0)
                    gpu = 1 if cluster_gpus and _wants_gpu(job) else 0
                    task = remote.options(num_cpus=1, num_gpus=gpu, max_retries=RAY_RETRIES)
                    in_flight[task.remote(_quiet(job), 1)] = job
                    on_start(job.index)
                (ready,), _ = ray.wait(list(in_flight), num_returns=1)
                job = in_flight.pop(ready)
                try:
                    done = ray.get(ready)
                except ray.exceptions.RayError as exc:  # its worker died RAY_RETRIES + 1 times, ...
                    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    done = failed_job(job, f"Ray: {message}; --resume finishes it")
                yield job.index, done
        except BaseException:
            for ref in in_flight:
                ray.cancel(ref, force=True)
            raise


def make_executor(name: str | None, workers: int | None = None, ray_address: str | None = None) -> Any:
    """The executor ``--executor NAME`` stands for; ``None``: runs one after another in this process."""
    if name is None:
        if workers is not None or ray_address is not None:
            raise InputError("--workers and --ray-address go with --executor local or ray")
        return None
    if name == "local":
        if ray_address is not None:
            raise InputError("--ray-address goes with --executor ray")
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(ray_address, workers)
    raise InputError(f"--executor {name!r}: unknown; choose one of {', '.join(EXECUTORS)}")
