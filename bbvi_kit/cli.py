"""The ``bbvi-kit`` command line.

Exit codes: 0 success; 1 a run that failed (e.g. a non-finite loss) or an unexpected error;
2 bad input (recipe, override, plugin name, missing file or dataset, command-line usage);
130 interrupted. Errors are one line on stderr; ``--debug`` (or ``BBVI_KIT_DEBUG=1``) adds the
traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Sequence

import click

import bbvi_kit
from bbvi_kit.errors import BBVIError
from bbvi_kit.registry import REGISTRIES

_state = {"debug": False}  # set anew by every main() call


def _one_line(text: str, limit: int = 1000) -> str:
    """Collapse whitespace so a message is one line, and cut it to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(bbvi_kit.__version__, prog_name="bbvi-kit")
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
def cli(debug: bool) -> None:
    """Black-box variational inference and VAEs on Pyro, with convergence diagnostics.

    Run `bbvi-kit run recipes/quickstart.yaml` to train a Deep Gaussian VAE on the embedded
    digits data; the run directory it prints holds the metrics, evaluations and plots.
    """
    _state["debug"] = _state["debug"] or debug


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False),
              help="Root folder of run directories (default: the recipe's output.root, 'runs').")
def run(recipe: Path, overrides: Sequence[str], out: Path | None) -> None:
    """Train the run RECIPE describes. OVERRIDES are dotted KEY=VALUE pairs with YAML values,
    e.g. `optimizer.lr=1e-4 objective.num_particles=5`."""
    from bbvi_kit.recipe import load_recipe
    from bbvi_kit.runner import run_recipe

    resolved = load_recipe(recipe, overrides)
    history = run_recipe(resolved, out)
    last = history.metrics[-1] if history.metrics else {}
    test = history.evals[-1]["test_loss"] if history.evals else float("nan")
    click.echo(
        f"done: {int(last.get('step', 0))} iterations, loss {last.get('loss', float('nan')):.4f}, "
        f"test loss {test:.4f}, mean squared gradient norm {last.get('grad_norm_sq_avg', float('nan')):.4g}"
    )
    click.echo(f"run directory: {history.run_dir}")


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1)
def validate(recipe: Path, overrides: Sequence[str]) -> None:
    """Print the fully resolved RECIPE (with OVERRIDES applied), or the error."""
    from bbvi_kit.recipe import load_recipe

    click.echo(load_recipe(recipe, overrides).to_yaml(), nl=False)


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
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
def plot(run_dirs: Sequence[Path]) -> None:
    """Redraw the plots of one or more run directories from their CSV files."""
    from bbvi_kit.plotting import plot_run

    for run_dir in run_dirs:
        for path in plot_run(run_dir):
            click.echo(str(path))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: runs the CLI and turns errors into one line and an exit code."""
    _state["debug"] = os.environ.get("BBVI_KIT_DEBUG", "") not in ("", "0")
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="bbvi-kit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
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
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for a one-line error
        if _state["debug"]:
            traceback.print_exc()
        click.echo(
            f"error: unexpected {type(exc).__name__}: {_one_line(str(exc))} (run with --debug for the traceback)",
            err=True,
        )
        sys.exit(1)
    if isinstance(code, int) and code != 0:
        sys.exit(code)
