"""Run a resolved recipe: build its plugins, train, write the run directory, draw the plots."""

from __future__ import annotations

import time
from pathlib import Path

import pyro

from bbvi_kit.engine import History, Trainer, count_parameters
from bbvi_kit.errors import BBVIError
from bbvi_kit.plotting import plot_run
from bbvi_kit.recipe import Recipe
from bbvi_kit.runs import RunDirectory, environment


def run_recipe(recipe: Recipe, out_root: str | Path | None = None) -> History:
    """Train the run a recipe describes into a fresh directory under ``out_root``.

    ``out_root`` defaults to the recipe's ``output.root``. The run directory receives the
    resolved recipe before training starts, metrics as they are recorded, and ``run.json`` with
    the final status; an error marks the run ``failed`` (keeping everything written) and is
    raised again.
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(recipe.training.seed)
    data = recipe.data.build().load()
    model = recipe.model.build(data.info)
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
    )
    run = RunDirectory.create(out_root if out_root is not None else recipe.output.root, recipe.name)
    run.write_recipe(recipe.as_dict())
    run.update_info(
        status="running",
        recipe_source=recipe.source,
        seed=recipe.training.seed,
        device=str(trainer.device),
        num_parameters=count_parameters(list(model.parameters())),
        num_train=data.info.num_train,
        num_test=data.info.num_test,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        environment=environment(),
    )
    try:
        history = trainer.fit(data.train, data.test, run=run)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, BBVIError) else f"{type(exc).__name__}: {exc}"
        run.close()
        run.update_info(status="failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted",
                        error=message, steps_done=trainer.step)
        raise
    run.close()
    plot_run(run.path)
    final = history.metrics[-1] if history.metrics else {}
    run.update_info(
        status="completed",
        steps_done=trainer.step,
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        final_loss=final.get("loss"),
        final_grad_norm_sq_avg=final.get("grad_norm_sq_avg"),
        final_test_loss=history.evals[-1]["test_loss"] if history.evals else None,
    )
    return history
