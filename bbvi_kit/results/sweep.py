"""One sweep directory as read from disk: ``sweep.json``, ``summary.csv``, ``sweep.yaml`` and its
run directories (:func:`load_sweep`)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bbvi_kit.errors import InputError
from bbvi_kit.results.run import Run, load_run, looks_like_run
from bbvi_kit.results.table import read_mapping

__all__ = ["Sweep", "SweepPoint", "load_sweep", "looks_like_sweep"]


def looks_like_sweep(path: Path) -> bool:
    """Whether ``path`` holds ``sweep.json`` or ``summary.csv``."""
    return (path / "sweep.json").is_file() or (path / "summary.csv").is_file()


@dataclass
class SweepPoint:
    """A sweep point: its label, values, runs (by directory name) and summary rows."""

    index: int
    label: str
    point: dict[str, Any]
    dirs: list[str] = field(default_factory=list)
    rows: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Sweep:
    """A sweep directory: ``sweep.json`` (``info``), ``sweep.yaml`` (``text``), the columns and
    rows of ``summary.csv`` (as text), its points and its runs."""

    path: Path
    info: dict[str, Any]
    text: str
    columns: list[str]
    rows: list[dict[str, str]]
    points: list[SweepPoint]
    runs: list[Run]


def load_sweep(path: Path, notes: list[str]) -> Sweep:
    """Read the sweep directory ``path`` and its runs; files that cannot be read go to ``notes``."""
    try:
        info = read_mapping(path / "sweep.json", json.loads)
    except InputError as exc:
        notes.append(str(exc))
        info = {}
    columns: list[str] = []
    rows: list[dict[str, str]] = []
    summary = path / "summary.csv"
    if summary.is_file():
        with open(summary, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            rows = [dict(r) for r in reader]
    text = (path / "sweep.yaml").read_text(encoding="utf-8") if (path / "sweep.yaml").is_file() else ""

    points: list[SweepPoint] = []
    for i, p in enumerate(info.get("points") or []):
        if isinstance(p, Mapping):
            points.append(SweepPoint(int(p.get("index", i)), str(p.get("label") or ""), dict(p.get("point") or {})))
    by_index = {p.index: p for p in points}
    for r in info.get("runs") or []:
        if isinstance(r, Mapping) and r.get("point_index") in by_index:
            by_index[r["point_index"]].dirs.append(str(r.get("dir")))
    if not points and rows:  # no sweep.json: the point is the columns before 'seed'
        axis_columns = columns[: columns.index("seed")] if "seed" in columns else []
        seen: dict[str, SweepPoint] = {}
        for row in rows:
            key = json.dumps([row.get(c) for c in axis_columns])
            if key not in seen:
                label = ", ".join(f"{c}={row.get(c)}" for c in axis_columns)
                seen[key] = SweepPoint(len(seen), label, {c: row.get(c) for c in axis_columns})
            seen[key].dirs.append(str(row.get("run_dir")))
        points = list(seen.values())
    where = {d: p for p in points for d in p.dirs}
    for row in rows:
        point = where.get(str(row.get("run_dir")))
        if point is not None:
            point.rows.append(row)

    dirs = [d for p in points for d in p.dirs]
    for row in rows:  # runs summary.csv knows and sweep.json does not
        if row.get("run_dir") and row["run_dir"] not in dirs:
            dirs.append(row["run_dir"])
    if not dirs:
        dirs = sorted(d.name for d in path.iterdir() if d.is_dir() and looks_like_run(d))
    runs = [load_run(path / d, notes) for d in dirs if looks_like_run(path / d)]
    return Sweep(path, info, text, columns, rows, points, runs)
