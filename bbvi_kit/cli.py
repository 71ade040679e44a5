"""The ``bbvi-kit`` command line.

Exit codes: 0 success; 1 a run that failed (e.g. a non-finite loss) or an unexpected error;
2 bad input (recipe, override, plugin name, missing file or dataset, command-line usage);
130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM: a training run stops at the end of its step
with a checkpoint and prints the ``--resume`` command (:mod:`bbvi_kit.interrupts`). Errors are one
line on stderr; ``--debug`` (or ``BBVI_KIT_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import click

import bbvi_kit
from bbvi_kit import interrupts
from bbvi_kit.diagnostics import PosteriorCollapseWarning
from bbvi_kit.errors import BBVIError
from bbvi_kit.registry import REGISTRIES

if TYPE_CHECKING:
    from bbvi_kit.sweep import PlannedRun
    from bbvi_kit.sweep_runner import PlanResult
    from bbvi_kit.train.history import History

_state = {"debug": False}  # set anew by every main() call


def _warn(message: str) -> None:
    click.echo(f"warning: {_one_line(message, 500)}", err=True)


def _show_warning(message: Warning | str, category: type, filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """Python warnings (e.g. a posterior-collapse warning) as one line each, without source lines."""
    _warn(str(message))


def _one_line(text: str, limit: int = 1000) -> str:
    """Collapse whitespace so a message is one line, and cut it to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(bbvi_kit.__version__, prog_name="bbvi-kit")
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
@click.option("--no-entry-points", is_flag=True,
              help="Ignore plugins that installed packages offer through entry points (only bbvi-kit's own and "
                   "those a recipe's plugins: names load); also BBVI_KIT_DISABLE_ENTRY_POINTS=1.")
@click.option("--allow-write", "allow_write", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Let recipes download datasets into, and cache decoded images below, this folder although it "
                   "lies outside the working folder and the data root (repeatable).")
def cli(debug: bool, no_entry_points: bool, allow_write: Sequence[Path]) -> None:
    """Black-box variational inference and VAEs on Pyro, with convergence diagnostics.

    Run `bbvi-kit run recipes/quickstart.yaml` to train a Deep Gaussian VAE on the embedded
    digits data; the run directory it prints holds the metrics, evaluations and plots.
    """
    _state["debug"] = _state["debug"] or debug
    if no_entry_points:
        from bbvi_kit.registry import disable_entry_points

        disable_entry_points()
    if allow_write:
        from bbvi_kit.data.root import allow_writes_to

        allow_writes_to(allow_write)


class SweepFailed(BBVIError):
    """Some runs of a sweep failed (the others completed and are kept)."""

    exit_code = 1


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path), required=False)
@click.argument("overrides", nargs=-1)
@click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False),
              help="Root folder of run directories (default: the recipe's output.root, 'runs').")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Go on with the interrupted run or sweep in this directory, from its last checkpoints.")
@click.option("--from-scratch", is_flag=True,
              help="With --resume RUN_DIR: start that run again from step 0 with its own recipe; its rows, "
                   "diagnostics and checkpoints are moved into RUN_DIR/set-aside-<time>/ first.")
@click.option("--executor", type=click.Choice(["local", "ray"]),
              help="Run a sweep's runs in a local process pool or as Ray tasks (default: one after another here).")
@click.option("--workers", type=int, help="Runs at once: local default one per GPU, else half the CPUs; "
              "ray default: as the cluster's resources allow.")
