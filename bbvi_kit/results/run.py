"""One run directory as read from disk: the one reader the figures, the plots and the report share.

A run directory holds ``recipe.yaml`` (the resolved recipe), ``run.json`` (status, seed, sweep
point), ``metrics.csv``, ``eval.csv`` and ``diagnostics/<name>.csv`` (:mod:`bbvi_kit.runs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import yaml

from bbvi_kit.errors import InputError
from bbvi_kit.results.table import Table, read_mapping, read_table

__all__ = ["Run", "load_run", "looks_like_run"]


@dataclass
class Run:
    """A run directory: its resolved recipe, ``run.json``, the rows of ``metrics.csv`` and
    ``eval.csv`` and of each ``diagnostics/<name>.csv`` read (see :class:`Table`), and the text
    of ``recipe.yaml``."""

    path: Path
    recipe: dict[str, Any]
    info: dict[str, Any]
    metrics: Table
    evals: Table
    diagnostics: dict[str, Table] = field(default_factory=dict)
    recipe_text: str = ""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def full(self) -> Table:
        """``diagnostics/full_gradient.csv`` (empty when the run has none)."""
        return self.diagnostics.get("full_gradient", Table())

    @property
    def seed(self) -> Any:
        seed = self.info.get("seed")
        return seed if seed is not None else (self.recipe.get("training") or {}).get("seed")

    @property
    def status(self) -> str:
        return str(self.info.get("status", "unknown"))

    @property
    def point(self) -> dict[str, Any]:
        point = self.info.get("point")
        return dict(point) if isinstance(point, Mapping) else {}

    @property
    def point_label(self) -> str:
        return str(self.info.get("point_label") or "")

    @property
    def num_particles(self) -> Any:
        return self.setting("objective", "num_particles", 1)

    def setting(self, section: str, option: str, default: Any = None) -> Any:
        """``section.option`` of the resolved recipe."""
        body = self.recipe.get(section)
        return body.get(option, default) if isinstance(body, Mapping) else default

    def diagnostic_option(self, name: str, option: str, default: Any) -> Any:
        """Option ``option`` of diagnostic ``name`` in the resolved recipe (``default`` if unset)."""
        for entry in self.recipe.get("diagnostics") or []:
            if isinstance(entry, Mapping) and entry.get("name") == name and entry.get(option) is not None:
                return entry[option]
        return default

    def column(self, table: str, key: str) -> np.ndarray:
        """Column ``key`` of ``metrics``, ``evals`` or ``full`` (``table``) as a float array (NaN if absent)."""
        return getattr(self, table).column(key)

    def has_column(self, table: str, key: str) -> bool:
        rows = getattr(self, table)
        return len(rows) > 0 and key in rows.columns


def looks_like_run(path: Path) -> bool:
    """Whether ``path`` holds ``run.json`` or ``metrics.csv`` (a run directory, perhaps just begun)."""
    return (path / "run.json").is_file() or (path / "metrics.csv").is_file()


def load_run(path: Path, notes: list[str] | None = None, diagnostics: Iterable[str] | None = None,
             metrics: Table | None = None) -> Run:
    """Read the run directory ``path``.

    ``notes``: where a file that cannot be read is noted (and read as empty); without it, such a
    file is an :class:`InputError`. ``diagnostics``: the diagnostics to read (by name; default:
    every ``diagnostics/*.csv``, hidden files aside). ``metrics``: ``metrics.csv`` when the caller
    has read it already.
    """
    def guarded(read: Callable[..., Any], empty: Callable[[], Any]) -> Any:
        if notes is None:
            return read()
        try:
            return read()
        except InputError as exc:
            notes.append(str(exc))
            return empty()

    folder = path / "diagnostics"
    if diagnostics is None:
        files = sorted(f for f in folder.glob("*.csv") if not f.name.startswith(".")) if folder.is_dir() else []
    else:
        files = [folder / f"{name}.csv" for name in diagnostics if (folder / f"{name}.csv").is_file()]

    def read_diagnostics() -> dict[str, Table]:
        return {f.stem: guarded(lambda f=f: read_table(f), Table) for f in files}

    tables = read_diagnostics() if notes is not None else {}  # the report notes them first
    if metrics is None:
        metrics = guarded(lambda: read_table(path / "metrics.csv"), Table) if notes is None else None
    recipe_file = path / "recipe.yaml"
    recipe = guarded(lambda: read_mapping(recipe_file, yaml.safe_load), dict)
    info = guarded(lambda: read_mapping(path / "run.json", json.loads), dict)
    if metrics is None:
        metrics = guarded(lambda: read_table(path / "metrics.csv"), Table)
    evals = guarded(lambda: read_table(path / "eval.csv"), Table)
    if notes is None:
        tables = read_diagnostics()
    return Run(path=path, recipe=recipe, info=info, metrics=metrics, evals=evals, diagnostics=tables,
               recipe_text=recipe_file.read_text(encoding="utf-8") if recipe_file.is_file() else "")
