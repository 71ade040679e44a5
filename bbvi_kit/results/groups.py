"""Runs that differ only in their seed, as one group with a short label (:func:`group_runs`).

Two runs belong to one group (one colour, one legend entry) when their resolved recipes agree on
every key except the seed and book-keeping that cannot change the numbers
(:data:`~bbvi_kit.results.names.IGNORED_KEYS`). Within one sweep this is exactly "same sweep
point"; across two sweeps it keeps apart runs whose sweep points coincide but whose recipes
differ elsewhere, and it pools the seeds of two sweeps of the same recipe. Labels name only the
recipe keys that differ between groups, sweep axes first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from bbvi_kit.results.names import (
    ACTIVATION_NAMES,
    ACTIVATION_OPTIONS,
    IGNORED_KEYS,
    OBJECTIVE_NAMES,
    OPTIMIZER_NAMES,
    SHORT_NAMES,
)
from bbvi_kit.results.run import Run

__all__ = ["Group", "format_value", "group_runs", "normalise"]

_MISSING = "\x00missing"


def normalise(value: Any) -> Any:
    """A comparable form of a recipe value: numbers as floats, dicts with sorted keys."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): normalise(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    return str(value)


def _flat_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """``section.option -> value`` (one level; option values such as an activation stay whole)."""
    flat: dict[str, Any] = {}
    for section, body in recipe.items():
        if isinstance(body, Mapping):
            for option, value in body.items():
                flat[f"{section}.{option}"] = value
        else:
            flat[str(section)] = body
    if isinstance(flat.get("model.activation"), str):
        flat["model.activation"] = {"name": flat["model.activation"]}
    return flat


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.split(".", 1)[0] in IGNORED_KEYS


def _axis_keys(axis: str, flat: Mapping[str, Any] | None = None) -> list[str]:
    """The recipe keys of a sweep axis: ``a.b,c.d`` is a zipped axis of two keys; a key deeper
    than ``section.option`` (``model.activation.sharpness``) stands for its option when the
    recipe has it (``model.activation``)."""
    keys: list[str] = []
    for key in (k.strip() for k in str(axis).split(",")):
        option = ".".join(key.split(".")[:2])
        if flat is not None and key not in flat and any(f.startswith(key + ".") for f in flat):
            keys.extend(f for f in flat if f.startswith(key + "."))  # a whole section swept
            continue
        keys.append(option if flat is not None and option != key and option in flat else key)
    return keys


def _run_settings(run: Run) -> dict[str, Any]:
    """The recipe values that define a run's group (the point's values where no recipe exists)."""
    flat = _flat_recipe(run.recipe)
    for axis, value in run.point.items():
        keys = [k.strip() for k in str(axis).split(",")]
        values = value if len(keys) > 1 and isinstance(value, (list, tuple)) else [value]
        for key, val in zip(keys, values):
            if ".".join(key.split(".")[:2]) in flat or any(f.startswith(key + ".") for f in flat):
                continue  # the recipe always wins (a swept section too); the point fills in what it lacks
            flat[key] = {"name": val} if key == "model.activation" and isinstance(val, str) else val
    return {k: v for k, v in flat.items() if not _ignored(k)}


