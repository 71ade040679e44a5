"""Run one resolved recipe: build its plugins, train into a run directory (or resume one), draw
the run's plots.

:func:`run_recipe` trains one run; :func:`train_into` and :func:`resume_run` are what a sweep
(:mod:`bbvi_kit.sweep_runner`) does for each of its runs. Plotting is imported only when a run
has finished, so training itself never imports matplotlib.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pyro
import yaml

from bbvi_kit.data.base import DataSplits
from bbvi_kit.engine import History, Trainer, count_parameters
from bbvi_kit.checkpoint import Checkpoints
from bbvi_kit.errors import BBVIError, InputError, OutputError
from bbvi_kit.interrupts import Interrupted, signal_name
from bbvi_kit.model import BBVIModel
from bbvi_kit.recipe import Recipe, load_recipe
from bbvi_kit.resume_guard import check_identity, check_nothing_lost
from bbvi_kit.runs import (
    RunDirectory,
    environment,
    read_csv,
)
from bbvi_kit.step_log import skipped_steps_warning


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def error_message(exc: BaseException) -> str:
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


def start_run(run: RunDirectory, recipe: Recipe, info: dict[str, Any]) -> None:
    digest = run.write_recipe(recipe.as_dict())
    run.update_info(status="running", recipe_source=recipe.source, seed=recipe.training.seed,
                    run_uid=uuid.uuid4().hex, recipe_sha256=digest, **info)


def fail_run(run: RunDirectory, exc: BaseException, steps: int) -> None:
    """Mark the run failed (``interrupted`` for Ctrl-C) and release it. Writing ``run.json`` may
    itself fail (a full disk): the original error is what the user must see, so that failure is
    swallowed and ``run.json`` keeps saying ``running``, never ``completed``."""
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    extra = {"signal": signal_name(exc.signum)} if isinstance(exc, Interrupted) else {}
    if isinstance(exc, Interrupted):
        exc.resume_dir = str(run.path)
    try:
        run.close()
        run.update_info(status=status, error=error_message(exc), steps_done=steps, finished=now(), **extra)
    except OSError:
        pass
    finally:
        run.release()


def make_trainer(recipe: Recipe, model: BBVIModel, reference: dict[str, float] | None) -> Trainer:
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
        fail_run(run, exc, trainer.step)
        raise
    try:
        run.close()
        from bbvi_kit.plots import plot_run  # (at the end: training never imports matplotlib)

        plot_run(run.path)
        run.remove_stray_temporaries()
        final = history.metrics[-1] if history.metrics else {}
        last_eval = history.evals[-1] if history.evals else {}
        history.warning = skipped_steps_warning(history.metrics, trainer.training.warn_skipped_fraction)
        run.update_info(
            status="completed",
            warning=history.warning,
            steps_done=trainer.step,
            finished=now(),
            final_loss=final.get("loss"),
            final_minibatch_grad_norm_sq_avg=final.get("minibatch_grad_norm_sq_avg"),
            final_test_loss=last_eval.get("test_loss"),
            final_eval={k: v for k, v in last_eval.items() if k not in ("step", "epoch", "time")} or None,
        )
    except OSError as exc:
        error = OutputError(f"{run.path}: cannot finish the run: {exc.strerror or exc}")
        fail_run(run, error, trainer.step)
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
        start_run(run, recipe, info)
    except BaseException:
        run.release()
        raise
    try:
        reference = model.reference_losses(data)
        trainer = make_trainer(recipe, model, reference)
    except BaseException as exc:
        fail_run(run, exc, 0)
        raise
    return _fit_into(run, trainer, model, data, reference=reference, info={"started": now()})


def history_from_files(path: Path) -> History:
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
        trainer = make_trainer(recipe, model, reference)
        if state is not None:
            trainer.restore(state, data.train)
        if adopted:
            checkpoints.adopt(adopted[0])  # the record
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
    entry = {"at": now(), "from_step": from_step or 0, **({"set_aside": str(discarded)} if discarded else {})}
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


_DATASETS: dict[str, DataSplits] = {}
"""Datasets loaded in this process, by their ``data`` section: a sweep loads each once, and so
does a worker process that runs many of its runs."""


def load_data(recipe: Recipe) -> DataSplits:
    """The recipe's dataset, loaded once per process and ``data`` section."""
    key = yaml.safe_dump(recipe.data.as_dict(), sort_keys=True)
    if key not in _DATASETS:
        _DATASETS[key] = recipe.data.build().load()
    return _DATASETS[key]
