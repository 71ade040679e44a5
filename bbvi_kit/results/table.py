"""The CSV logs of a run directory as float columns, and the small mappings beside them.

:class:`Table` holds ``metrics.csv``, ``eval.csv`` or ``diagnostics/<name>.csv`` (read with
:func:`bbvi_kit.runs.read_csv_columns`, the one reader of bbvi-kit's CSV files);
:func:`read_mapping` reads ``run.json``, ``recipe.yaml`` or ``sweep.json``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

from bbvi_kit.errors import InputError
from bbvi_kit.runs import read_csv_columns

__all__ = ["Table", "finite", "last_finite", "read_mapping", "read_table"]


class Table(Sequence[dict[str, float]]):
    """The rows of ``metrics.csv`` or ``eval.csv`` held as float columns (empty cells NaN).

    It is a sequence of rows: ``table[i]`` is row ``i`` as a dict, as :func:`bbvi_kit.runs.read_csv`
    gives it; ``table.column(key)`` is a whole column as an array (NaN when the column is absent).
    """

    def __init__(self, columns: Mapping[str, np.ndarray] | None = None) -> None:
        self.columns: dict[str, np.ndarray] = dict(columns or {})
        self._length = len(next(iter(self.columns.values()))) if self.columns else 0

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return {key: float(values[index]) for key, values in self.columns.items()}

    def column(self, key: str) -> np.ndarray:
        """Column ``key`` as a float array; NaN everywhere when the table has no such column."""
        return self.columns[key] if key in self.columns else np.full(len(self), math.nan)


def read_table(path: Path) -> Table:
    """A CSV log as float columns (empty cells NaN); an empty :class:`Table` when the file is
    missing or has no rows. A last line without its line end (a run still writing) is dropped; a
    bad line anywhere else is an :class:`InputError` naming the file."""
    if not path.is_file():
        return Table()
    columns = read_csv_columns(path)
    if not columns or not len(next(iter(columns.values()))):
        return Table()
    # runs written before issue 13 named the mini-batch columns grad_norm_sq*: read them under today's names
    return Table({f"minibatch_{name}" if name.startswith("grad_norm_sq") else name: values
                  for name, values in columns.items()})


def read_mapping(path: Path, loader: Callable[[str], Any]) -> dict[str, Any]:
    """The mapping in ``path`` parsed with ``loader`` (``json.loads``, ``yaml.safe_load``); ``{}``
    when the file is missing or holds something else; an :class:`InputError` when it cannot be parsed."""
    if not path.is_file():
        return {}
    try:
        data = loader(path.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read it ({' '.join(str(exc).split())})") from exc
    return data if isinstance(data, dict) else {}


def finite(values: Any) -> np.ndarray:
    """The finite values of ``values`` as a float array."""
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


def last_finite(table: Table, column: str) -> tuple[float, float] | None:
    """(step, value) of the last row where ``column`` is finite; ``None`` when there is none."""
    if column not in table.columns or not len(table):
        return None
    values, steps = table.column(column), table.column("step")
    ok = np.flatnonzero(np.isfinite(values))
    if not len(ok):
        return None
    return float(steps[ok[-1]]), float(values[ok[-1]])
