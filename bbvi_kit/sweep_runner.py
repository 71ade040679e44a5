"""Run a plan: one run, or a sweep of runs (seeds x grid points, see :mod:`bbvi_kit.sweep`) into
one sweep directory::

    <root>/<name>/<YYYYmmdd-HHMMSS>-<id>/
        sweep.yaml      the recipe as given (overrides applied): re-runs the whole sweep
        sweep.json      axes, seeds, points, and the status of every run
        summary.csv     final values per point and seed, rewritten after every run
        plots/          paper-style figures over all runs (bbvi_kit.plots)
        p00-K=1-seed0/  one complete run directory per point and seed
        ...

A failing run is recorded (its own ``run.json`` says ``failed`` with the error) and the sweep goes
on with the next one. The runs go one after another, or to an executor
(:mod:`bbvi_kit.executors`); each is trained by :mod:`bbvi_kit.runner`.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from bbvi_kit import distributed
from bbvi_kit.data.base import DataSplits
from bbvi_kit.engine import History
from bbvi_kit.errors import InputError
from bbvi_kit.interrupts import Interrupted
from bbvi_kit.recipe import Recipe, resolve
from bbvi_kit.resume_guard import begun, read_status
from bbvi_kit.runs import (
    MAX_INFO_BYTES,
    DirectoryLock,
    RunDirectory,
    atomic_write_text,
    fresh_directory,
    read_regular_file,
)
from bbvi_kit.step_log import skipped_steps_warning
from bbvi_kit.sweep import Plan, PlannedRun, load_plan


from bbvi_kit.runner import (
    build_model,
    error_message,
    fail_run,
    history_from_files,
    load_data,
    make_trainer,
    now,
    output_root,
    resume_run,
    start_run,
    train_into,
)


SUMMARY_COLUMNS = ["seed", "status", "steps", "final_loss", "final_minibatch_grad_norm_sq_avg"]


def _csv_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else value


def _summary_row(planned: PlannedRun, folder: str, status: str, history: History | None, error: str) -> dict:
    row: dict[str, Any] = {axis: _csv_value(value) for axis, value in planned.point.items()}
    row.update(seed=planned.seed, status=status)
    if history is not None and history.metrics:
        last = history.metrics[-1]
        row.update(steps=int(last["step"]), final_loss=last["loss"],
                   final_minibatch_grad_norm_sq_avg=last["minibatch_grad_norm_sq_avg"])
    if history is not None and history.evals:
        for key, value in history.evals[-1].items():
            if key not in ("step", "epoch", "time"):
                row[f"final_{key}"] = value
    warning = skipped_steps_warning(history.metrics, planned.recipe.training.warn_skipped_fraction) \
        if history is not None and status == "completed" else None
    row.update(run_dir=folder, error=error, warning=warning or "")
    return row


def _write_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    # point columns first, then the fixed ones, then every final_* column, then where and why
    tail = ["run_dir", "error", "warning"]
    columns = [c for c in columns if c not in tail] + tail
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


@dataclass
class PlanResult:
    """What :func:`run_plan` did: the run or sweep directory, one summary row per run (as in
    ``summary.csv``), and the number of failed runs."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    failed: int = 0
    history: History | None = None  # the run's history when the plan was a single run
    resumed: int = 0  # runs resumed from a checkpoint (or restarted without one) by --resume
    skipped: int = 0  # runs found completed by --resume and kept as they were
    resumed_from: int | None = None  # a resumed single run: the checkpoint's step


def _sweep_info(plan: Plan, status: str, runs: list[dict[str, Any]], **extra: Any) -> str:
    info = {
        "name": plan.name,
        "source": plan.source,
        "status": status,
        "axes": plan.axes,
        "seeds": plan.seeds,
        "points": [{"index": r.point_index, "label": r.label, "point": r.point} for r in plan.points],
        "runs": runs,
        **extra,
    }
    return json.dumps(info, indent=2, default=str) + "\n"


def _load_datasets(plan: Plan) -> Callable[[PlannedRun], DataSplits]:
    """Load every dataset the plan needs, once per distinct ``data`` section; returns the lookup."""
    for planned in plan.runs:
        load_data(planned.recipe)
    return lambda planned: load_data(planned.recipe)