@click.option("--ray-address", help="An existing Ray cluster (default: start a local Ray instance).")
def run(recipe: Path | None, overrides: Sequence[str], out: Path | None, resume_dir: Path | None,
        from_scratch: bool, executor: str | None, workers: int | None, ray_address: str | None) -> None:
    """Train the run(s) RECIPE describes. OVERRIDES are dotted KEY=VALUE pairs with YAML values,
    e.g. `optimizer.lr=1e-4 objective.num_particles=5 sweep.objective.num_particles=[1,5]`.

    A recipe with `training.seeds` or a `sweep:` section runs every grid point once per seed into
    one sweep directory, writes summary.csv and draws the figures; a failing run is reported and
    the others go on (exit code 1 if any failed).

    `bbvi-kit run --resume DIR` continues an interrupted run from its last checkpoint, with its
    own recipe, as if it had never stopped; for a sweep directory it keeps the completed runs,
    resumes the unfinished ones and starts those not begun.

    `--executor local|ray` runs a sweep's runs in parallel: in a process pool on this machine, or
    as Ray tasks on `--ray-address` (or a local Ray instance). Each run writes the same run
    directory; a resubmitted run goes on from its last checkpoint.
    """
    from bbvi_kit import distributed
    from bbvi_kit.executors import make_executor
    from bbvi_kit.sweep_runner import resume, run_plan
    from bbvi_kit.sweep import load_plan

    if from_scratch and (resume_dir is None or distributed.requested()):
        raise click.UsageError("--from-scratch goes with --resume RUN_DIR, outside torchrun (a new run always "
                               "starts from scratch)")
    if distributed.requested():
        _run_data_parallel(recipe, overrides, out, resume_dir, executor)
        return
    pool = make_executor(executor, workers, ray_address)
    if resume_dir is not None:
        if recipe is not None or overrides or out is not None:
            raise click.UsageError("--resume DIR takes no RECIPE, overrides or --out: a run resumes as it was")
        if (resume_dir / "sweep.json").is_file():
            result = resume(resume_dir, from_scratch=from_scratch, executor=pool, on_start=lambda path: None,
                            on_run_done=_sweep_progress(None), warn=_warn)
            _sweep_done(result, len(result.rows))
            return
        if pool is not None:
            raise click.UsageError("--executor is for sweep directories; a single run resumes here")
        result = resume(resume_dir, from_scratch=from_scratch, warn=_warn)
        origin = f"step {result.resumed_from}" if result.resumed_from is not None else (
            "the beginning (--from-scratch)" if from_scratch else "the beginning (no checkpoint)")
        click.echo(f"resumed from {origin}", err=True)
        assert result.history is not None
        _run_done(result.history)
        return
    if recipe is None:
        raise click.UsageError("Missing argument 'RECIPE' (or --resume DIR).")
    plan = load_plan(recipe, overrides)
    if not plan.is_sweep:
        if pool is not None:
            raise click.UsageError("--executor runs the runs of a sweep: give the recipe training.seeds or a sweep")
        history = run_plan(plan, out).history
        assert history is not None
        _run_done(history)
        return

    total = len(plan.runs)

    def start(path: Path) -> None:
        click.echo(f"sweep {plan.name}: {len(plan.points)} points x {len(plan.seeds)} seeds = {total} runs "
                   f"into {path}", err=True)

    result = run_plan(plan, out, executor=pool, on_start=start, on_run_done=_sweep_progress(total), warn=_warn)
    _sweep_done(result, total)


def _run_data_parallel(recipe: Path | None, overrides: Sequence[str], out: Path | None, resume_dir: Path | None,
                       executor: str | None) -> None:
    """One run trained data-parallel by the processes torchrun started (this is one of them);
    rank 0 writes the run directory and prints (:mod:`bbvi_kit.distributed`)."""
    from bbvi_kit import distributed
    from bbvi_kit.sweep_runner import run_plan
    from bbvi_kit.sweep import load_plan

    if resume_dir is not None or executor is not None:
        raise click.UsageError("under torchrun, bbvi-kit run trains one run data-parallel: no --resume or --executor")
    if recipe is None:
        raise click.UsageError("Missing argument 'RECIPE'.")
    plan = load_plan(recipe, overrides)
    if plan.is_sweep:
        raise click.UsageError("under torchrun, bbvi-kit run trains one run data-parallel: give a recipe without "
                               "training.seeds or sweep (or run the sweep with --executor)")
    parallel = distributed.from_environment()
    try:
        history = run_plan(plan, out).history
    except BaseException:
        distributed.shutdown(wait=False)
        raise
    distributed.shutdown()
    if parallel is None or parallel.writes:
        assert history is not None
        _run_done(history)


