"""Whether a run directory may be resumed, and how: the checks ``bbvi-kit run --resume`` makes
before it imports or changes anything (issue 14).

- :func:`check_identity`: the checkpoint is this run's (``run_uid`` and the recipe's SHA-256 that
  ``run.json`` recorded when the run started), and ``recipe.yaml`` was not edited since (naming
  the keys that changed, from the copy each checkpoint keeps), before the recipe's plugins run.
- :func:`check_nothing_lost`: starting again from the beginning, for lack of a checkpoint, must
  not discard rows that a lost checkpoint folder used to cover.
- :func:`begun`: a run folder that a process killed while setting it up holds nothing a fresh
  start in place would lose.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sized, cast

import yaml

from bbvi_kit.data.base import DataSplits
from bbvi_kit.errors import InputError
from bbvi_kit.config.safe_yaml import MAX_RECIPE_BYTES
from bbvi_kit.recipe import Recipe
from bbvi_kit.runs import MAX_INFO_BYTES, RunDirectory, read_csv, read_regular_file

__all__ = ["begun", "changed_keys", "check_identity", "check_nothing_lost", "read_status"]


def read_status(path: Path) -> str | None:
    """The ``status`` in ``path/run.json``, or ``None`` when it cannot be read."""
    try:
        return json.loads(read_regular_file(path / "run.json", MAX_INFO_BYTES).decode("utf-8")).get("status")
    except (OSError, ValueError, AttributeError, InputError):
        return None


def check_identity(run: RunDirectory, state: dict[str, Any] | None, checkpoint: Path | None) -> None:
    """Refuse, in one line and before anything is imported or changed, a ``recipe.yaml`` edited
    since the run started (naming the keys that differ from the checkpoint's copy) and a
    checkpoint of another run. Runs started before ``run.json`` recorded these are not checked."""
    expected = run.info.get("recipe_sha256")
    if not expected:
        return
    recipe_path = run.path / "recipe.yaml"
    try:
        text = read_regular_file(recipe_path, MAX_RECIPE_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{recipe_path}: cannot read it ({exc})") from None
    identity = state.get("identity") if state is not None else None
    if state is not None and (not isinstance(identity, dict) or identity.get("run_uid") != run.info.get("run_uid")
                              or identity.get("recipe_sha256") != expected):
        raise InputError(f"checkpoint {checkpoint}: refused, it belongs to another run (its run id or recipe "
                         f"differs from {run.path / 'run.json'})")
    if hashlib.sha256(text.encode("utf-8")).hexdigest() == expected:
        return
    changed = changed_keys(identity.get("recipe_text", "") if identity else "", text)
    what = f" ({', '.join(changed[:6])}{', ...' if len(changed) > 6 else ''} changed)" if changed else ""
    raise InputError(f"{recipe_path}: edited since the run started{what}; a resumed run runs the recipe it "
                     "started with: put it back, or start a new run with the new recipe")


def check_nothing_lost(run: RunDirectory, recipe: Recipe, data: DataSplits) -> None:
    """With no checkpoint to resume from, a resume starts the run again and drops its rows: right
    for a run stopped before its first checkpoint (or while writing it: the rows up to its step
    are flushed just before it), refused (one line, nothing changed) when ``metrics.csv`` reaches
    past the step where the first checkpoint was due: then checkpoints were written and have been
    lost (``checkpoints/`` deleted), and the rows are all that is left."""
    training = recipe.training
    if not training.keep_checkpoints or not (run.path / "metrics.csv").is_file():
        return
    per_epoch = -(-len(cast(Sized, data.train)) // training.batch_size)
    total = per_epoch * training.epochs if training.iterations is None else min(per_epoch * training.epochs,
                                                                               training.iterations)
    first = min(training.checkpoint_every or per_epoch, total)
    steps = [row.get("step", 0.0) for row in read_csv(run.path / "metrics.csv")]
    if steps and max(steps) > first:
        raise InputError(f"{run.path}: metrics.csv reaches step {max(steps):.0f}, past the first checkpoint (step "
                         f"{first}), but {run.path / 'checkpoints'} holds none that loads: resuming would start "
                         "again and discard those rows; nothing was changed (start a new run, or start this one again "
                         "with --resume DIR --from-scratch, which sets the old files aside)")


def changed_keys(before: str, after: str) -> list[str]:
    """The dotted keys whose values differ between two recipe texts (read with the safe loader,
    nothing imported); empty when either cannot be read."""
    try:
        old, new = yaml.safe_load(before), yaml.safe_load(after)
    except yaml.YAMLError:
        return []
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []

    def flat(node: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(node, dict) and node:
            out: dict[str, Any] = {}
            for key, value in node.items():
                out.update(flat(value, f"{prefix}{key}."))
            return out
        return {prefix[:-1]: node}

    def spelled(value: Any) -> str:  # 1, 1.0 and true differ here (in Python 1 == 1.0 == True)
        return json.dumps(value, sort_keys=True, default=repr)

    a, b = flat(old), flat(new)
    return sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or spelled(a[k]) != spelled(b[k]))


def begun(folder: Path) -> bool:
    """Whether a run directory holds a run that began: ``run.json``, a CSV file or a checkpoint.
    A process killed while making it (before :func:`bbvi_kit.runner.train_into` wrote ``run.json``, or right after,
    before training wrote anything) leaves a folder with at most ``plots/``, ``recipe.yaml`` and
    ``run.json``: nothing a fresh start in the same folder would lose."""
    if (folder / "checkpoints").exists() or any(folder.glob("*.csv")) or (folder / "diagnostics").exists():
        return True
    return (folder / "run.json").is_file() and read_status(folder) not in (None, "running")