def _where(plan: Plan, planned: PlannedRun) -> str:
    return f"{plan.source} [sweep point {planned.label}]" if planned.label else plan.source


def run_plan(
    plan: Plan,
    out_root: str | Path | None = None,
    *,
    executor: Any = None,
    on_start: Callable[[Path], None] | None = None,
    on_run_done: Callable[[PlannedRun, dict[str, Any]], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> PlanResult:
    """Run every run of ``plan``: one run directory, or a sweep directory (module docstring).

    A sweep's runs go one after another in this process, or to ``executor``
    (:mod:`bbvi_kit.executors`: a local process pool or Ray tasks), which writes the same run
    directories.

    Every dataset the plan needs is loaded first (once per distinct ``data`` section), so a
    missing dataset stops before anything is written. ``on_start(sweep_dir)`` is called once the
    sweep directory exists and ``on_run_done(run, summary_row)`` after each of its runs, e.g. to
    report progress; ``warn`` receives the figures' warnings (default: Python warnings).
    """
    root = output_root(plan.runs[0].recipe, out_root)
    data_of = _load_datasets(plan)
    # Every point's model is built once before anything is written: a point that cannot take its
    # data is bad input, not a failed run.
    if plan.is_sweep:
        for planned in plan.points:
            build_model(planned.recipe, data_of(planned), _where(plan, planned))

    if not plan.is_sweep:
        (planned,) = plan.runs
        model = build_model(planned.recipe, data_of(planned))
        parallel = distributed.current()
        if parallel is not None and not parallel.writes:  # a data-parallel replica: rank 0 writes the run
            trainer = make_trainer(planned.recipe, model, None)
            history = trainer.fit(data_of(planned).train, data_of(planned).test)
            return PlanResult(path=root, history=history)
        run = RunDirectory.create(root, planned.recipe.name)
        extra = {"data_parallel": {"world_size": parallel.world}} if parallel is not None else {}
        history = train_into(planned.recipe, run, data_of(planned), model, point={}, point_label="", **extra)
        return PlanResult(path=run.path, rows=[_summary_row(planned, run.path.name, "completed", history, "")],
                          history=history)

    parent = fresh_directory(root / plan.name)
    lock = DirectoryLock(parent).acquire()
    try:
        (parent / "plots").mkdir()
        sweep_data = dict(plan.data)
        sweep_data["plugins"] = plan.runs[0].recipe.plugins  # resolved paths: re-runnable from anywhere
        sweep_data["name"] = plan.name  # not the stem of sweep.yaml
        atomic_write_text(parent / "sweep.yaml", yaml.safe_dump(sweep_data, sort_keys=False))
        return _run_sweep(plan, parent, data_of, started=now(), executor=executor, on_start=on_start,
                          on_run_done=on_run_done, warn=warn)
    finally:
        lock.release()


@dataclass(frozen=True)
class SweepJob:
    """One run of a sweep as plain data that pickles: what a worker process or a Ray task needs
    to train it into ``parent/folder`` (its recipe is the run's fully resolved recipe)."""

    index: int
    recipe: dict[str, Any]
    source: str
    parent: str
    folder: str
    point_index: int
    point: dict[str, Any]
    label: str
    seed: int


@dataclass(frozen=True)
class JobResult:
    """A finished job: its ``summary.csv`` row, and whether it went on from an earlier attempt."""

    row: dict[str, Any]
    resumed: bool = False


def sweep_jobs(plan: Plan, parent: Path, indices: list[int]) -> list[SweepJob]:
    return [SweepJob(i, plan.runs[i].recipe.as_dict(), _where(plan, plan.runs[i]), str(parent),
                     plan.runs[i].folder, plan.runs[i].point_index, plan.runs[i].point, plan.runs[i].label,
                     plan.runs[i].seed) for i in indices]


def execute_job(job: SweepJob, recipe: Recipe | None = None, data: DataSplits | None = None) -> JobResult:
    """Train one run of a sweep into ``parent/folder`` and return its summary row. A run whose
    directory exists already goes on from its last checkpoint (a resubmitted, preempted or
    interrupted run; a completed one is kept as it is). A failure is recorded in the row and the
    run's ``run.json``, never raised (Ctrl-C is). ``recipe`` and ``data`` save a worker the work
    of resolving and loading them again when the caller has them."""
    if recipe is None:
        recipe = resolve(job.recipe, source=job.source)
    planned = PlannedRun(job.point_index, job.point, job.label, job.seed, recipe)
    folder = Path(job.parent) / job.folder
    history, status, error, resumed = None, "completed", "", False
    try:
        if data is None:
            data = load_data(recipe)
        if folder.is_dir():  # another process may be finishing this run: its result is what counts
            DirectoryLock(folder).wait_until_free(on_wait=lambda message: warnings.warn(message, stacklevel=2))
        if folder.exists() and read_status(folder) == "completed":
            history = history_from_files(folder)
        elif folder.exists() and begun(folder):
            history, _ = resume_run(folder, data)
            resumed = True
        else:  # not made yet, or made by a process killed before its run began: start it
            run = RunDirectory.reopen(folder) if folder.exists() else RunDirectory.create_named(Path(job.parent),
                                                                                                job.folder)
            info = {"point": job.point, "point_label": job.label, "sweep": job.parent}
            try:
                model = build_model(recipe, data, job.source)
            except BaseException as exc:
                start_run(run, recipe, info)
                fail_run(run, exc, 0)
                raise
            history = train_into(recipe, run, data, model, **info)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failing point must not lose the others
        status, error = "failed", error_message(exc)
    return JobResult(_summary_row(planned, job.folder, status, history, error), resumed)


def failed_job(job: SweepJob, error: str) -> JobResult:
    """The result of a job that ended outside :func:`execute_job` (its worker died)."""
    planned = PlannedRun(job.point_index, job.point, job.label, job.seed, None)  # type: ignore[arg-type]
    return JobResult(_summary_row(planned, job.folder, "failed", None, error))


class InlineExecutor:
    """Runs a sweep's jobs one after another in this process, with the datasets already loaded
    and the recipes already resolved: what ``bbvi-kit run`` does without ``--executor``."""

    def __init__(self, plan: Plan, data_of: Callable[[PlannedRun], DataSplits]) -> None:
        self.plan, self.data_of = plan, data_of

    def run(self, jobs: list[SweepJob], on_start: Callable[[int], None]) -> Iterator[tuple[int, JobResult]]:
        for job in jobs:
            on_start(job.index)
            planned = self.plan.runs[job.index]
            yield job.index, execute_job(job, planned.recipe, self.data_of(planned))


def _run_sweep(
    plan: Plan,
    parent: Path,
    data_of: Callable[[PlannedRun], DataSplits],
    *,
    started: str,
    resuming: bool = False,
    executor: Any = None,
    on_start: Callable[[Path], None] | None = None,
    on_run_done: Callable[[PlannedRun, dict[str, Any]], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> PlanResult:
    """Run the sweep's runs into ``parent`` with ``executor`` (default: :class:`InlineExecutor`).
    When ``resuming``, a completed run is kept as it is, an unfinished one resumes from its
    checkpoint, and one not begun yet starts. ``summary.csv`` keeps the plan's order whatever
    order the runs finish in."""
    result = PlanResult(path=parent)
    runs_info = [{"dir": r.folder, "point_index": r.point_index, "seed": r.seed, "status": "pending"}
                 for r in plan.runs]
    rows: dict[int, dict[str, Any]] = {}

    def write_status(status: str, **extra: Any) -> None:
        atomic_write_text(parent / "sweep.json", _sweep_info(plan, status, runs_info, started=started, **extra))

    def finish(index: int, row: dict[str, Any]) -> None:
        runs_info[index]["status"] = row["status"]
        rows[index] = row
        result.rows = [rows[i] for i in sorted(rows)]
        _write_summary(parent / "summary.csv", result.rows)
        if on_run_done is not None:
            on_run_done(plan.runs[index], row)

    def started_job(index: int) -> None:
        runs_info[index]["status"] = "running"
        write_status("running")

    write_status("running")
    if on_start is not None:
        on_start(parent)
    todo = []
    for i, planned in enumerate(plan.runs):
        folder = parent / planned.folder
        if resuming and folder.exists() and read_status(folder) == "completed":
            result.skipped += 1
            finish(i, _summary_row(planned, planned.folder, "completed", history_from_files(folder), ""))
        else:
            todo.append(i)
    executor = executor if executor is not None else InlineExecutor(plan, data_of)
    try:
        for index, done in executor.run(sweep_jobs(plan, parent, todo), started_job):
            result.resumed += done.resumed
            result.failed += done.row["status"] == "failed"
            finish(index, done.row)
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):
            exc.resume_dir = str(parent)  # the sweep, not the run it was in
        for i, info in enumerate(runs_info):
            if info["status"] == "running" and i not in rows:
                info["status"] = "interrupted"
                rows[i] = _summary_row(plan.runs[i], plan.runs[i].folder, "interrupted", None, "interrupted")
        result.rows = [rows[i] for i in sorted(rows)]
        _write_summary(parent / "summary.csv", result.rows)
        write_status("interrupted")
        raise
    final_status = ("completed" if result.failed == 0 else
                    "failed" if result.failed == len(plan.runs) else "completed_with_failures")
    write_status(final_status, finished=now())
    if result.failed < len(plan.runs):
        from bbvi_kit.plots import draw_figures

        draw_figures([parent], parent / "plots", warn=warn)
    return result


def resume(
    path: Path,
    *,
    from_scratch: bool = False,
    executor: Any = None,
    on_start: Callable[[Path], None] | None = None,
    on_run_done: Callable[[PlannedRun, dict[str, Any]], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> PlanResult:
    """Resume the run or sweep directory ``path`` (``bbvi-kit run --resume DIR``).

    A run directory goes on from its last checkpoint (:func:`resume_run`). A sweep directory
    re-reads its ``sweep.yaml``, keeps every completed run, resumes every unfinished one and
    starts those never begun; ``summary.csv``, ``sweep.json`` and the figures are then written
    as a fresh sweep would write them. ``from_scratch`` is for a run directory only (see
    :func:`resume_run`).
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"--resume {path}: no such directory")
    if (path / "sweep.json").is_file():
        if from_scratch:
            raise InputError(f"--resume {path} --from-scratch: a sweep's runs resume from their checkpoints; start "
                             "one of its runs again with --resume SWEEP/RUN --from-scratch")
        lock = DirectoryLock(path).acquire()
        try:
            plan = load_plan(path / "sweep.yaml")
            try:
                recorded = json.loads(read_regular_file(path / "sweep.json", MAX_INFO_BYTES).decode("utf-8"))
                folders = [r["dir"] for r in recorded["runs"]]
                started = recorded.get("started") or now()
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise InputError(f"{path / 'sweep.json'}: unreadable ({type(exc).__name__}: {exc})") from None
            if folders != [r.folder for r in plan.runs]:
                raise InputError(f"{path}: sweep.yaml no longer describes the runs sweep.json lists; "
                                 "was it edited? Start a new sweep instead")
            data_of = _load_datasets(plan)
            return _run_sweep(plan, path, data_of, started=started, resuming=True, executor=executor,
                              on_start=on_start, on_run_done=on_run_done, warn=warn)
        finally:
            lock.release()
    if not (path / "run.json").is_file():
        if (path / "sweep.yaml").is_file():
            raise InputError(f"--resume {path}: the sweep was stopped before it began (no sweep.json): nothing to "
                             f"resume; start it again with: bbvi-kit run {path / 'sweep.yaml'}")
        if (path / "recipe.yaml").is_file() and not begun(path):
            raise InputError(f"--resume {path}: the run was stopped before it began (no run.json): nothing to "
                             f"resume; start it again with: bbvi-kit run {path / 'recipe.yaml'}")
        raise InputError(f"--resume {path}: neither a run directory (run.json) nor a sweep directory (sweep.json)")
    history, from_step = resume_run(path, from_scratch=from_scratch)
    return PlanResult(path=path, history=history, resumed=1, resumed_from=from_step)