def _run_done(history: History) -> None:
    last = history.metrics[-1] if history.metrics else {}
    test = history.evals[-1]["test_loss"] if history.evals else float("nan")
    click.echo(
        f"done: {int(last.get('step', 0))} iterations, loss {last.get('loss', float('nan')):.4f}, "
        f"test loss {test:.4f}, mean mini-batch squared gradient norm "
        f"{last.get('minibatch_grad_norm_sq_avg', float('nan')):.4g}"
    )
    click.echo(f"run directory: {history.run_dir}")
    if history.warning:
        _warn(history.warning)


def _sweep_progress(total: int | None) -> Callable[[PlannedRun, dict[str, Any]], None]:
    """``on_run_done`` printing one line per finished run (``total`` None: not known yet)."""
    done = {"n": 0}

    def report(planned: PlannedRun, row: dict[str, Any]) -> None:
        done["n"] += 1
        if row["status"] == "completed":
            what = f"test loss {row.get('final_test_loss', float('nan')):.4f}"
            if row.get("warning"):
                what += f"; warning: {row['warning']}"
        else:
            what = f"FAILED: {_one_line(row['error'], 300)}"
        of = f"/{total}" if total is not None else ""
        click.echo(f"[{done['n']}{of}] {planned.label or 'run'} seed {planned.seed}: {what}", err=True)

    return report


def _sweep_done(result: PlanResult, total: int) -> None:
    if result.skipped or result.resumed:
        click.echo(f"kept {result.skipped} completed runs, resumed {result.resumed}", err=True)
    click.echo(f"done: {total - result.failed} of {total} runs completed")
    click.echo(f"sweep directory: {result.path}")
    if result.failed:
        raise SweepFailed(f"{result.failed} of {total} runs failed; see {result.path / 'summary.csv'}")


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1)
def validate(recipe: Path, overrides: Sequence[str]) -> None:
    """Print the fully resolved RECIPE (with OVERRIDES applied), or the error. For a sweep, every
    point is validated and the first run's recipe is printed after the list of runs."""
    from bbvi_kit.sweep import load_plan

    plan = load_plan(recipe, overrides)
    if plan.is_sweep:
        click.echo(f"# sweep {plan.name}: {len(plan.points)} points x seeds {plan.seeds} = {len(plan.runs)} runs")
        for planned in plan.points:
            click.echo(f"#   {planned.folder.rsplit('-seed', 1)[0]}: {planned.label or '(no sweep axes)'}")
        click.echo("# first run:")
    click.echo(plan.runs[0].recipe.to_yaml(), nl=False)


@cli.command()
@click.option("--recipe", "recipe", type=click.Path(path_type=Path),
              help="Also load the plugin files and modules this recipe's `plugins:` list names.")
def plugins(recipe: Path | None) -> None:
    """List every registered plugin by kind, with where it came from."""
    if recipe is not None:
        from bbvi_kit.recipe import load_recipe_plugins

        load_recipe_plugins(recipe)
    for kind, registry in REGISTRIES.items():
        click.echo(f"{kind}s:")
        for entry in registry.entries():
            click.echo(f"  {entry.name:<32} {entry.source}")


@cli.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False),
              help="Folder for the combined figures (default: DIR/plots for one DIR; needed for several).")
@click.option("--scale", type=click.Choice(["plain", "paper"]), default=None,
              help="Paper-style figures with the per-epoch panel as the mean mini-batch norm (plain, the default) "
                   "or as the authors' code logged it, sum_k ||B_k g_k||^2 / (N x parameters) (paper).")
