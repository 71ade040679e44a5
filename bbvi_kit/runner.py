"""Run resolved recipes: build their plugins, train, write run directories, draw the plots.

:func:`run_recipe` trains one run. :func:`run_plan` runs everything a recipe stands for: one run,
or a sweep (seeds x grid points, see :mod:`bbvi_kit.sweep`) into one sweep directory::

    <root>/<name>/<YYYYmmdd-HHMMSS>-<id>/
        sweep.yaml      the recipe as given (overrides applied): re-runs the whole sweep
        sweep.json      axes, seeds, points, and the status of every run
        summary.csv     final values per point and seed, rewritten after every run
        plots/          paper-style figures over all runs (bbvi_kit.plots)
        p00-K=1-seed0/  one complete run directory per point and seed
        ...

A failing run is recorded (its own ``run.json`` says ``failed`` with the error) and the sweep goes
on with the next one.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pyro
import yaml

from bbvi_kit import distributed
from bbvi_kit.data.base import DataSplits
from bbvi_kit.engine import History, Trainer, count_parameters
from bbvi_kit.checkpoint import Checkpoints
from bbvi_kit.errors import BBVIError, InputError, OutputError
from bbvi_kit.interrupts import Interrupted, signal_name
from bbvi_kit.model import BBVIModel
from bbvi_kit.plotting import plot_run
from bbvi_kit.recipe import Recipe, load_recipe, resolve
from bbvi_kit.resume_guard import begun, check_identity, check_nothing_lost, read_status
from bbvi_kit.runs import (
    MAX_INFO_BYTES,
    DirectoryLock,
    RunDirectory,
    atomic_write_text,
    environment,
    fresh_directory,
    read_csv,
    read_regular_file,
)
from bbvi_kit.step_log import skipped_steps_warning
from bbvi_kit.sweep import Plan, PlannedRun, load_plan


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _error_message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, (BBVIError, Interrupted)) else f"{type(exc).__name__}: {exc}"


def build_model(recipe: Recipe, data: DataSplits, where: str | None = None) -> BBVIModel:
    """The recipe's model plugin, built for ``data``, with the global RNGs seeded first so that
    its initial parameters depend on the seed only. A model that cannot take this data (an
    :class:`InputError`) is reported with ``where`` (default: the recipe's file) in front."""
    pyro.clear_param_store()
    pyro.set_rng_seed(recipe.training.seed)
    try:
        return recipe.model.build(data.info)
    except InputError as exc:
        raise InputError(f"{where or recipe.source}: {exc}") from None


def _start(run: RunDirectory, recipe: Recipe, info: dict[str, Any]) -> None:
    digest = run.write_recipe(recipe.as_dict())
    run.update_info(status="running", recipe_source=recipe.source, seed=recipe.training.seed,
                    run_uid=uuid.uuid4().hex, recipe_sha256=digest, **info)


def _fail(run: RunDirectory, exc: BaseException, steps: int) -> None:
    """Mark the run failed (``interrupted`` for Ctrl-C) and release it. Writing ``run.json`` may
    itself fail (a full disk): the original error is what the user must see, so that failure is
    swallowed and ``run.json`` keeps saying ``running``, never ``completed``."""
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    extra = {"signal": signal_name(exc.signum)} if isinstance(exc, Interrupted) else {}
    if isinstance(exc, Interrupted):
        exc.resume_dir = str(run.path)
    try:
        run.close()
        run.update_info(status=status, error=_error_message(exc), steps_done=steps, finished=_now(), **extra)
    except OSError:
        pass
    finally:
        run.release()


def _make_trainer(recipe: Recipe, model: BBVIModel, reference: dict[str, float] | None) -> Trainer:
    return Trainer(
        model.model,
        model.guide,
        objective=recipe.objective.build(),
        estimator=recipe.estimator.build(),
        optimizer=recipe.optimizer.build(),
        schedule=recipe.schedule.build(),
        training=recipe.training,
        parameter_groups=model.parameter_groups,
        modules=[model],
        examples=model.examples,
        reference=reference,
        diagnostics=recipe.diagnostic_plugins(),
    )


def _fit_into(run: RunDirectory, trainer: Trainer, model: BBVIModel, data: DataSplits, *,
              reference: dict[str, float] | None, resume: dict[str, Any] | None = None,
              history: History | None = None, info: dict[str, Any]) -> History:
    """Train into ``run`` (from ``resume`` if given) and write the final status."""
    try:
        run.update_info(
            device=str(trainer.device),
            num_parameters=count_parameters(list(model.parameters())),
            num_train=data.info.num_train,
            num_test=data.info.num_test,
            data_files=data.info.files,
            reference=reference or None,
            environment=environment(),
            **info,
        )
        history = trainer.fit(data.train, data.test, run=run, resume=resume, history=history)
    except BaseException as exc:
        _fail(run, exc, trainer.step)
        raise
    try:
        run.close()
        plot_run(run.path)
        run.remove_stray_temporaries()
        final = history.metrics[-1] if history.metrics else {}
        last_eval = history.evals[-1] if history.evals else {}
        history.warning = skipped_steps_warning(history.metrics, trainer.training.warn_skipped_fraction)
        run.update_info(
            status="completed",
            warning=history.warning,
            steps_done=trainer.step,
            finished=_now(),
            final_loss=final.get("loss"),
            final_minibatch_grad_norm_sq_avg=final.get("minibatch_grad_norm_sq_avg"),
            final_test_loss=last_eval.get("test_loss"),
            final_eval={k: v for k, v in last_eval.items() if k not in ("step", "epoch", "time")} or None,
        )
    except OSError as exc:
        error = OutputError(f"{run.path}: cannot finish the run: {exc.strerror or exc}")
        _fail(run, error, trainer.step)
        raise error from exc
    run.release()
    return history


def train_into(recipe: Recipe, run: RunDirectory, data: DataSplits, model: BBVIModel, **info: Any) -> History:
    """Train ``model`` (built by :func:`build_model`) on ``data`` into the fresh run directory ``run``.

    The resolved recipe is written before training starts, metrics as they are recorded, and
    ``run.json`` with the final status; an error marks the run ``failed`` (``interrupted`` for
    Ctrl-C), keeps everything written, and is raised again. ``info`` goes into ``run.json``.
    """
    try:
        _start(run, recipe, info)
    except BaseException:
        run.release()
        raise
    try:
        reference = model.reference_losses(data)
        trainer = _make_trainer(recipe, model, reference)
    except BaseException as exc:
        _fail(run, exc, 0)
        raise
    return _fit_into(run, trainer, model, data, reference=reference, info={"started": _now()})


def _history_from_files(path: Path) -> History:
    """What a finished run recorded, read back from its CSV files."""
    history = History(run_dir=str(path))
    if (path / "metrics.csv").is_file():
        history.metrics = read_csv(path / "metrics.csv")
    if (path / "eval.csv").is_file():
        history.evals = read_csv(path / "eval.csv")
    return history


def resume_run(path: Path, data: DataSplits | None = None, *, from_scratch: bool = False
               ) -> tuple[History, int | None]:
    """Go on with the interrupted run in ``path`` from its last checkpoint, exactly as the
    uninterrupted run would have gone on; returns its history and the step it resumed from
    (``None``: no checkpoint had been written, so it started again from the beginning).

    The run's own ``recipe.yaml`` is used. The checkpoint is verified and loaded into the model
    before anything in ``path`` changes, so a refused checkpoint (an :class:`InputError`) leaves
    the directory as it was. Then the CSV files are cut back to what the checkpoint recorded (rows
    written after it are computed again) and files of a killed checkpoint write are removed. A
    completed run is an :class:`InputError`.

    ``from_scratch`` (``--resume DIR --from-scratch``) starts the run again from step 0 with its
    own recipe, whatever its checkpoints: its CSV files, diagnostics and checkpoints are first moved
    into ``DIR/set-aside-<time>/`` (recorded in ``run.json``'s ``resumed`` list), never deleted.
    It is the only way a resume drops rows that it cannot recompute from a checkpoint.
    """
    run = RunDirectory.reopen(path)
    try:
        if run.info.get("status") == "completed":
            raise InputError(f"{path}: the run is already completed; nothing to resume")
        checkpoints = Checkpoints(path)
        record = checkpoints.latest() if not from_scratch else None
        state = checkpoints.load(record) if record is not None else None
        adopted = checkpoints.find_unindexed() if record is None and not from_scratch else None  # the index was lost
        if adopted is not None:
            record, state = adopted
        check_identity(run, state, checkpoints.path / record.file if record is not None else None)
        recipe = load_recipe(path / "recipe.yaml")  # only now: its plugins are imported
        checkpoints.keep = recipe.training.keep_checkpoints
        if data is None:
            data = recipe.data.build().load()
        model = build_model(recipe, data, where=str(path / "recipe.yaml"))
        if record is None and not from_scratch:
            check_nothing_lost(run, recipe, data)
        reference = model.reference_losses(data)
        trainer = _make_trainer(recipe, model, reference)
        if state is not None:
            trainer.restore(state, data.train)
        if adopted:
            checkpoints.adopt(record)
        discarded = run.set_aside_results() if from_scratch else None
        checkpoints.remove_debris()
        run.remove_stray_temporaries()
        kept = run.restore_logs(state["logs"] if state is not None else {})
    except BaseException:
        run.release()
        raise
    history = History(
        metrics=kept.get("metrics.csv", []),
        evals=kept.get("eval.csv", []),
        diagnostics={rel[len("diagnostics/"):-len(".csv")]: rows for rel, rows in kept.items()
                     if rel.startswith("diagnostics/")},
    )
    from_step = record.step if record is not None else None
    entry = {"at": _now(), "from_step": from_step or 0, **({"set_aside": str(discarded)} if discarded else {})}
    resumed = [*(run.info.get("resumed") or []), entry]
    info = {"status": "running", "error": None, "resumed": resumed}
    history = _fit_into(run, trainer, model, data, reference=reference, resume=state, history=history, info=info)
    return history, from_step


def output_root(recipe: Recipe, out_root: str | Path | None) -> Path:
    """Where runs go: ``out_root`` (``--out``, anywhere the user names) or else the recipe's
    ``output.root``, a relative path below the working folder (checked when the recipe is read)
    that must also stay there once symbolic links are followed: a ``runs`` link to another disk
    is refused in one line (name that place with ``--out``)."""
    if out_root is not None:
        return Path(out_root)
    root = Path(recipe.output.root)
    here = Path.cwd().resolve()
    target = root.resolve()
    if target != here and here not in target.parents:
        raise InputError(f"{recipe.source}: output.root: {root} leads to {target} through a symbolic link, outside "
                         f"the working folder; to write there, say so with --out {target}")
    return root


def run_recipe(recipe: Recipe, out_root: str | Path | None = None) -> History:
    """Train the run a recipe describes into a fresh directory under ``out_root`` (default: the
    recipe's ``output.root``); see :func:`train_into`. Data and model are built before the
    directory is made, so a missing dataset or a model that cannot be built leaves nothing behind."""
    data = recipe.data.build().load()
    model = build_model(recipe, data)
    run = RunDirectory.create(output_root(recipe, out_root), recipe.name)
    return train_into(recipe, run, data, model, point={}, point_label="")


# -- sweeps -------------------------------------------------------------------------------------
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


_DATASETS: dict[str, DataSplits] = {}
"""Datasets loaded in this process, by their ``data`` section: a sweep loads each once, and so
does a worker process that runs many of its runs."""


def load_data(recipe: Recipe) -> DataSplits:
    """The recipe's dataset, loaded once per process and ``data`` section."""
    key = yaml.safe_dump(recipe.data.as_dict(), sort_keys=True)
    if key not in _DATASETS:
        _DATASETS[key] = recipe.data.build().load()
    return _DATASETS[key]


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
            trainer = _make_trainer(planned.recipe, model, None)
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
        return _run_sweep(plan, parent, data_of, started=_now(), executor=executor, on_start=on_start,
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
            history = _history_from_files(folder)
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
                _start(run, recipe, info)
                _fail(run, exc, 0)
                raise
            history = train_into(recipe, run, data, model, **info)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failing point must not lose the others
        status, error = "failed", _error_message(exc)
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
            finish(i, _summary_row(planned, planned.folder, "completed", _history_from_files(folder), ""))
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
    write_status(final_status, finished=_now())
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
                started = recorded.get("started") or _now()
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