@dataclass
class Group:
    """Runs that differ only in their seed: one colour and one legend entry.

    ``key`` holds the recipe values (``section.option``) that differ between the groups drawn
    together; ``point`` is the sweep point of the runs (from ``run.json``).
    """

    label: str
    runs: list[Run]
    key: dict[str, Any]
    point: dict[str, Any]
    settings: dict[str, Any] = field(repr=False)
    parts: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]

    def setting(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _activation_label(value: Mapping[str, Any], varying: set[str]) -> str:
    name = str(value.get("name", "?"))
    parts = [ACTIVATION_NAMES.get(name, name)]
    for option, val in value.items():
        if option == "name":
            continue
        if option in varying or (name == "generalized_soft_clipping" and option == "sharpness"):
            parts.append(f"{ACTIVATION_OPTIONS.get(option, option)}={format_value(val)}")
    return " ".join(parts)


def _part(key: str, value: Any, activation_varying: set[str]) -> str | None:
    """A short legend piece for one differing recipe key, or ``None`` for a missing key."""
    if isinstance(value, str) and value == _MISSING:
        return None
    if key == "model.activation" and isinstance(value, Mapping):
        return _activation_label(value, activation_varying)
    if key == "objective.name":
        return OBJECTIVE_NAMES.get(str(value), str(value))
    if key == "optimizer.name":
        return OPTIMIZER_NAMES.get(str(value), str(value))
    if key in SHORT_NAMES:
        return f"{SHORT_NAMES[key]}={format_value(value)}"
    if key.endswith(".name"):
        return str(value)
    return f"{key.rsplit('.', 1)[-1]}={format_value(value)}"


def _sort_token(value: Any) -> tuple:
    if isinstance(value, bool):
        return (1, str(value))
    if isinstance(value, (int, float)):
        return (0, float(value))
    if isinstance(value, Mapping):  # a plugin (activation): by name, then by its options
        return (3, _sort_token(value.get("name")), tuple((k, _sort_token(v)) for k, v in value.items() if k != "name"))
    if isinstance(value, (list, tuple)):
        return (2, tuple(_sort_token(v) for v in value))
    return (1, "" if value == _MISSING else str(value))


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Split ``runs`` into groups that differ only in their seed, labelled by what differs.

    Two runs share a group when their resolved recipes (``section.option`` keys; the sweep point
    of ``run.json`` fills in keys absent from the recipe) agree on every key but those in
    :data:`IGNORED_KEYS` (the seed and book-keeping). Keys equal across all ``runs`` are dropped;
    the label is made of the remaining ones, sweep axes first, in short form: ``K=5``, ``B=64``,
    ``β=4``, ``Adam``, ``IWAE``, ``soft-clip s=2``, ``relu``, ``extra_fc_layers=1`` (the last
    component of any other key). A single group is labelled by its ``point_label`` or recipe name.
    Groups are ordered by their differing values (numbers numerically).
    """
    if not runs:
        return []
    settings = [_run_settings(r) for r in runs]
    all_keys: list[str] = []
    for s in settings:
        all_keys.extend(k for k in s if k not in all_keys)
    table = [{k: normalise(s.get(k, _MISSING)) for k in all_keys} for s in settings]
    differing = [k for k in all_keys if len({json.dumps(row[k], sort_keys=True) for row in table}) > 1]

    # sweep axes first, in the order the points list them, then the rest in recipe order
    axes: list[str] = []
    for r, flat in zip(runs, settings):
        for axis in r.point:
            for key in _axis_keys(axis, flat):
                if key in differing and key not in axes:
                    axes.append(key)
    order = axes + [k for k in differing if k not in axes]

    buckets: dict[str, list[int]] = {}
    for i, row in enumerate(table):
        signature = json.dumps([row[k] for k in order], sort_keys=True)
        buckets.setdefault(signature, []).append(i)

    activations = [table[i[0]].get("model.activation") for i in buckets.values()]
    activation_varying: set[str] = set()
    for name in {a.get("name") for a in activations if isinstance(a, Mapping)}:
        same = [a for a in activations if isinstance(a, Mapping) and a.get("name") == name]
        for option in {o for a in same for o in a}:
            if len({json.dumps(a.get(option)) for a in same}) > 1:
                activation_varying.add(option)

    # When a sweep swaps a whole section's plugin (sweep: {optimizer: [{name: sgd, ...}, {name:
    # adam, ...}]}), the options only some of the plugins have (betas, momentum) say nothing the
    # plugin's name does not, unless they vary themselves.
    whole_sections = {k.strip() for r in runs for axis in r.point for k in str(axis).split(",") if "." not in k}
    plugin_varies = {k.rsplit(".", 1)[0] for k in differing if k.endswith(".name")} & whole_sections

    def says_something(key: str) -> bool:
        present = {json.dumps(row[key], sort_keys=True) for row in table if row[key] != _MISSING}
        partial = len(present) < len({json.dumps(row[key], sort_keys=True) for row in table})
        return not (key.split(".", 1)[0] in plugin_varies and partial and len(present) == 1)

    label_keys = [k for k in order if says_something(k)]
    groups = []
    for indices in buckets.values():
        first = indices[0]
        pieces = {k: _part(k, table[first][k], activation_varying) for k in label_keys}
        parts = {k: p for k, p in pieces.items() if p}
        group_key = {k: settings[first][k] for k in order if k in settings[first]}
        label = ", ".join(parts.values())
        if not label:
            run = runs[first]
            label = run.point_label or str(run.recipe.get("name") or run.path.name)
        point = {k: v for k, v in runs[first].point.items() if not _ignored(k)}
        members = sorted((runs[i] for i in indices), key=lambda r: (_sort_token(r.seed), str(r.path)))
        groups.append(Group(label=label, runs=members, key=group_key, point=point, settings=settings[first], parts=parts))
    groups.sort(key=lambda g: tuple(_sort_token(normalise(g.settings.get(k, _MISSING))) for k in order))
    seen: dict[str, int] = {}
    for g in groups:
        seen[g.label] = seen.get(g.label, 0) + 1
        if seen[g.label] > 1:
            g.label = f"{g.label} #{seen[g.label]}"
    return groups