def plot(dirs: Sequence[Path], out: Path | None, scale: str | None) -> None:
    """Redraw figures from run or sweep directories (read from their files only).

    A run directory gets its own plots again; a sweep directory, several directories, a folder
    of runs, or any directory with --scale gets the paper-style figures over all the runs found
    (mean over seeds with a band, one colour per sweep value, the C log n / sqrt(n) reference).
    """
    from bbvi_kit.plots import draw_figures
    from bbvi_kit.plots import plot_run
    from bbvi_kit.errors import InputError

    for d in dirs:
        if not d.is_dir():
            raise InputError(f"{d}: not a directory")
    if len(dirs) == 1 and (dirs[0] / "metrics.csv").is_file() and out is None and scale is None:
        for path in plot_run(dirs[0]):
            click.echo(str(path))
        return
    if out is None:
        if len(dirs) > 1:
            raise InputError("several directories: say where the combined figures go with --out DIR")
        out = dirs[0] / "plots"
    for path in draw_figures(list(dirs), out, warn=_warn, scale=scale or "plain"):
        click.echo(str(path))


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False),
              help="The HTML file to write (default: DIR/report.html).")
def report(directory: Path, out: Path | None) -> None:
    """Write a self-contained HTML report of a run or sweep directory (read from its files only).

    The page holds a summary table (for a sweep: mean ± sd over seeds per point), the recipe,
    every figure and every diagnostic's figure embedded as PNG, and plain-language findings
    (rate of the gradient norm, failed runs, posterior collapse, SNR against K, ...). It has no
    external resource and reads offline. Prints the path written.
    """
    from bbvi_kit.report import write_report

    click.echo(str(write_report(directory, out, warn=_warn)))


def _exit_interrupted(exc: KeyboardInterrupt) -> None:
    """One line for an interruption (with the ``--resume`` command when a run was stopped) and
    the exit code 128 + the signal (130 for Ctrl-C)."""
    if isinstance(exc, interrupts.Interrupted):
        where = getattr(exc, "resume_dir", None)
        hint = f"; resume with: bbvi-kit run --resume {where}" if where else ""
        click.echo(f"interrupted: {exc}{hint}", err=True)
        sys.exit(exc.exit_code)
    click.echo("interrupted", err=True)
    sys.exit(130)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: runs the CLI and turns errors into one line and an exit code."""
    _state["debug"] = os.environ.get("BBVI_KIT_DEBUG", "") not in ("", "0")
    try:
        with warnings.catch_warnings(), interrupts.handling_signals():
            warnings.showwarning = _show_warning
            # every occurrence: the same collapse warning in the next run of a sweep is news too
            warnings.simplefilter("always", PosteriorCollapseWarning)
            code = cli.main(args=list(argv) if argv is not None else None, prog_name="bbvi-kit",
                            standalone_mode=False)
    except click.exceptions.Abort as exc:  # click's wrapping of a KeyboardInterrupt
        _exit_interrupted(exc.__cause__ if isinstance(exc.__cause__, KeyboardInterrupt) else KeyboardInterrupt())
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"error: {_one_line(exc.format_message())}{hint}", err=True)
        sys.exit(exc.exit_code)
    except BBVIError as exc:
        if _state["debug"]:
            traceback.print_exc()
        click.echo(f"error: {_one_line(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        _exit_interrupted(exc)
    except OSError as exc:  # a file operation no code path turned into a BBVIError: name the file
        from bbvi_kit.runs import WRITE_FAILURES, file_error_message

        if _state["debug"]:
            traceback.print_exc()
        click.echo(f"error: {file_error_message(exc)}", err=True)
        sys.exit(1 if exc.errno in WRITE_FAILURES else 2)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for a one-line error
        signum = interrupts.received()
        if signum is not None:  # a signal that landed inside library code (an import) left this error
            click.echo(f"interrupted by {interrupts.signal_name(signum)} during start-up", err=True)
            sys.exit(128 + signum)
        if _state["debug"]:
            traceback.print_exc()
        click.echo(
            f"error: unexpected {type(exc).__name__}: {_one_line(str(exc))} (run with --debug for the traceback)",
            err=True,
        )
        sys.exit(1)
    if isinstance(code, int) and code != 0:
        sys.exit(code)
