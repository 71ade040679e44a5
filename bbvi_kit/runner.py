"""Run resolved recipes: build their plugins, train, write run directories, draw the plots.

:func:`run_recipe` trains one run. :func:`run_plan` runs everything a recipe stands for: one run,
or a sweep (seeds x grid points, see :mod:`bbvi_kit.sweep`) into one sweep directory::

    <root>/<name>/<YYYYmmdd-HHMMSS>-<id>/
        sweep.yaml      the recipe as given (overrides applied): re-runs the whole sweep
        sweep.json      axes, seeds, points, and the status of every run
        summary.csv     final values per point and seed, rewritten after every run
        plots/          paper-style figures over all runs (bbvi_kit.figures)
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyro
import yaml

from bbvi_kit.data.base import DataSplits
from bbvi_kit.engine import History, Trainer, count_parameters
from bbvi_kit.errors import BBVIError, InputError
from bbvi_kit.model import BBVIModel
from bbvi_kit.plotting import plot_run
from bbvi_kit.recipe import Recipe
from bbvi_kit.runs import RunDirectory, atomic_write_text, environment, fresh_directory
from bbvi_kit.sweep import Plan, PlannedRun


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _error_message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BBVIError) else f"{type(exc).__name__}: {exc}"


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
    run.write_recipe(recipe.as_dict())
    run.update_info(status="running", recipe_source=recipe.source, seed=recipe.training.seed, **info)


def _fail(run: RunDirectory, exc: BaseException, steps: int) -> None:
    run.close()
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    run.update_info(status=status, error=_error_message(exc), steps_done=steps, finished=_now())


def train_into(recipe: Recipe, run: RunDirectory, data: DataSplits, model: BBVIModel, **info: Any) -> History:
    """Train ``model`` (built by :func:`build_model`) on ``data`` into the fresh run directory ``run``.

    The resolved recipe is written before training starts, metrics as they are recorded, and
    ``run.json`` with the final status; an error marks the run ``failed`` (``interrupted`` for
    Ctrl-C), keeps everything written, and is raised again. ``info`` goes into ``run.json``.
    """
    _start(run, recipe, info)
    trainer: Trainer | None = None
    try:
        reference = model.reference_losses(data)
        trainer = Trainer(
            model.model,
            model.guide,
            objective=recipe.objective.build(),
            estimator=recipe.estimator.build(),
            optimizer=recipe.optimizer.build(),
            schedule=recipe.schedule.build(),
            training=recipe.training,
            parameter_groups=model.parameter_groups,
            modules=[model],
            reference=reference,
            diagnostics=recipe.diagnostic_plugins(),
        )
        run.update_info(
            device=str(trainer.device),
            num_parameters=count_parameters(list(model.parameters())),
            num_train=data.info.num_train,
            num_test=data.info.num_test,
            data_files=data.info.files,
            reference=reference or None,
            started=_now(),
            environment=environment(),
        )
        history = trainer.fit(data.train, data.test, run=run)
    except BaseException as exc:
        _fail(run, exc, trainer.step if trainer is not None else 0)
        raise
    run.close()
    plot_run(run.path)
    final = history.metrics[-1] if history.metrics else {}
    last_eval = history.evals[-1] if history.evals else {}
    run.update_info(
        status="completed",
        steps_done=trainer.step,
        finished=_now(),
        final_loss=final.get("loss"),
        final_grad_norm_sq_avg=final.get("grad_norm_sq_avg"),
        final_test_loss=last_eval.get("test_loss"),
        final_eval={k: v for k, v in last_eval.items() if k not in ("step", "epoch", "time")} or None,
    )
    return history


def run_recipe(recipe: Recipe, out_root: str | Path | None = None) -> History:
    """Train the run a recipe describes into a fresh directory under ``out_root`` (default: the
    recipe's ``output.root``); see :func:`train_into`. Data and model are built before the
    directory is made, so a missing dataset or a model that cannot be built leaves nothing behind."""
    data = recipe.data.build().load()
    model = build_model(recipe, data)
    run = RunDirectory.create(out_root if out_root is not None else recipe.output.root, recipe.name)
    return train_into(recipe, run, data, model, point={}, point_label="")


# -- sweeps -------------------------------------------------------------------------------------
SUMMARY_COLUMNS = ["seed", "status", "steps", "final_loss", "final_grad_norm_sq_avg"]


def _csv_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else value


def _summary_row(planned: PlannedRun, folder: str, status: str, history: History | None, error: str) -> dict:
    row: dict[str, Any] = {axis: _csv_value(value) for axis, value in planned.point.items()}
    row.update(seed=planned.seed, status=status)
    if history is not None and history.metrics:
        last = history.metrics[-1]
        row.update(steps=int(last["step"]), final_loss=last["loss"], final_grad_norm_sq_avg=last["grad_norm_sq_avg"])
    if history is not None and history.evals:
        for key, value in history.evals[-1].items():
            if key not in ("step", "epoch", "time"):
                row[f"final_{key}"] = value
    row.update(run_dir=folder, error=error)
    return row


def _write_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    # point columns first, then the fixed ones, then every final_* column, then where and why
    tail = ["run_dir", "error"]
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


def run_plan(
    plan: Plan,
    out_root: str | Path | None = None,
    *,
    on_start: Callable[[Path], None] | None = None,
    on_run_done: Callable[[PlannedRun, dict[str, Any]], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> PlanResult:
    """Run every run of ``plan``: one run directory, or a sweep directory (module docstring).

    Every dataset the plan needs is loaded first (once per distinct ``data`` section), so a
    missing dataset stops before anything is written. ``on_start(sweep_dir)`` is called once the
    sweep directory exists and ``on_run_done(run, summary_row)`` after each of its runs, e.g. to
    report progress; ``warn`` receives the figures' warnings (default: Python warnings).
    """
    root = Path(out_root if out_root is not None else plan.runs[0].recipe.output.root)
    datasets: dict[str, DataSplits] = {}
    for planned in plan.runs:
        key = yaml.safe_dump(planned.recipe.data.as_dict(), sort_keys=True)
        if key not in datasets:
            datasets[key] = planned.recipe.data.build().load()

    def data_of(planned: PlannedRun) -> DataSplits:
        return datasets[yaml.safe_dump(planned.recipe.data.as_dict(), sort_keys=True)]

    def where(planned: PlannedRun) -> str:
        return f"{plan.source} [sweep point {planned.label}]" if planned.label else plan.source

    # Every point's model is built once before anything is written: a point that cannot take its
    # data is bad input, not a failed run.
    if plan.is_sweep:
        for planned in plan.points:
            build_model(planned.recipe, data_of(planned), where(planned))

    if not plan.is_sweep:
        (planned,) = plan.runs
        model = build_model(planned.recipe, data_of(planned))
        run = RunDirectory.create(root, planned.recipe.name)
        history = train_into(planned.recipe, run, data_of(planned), model, point={}, point_label="")
        return PlanResult(path=run.path, rows=[_summary_row(planned, run.path.name, "completed", history, "")],
                          history=history)

    parent = fresh_directory(root / plan.name)
    (parent / "plots").mkdir()
    sweep_data = dict(plan.data)
    sweep_data["plugins"] = plan.runs[0].recipe.plugins  # resolved paths: re-runnable from anywhere
    sweep_data["name"] = plan.name  # not the stem of sweep.yaml
    atomic_write_text(parent / "sweep.yaml", yaml.safe_dump(sweep_data, sort_keys=False))
    result = PlanResult(path=parent)
    runs_info = [{"dir": r.folder, "point_index": r.point_index, "seed": r.seed, "status": "pending"}
                 for r in plan.runs]
    started = _now()
    atomic_write_text(parent / "sweep.json", _sweep_info(plan, "running", runs_info, started=started))
    if on_start is not None:
        on_start(parent)
    for i, planned in enumerate(plan.runs):
        run = RunDirectory.create_named(parent, planned.folder)
        history, status, error = None, "completed", ""
        runs_info[i]["status"] = "running"
        atomic_write_text(parent / "sweep.json", _sweep_info(plan, "running", runs_info, started=started))
        info = {"point": planned.point, "point_label": planned.label, "sweep": str(parent)}
        try:
            try:
                model = build_model(planned.recipe, data_of(planned), where(planned))
            except BaseException as exc:
                _start(run, planned.recipe, info)
                _fail(run, exc, 0)
                raise
            history = train_into(planned.recipe, run, data_of(planned), model, **info)
        except KeyboardInterrupt:
            runs_info[i]["status"] = "interrupted"
            result.rows.append(_summary_row(planned, planned.folder, "interrupted", None, "interrupted"))
            _write_summary(parent / "summary.csv", result.rows)
            atomic_write_text(parent / "sweep.json", _sweep_info(plan, "interrupted", runs_info, started=started))
            raise
        except Exception as exc:  # noqa: BLE001 - one failing point must not lose the others
            status, error = "failed", _error_message(exc)
            result.failed += 1
        runs_info[i]["status"] = status
        row = _summary_row(planned, planned.folder, status, history, error)
        result.rows.append(row)
        _write_summary(parent / "summary.csv", result.rows)
        if on_run_done is not None:
            on_run_done(planned, row)
    final_status = ("completed" if result.failed == 0 else
                    "failed" if result.failed == len(plan.runs) else "completed_with_failures")
    atomic_write_text(parent / "sweep.json",
                      _sweep_info(plan, final_status, runs_info, started=started, finished=_now()))
    if result.failed < len(plan.runs):
        from bbvi_kit.figures import draw_figures

        draw_figures([parent], parent / "plots", warn=warn)
    return result
