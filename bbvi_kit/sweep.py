"""Expand a recipe's seeds and ``sweep:`` grid into the fully resolved runs it stands for.

A recipe may list several seeds and sweep any option over a list of values::

    training: {seeds: [0, 1, 2, 3, 4]}
    sweep:
      objective.num_particles: [1, 5, 10]                 # an axis: a dotted key and its values
      model.activation: [relu, {name: generalized_soft_clipping, sharpness: 2}]
      model.extra_fc_layers,model.extra_conv_layers: [[0, 0], [1, 0], [0, 1]]   # a zipped axis

The grid is the Cartesian product of the axes (a zipped axis moves its keys together); every grid
point runs once per seed. Each run is an ordinary resolved :class:`~bbvi_kit.recipe.Recipe`
with one seed and no sweep, so its ``recipe.yaml`` re-runs that point alone. Every point is
validated before anything runs, so a bad value is reported up front with the point named.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from bbvi_kit.errors import InputError
from bbvi_kit.recipe import AXIS_KEY, Recipe, apply_overrides, load_yaml, resolve, set_dotted

# Keys a sweep may not vary: they name the sweep itself or where it is written.
_FIXED_SECTIONS = ("name", "description", "plugins", "sweep", "output")
_SEED_KEYS = ("training.seed", "training.seeds")
MAX_RUNS = 10_000

# Short names of common axes, as the paper writes them.
SHORT_NAMES = {
    "objective.num_particles": "K",
    "training.batch_size": "B",
    "objective.beta": "beta",
}


@dataclass(frozen=True)
class PlannedRun:
    """One run of a plan: the grid point (axis key -> value), its seed and its resolved recipe."""

    point_index: int
    point: dict[str, Any]
    label: str
    seed: int
    recipe: Recipe

    @property
    def folder(self) -> str:
        """Name of the run's directory inside the sweep directory: one path component whatever
        the point's values (letters, digits and ``_.=+-`` only, no ``..``), unique by its index."""
        slug = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", self.label)
        slug = re.sub(r"\.{2,}", ".", slug).strip("_.")[:80]
        return f"p{self.point_index:02d}-{slug}-seed{self.seed}" if slug else f"seed{self.seed}"


@dataclass(frozen=True)
class Plan:
    """Every run a recipe stands for. ``is_sweep`` is true when the recipe lists ``seeds`` or a
    ``sweep``: its runs then go into one sweep directory."""

    name: str
    source: str
    data: dict[str, Any]  # the recipe as written, overrides applied: re-runs the whole sweep
    axes: dict[str, list[Any]]
    seeds: list[int]
    runs: list[PlannedRun]
    is_sweep: bool

    @property
    def points(self) -> list[PlannedRun]:
        """The first run of every grid point."""
        return [run for run in self.runs if run.seed == self.seeds[0]]


def _format_value(value: Any) -> str:
    if isinstance(value, Mapping):
        options = {k: v for k, v in value.items() if k != "name"}
        inner = ",".join(f"{k}={_format_value(v)}" for k, v in options.items())
        name = str(value.get("name", ""))
        return f"{name}({inner})" if inner and name else name or f"({inner})"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def point_label(point: Mapping[str, Any]) -> str:
    """A short human label of a grid point: ``K=5``, ``activation=relu``, ``lr=0.001, B=64``."""
    parts = []
    for key, value in point.items():
        keys = key.split(",")
        values = value if len(keys) > 1 else [value]
        for k, v in zip(keys, values):
            parts.append(f"{SHORT_NAMES.get(k, k.split('.')[-1])}={_format_value(v)}")
    return ", ".join(parts)


def check_axes(axes: Any, source: str) -> dict[str, list[Any]]:
    """Validate a ``sweep:`` section: dotted keys (or comma-joined ones) to non-empty lists."""
    if axes is None:
        return {}
    if not isinstance(axes, Mapping):
        raise InputError(f"{source}: sweep: expected a mapping of dotted keys to lists of values")
    seen: set[str] = set()
    out: dict[str, list[Any]] = {}
    for axis, values in axes.items():
        where = f"{source}: sweep.{axis}"
        if not isinstance(axis, str) or not AXIS_KEY.match(axis):
            raise InputError(f"{where}: an axis is a dotted key such as objective.num_particles")
        keys = axis.split(",")
        for key in keys:
            if key.split(".")[0] in _FIXED_SECTIONS:
                raise InputError(f"{where}: {key} cannot be swept")
            if key in _SEED_KEYS:
                raise InputError(f"{where}: list seeds in training.seeds instead")
            if key == "training":
                raise InputError(f"{where}: sweep training's options (training.batch_size, ...), not the section")
            if key in seen or any(key.startswith(s + ".") or s.startswith(key + ".") for s in seen):
                raise InputError(f"{where}: {key} overlaps another sweep axis")
            seen.add(key)
        if isinstance(values, Mapping):
            raise InputError(f"{where}: expected a list of values; write dotted keys, e.g. sweep: {{{axis}.KEY: [...]}}")
        if not isinstance(values, list) or not values:
            raise InputError(f"{where}: expected a non-empty list of values")
        if len(keys) > 1:
            for i, value in enumerate(values):
                if not isinstance(value, list) or len(value) != len(keys):
                    raise InputError(f"{where}.{i}: a zipped axis takes lists of {len(keys)} values, one per key")
        out[axis] = values
    return out


def plan_recipe(data: Mapping[str, Any], source: str = "<recipe>", base_dir: Path | None = None,
                default_name: str = "recipe") -> Plan:
    """Expand recipe data into its runs (see the module docstring); validates every point."""
    data = dict(data)
    axes = check_axes(data.get("sweep"), source)
    base = resolve(data, source=source, base_dir=base_dir, default_name=default_name)
    seeds = list(base.training.seeds) if base.training.seeds is not None else [base.training.seed]
    total = len(seeds)
    for values in axes.values():
        total *= len(values)
    if total > MAX_RUNS:
        raise InputError(f"{source}: sweep: {total} runs (grid x seeds) is more than the {MAX_RUNS} allowed")
    runs: list[PlannedRun] = []
    for index, combo in enumerate(itertools.product(*axes.values())):
        point = dict(zip(axes, combo))
        label = point_label(point)
        if point:
            point_data = copy.deepcopy({k: v for k, v in data.items() if k != "sweep"})
            for axis, value in point.items():
                keys = axis.split(",")
                for key, v in zip(keys, value if len(keys) > 1 else [value]):
                    set_dotted(point_data, key, copy.deepcopy(v), f"{source}: sweep.{axis}")
            recipe = resolve(point_data, source=f"{source} [sweep point {label}]", base_dir=base_dir,
                             default_name=default_name)
            recipe = dataclasses.replace(recipe, source=source)
        else:
            recipe = base
        for seed in seeds:
            training = recipe.training.model_copy(update={"seed": seed, "seeds": None})
            runs.append(PlannedRun(index, point, label, seed, dataclasses.replace(recipe, training=training)))
    return Plan(
        name=base.name,
        source=source,
        data=data,
        axes=axes,
        seeds=seeds,
        runs=runs,
        is_sweep=bool(axes) or base.training.seeds is not None,
    )


def load_plan(path: str | Path, overrides: Sequence[str] = ()) -> Plan:
    """Read, override, validate and expand the recipe at ``path``."""
    path = Path(path)
    data = apply_overrides(load_yaml(path), overrides)
    return plan_recipe(data, source=str(path), base_dir=path.resolve().parent, default_name=path.stem)
