"""What a run recorded, in memory: the rows the callbacks also write to the run directory."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class History:
    """The rows of ``metrics.csv``, ``eval.csv`` and ``diagnostics/<name>.csv`` as dicts."""

    metrics: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    diagnostics: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # name -> rows
    run_dir: str | None = None
    warning: str | None = None  # what a completed run's results should be read with (see runner)
