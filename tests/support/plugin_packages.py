"""Plugins as a user ships them: recipes that name them, a fake installed distribution with
entry points, and what ``bbvi-kit plugins`` and a finished run show of them. Shared by
``tests/unit/test_registry.py`` (in-process) and ``tests/integration/test_plugin_entry_points.py``
(fresh interpreters)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import yaml


def listed_source(plugins_output: str, kind: str, name: str) -> str | None:
    """The source column of ``name`` under ``KINDs:`` in ``bbvi-kit plugins`` output, or None."""
    section = None
    for line in plugins_output.splitlines():
        if not line.startswith(" "):
            section = line.rstrip(":")
            continue
        fields = line.split(None, 1)
        if section == f"{kind}s" and fields and fields[0] == name:
            return fields[1].strip() if len(fields) > 1 else ""
    return None


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def assert_trained(run_dir: Path, iterations: int, model_name: str) -> None:
    """The run directory of a completed run of ``model_name`` with ``iterations`` finite steps."""
    rows = metrics_rows(run_dir)
    assert [int(r["step"]) for r in rows] == list(range(1, iterations + 1))
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert all(float(r["minibatch_grad_norm_sq"]) > 0 for r in rows), "the plugin's parameters got no gradient"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed"
    assert info["steps_done"] == iterations
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["model"]["name"] == model_name


def write_recipe(path: Path, model: dict, plugins: list[str] | None = None, iterations: int = 3) -> Path:
    recipe = {
        "name": "custom",
        "model": model,
        "training": {"batch_size": 32, "iterations": iterations, "progress": False, "device": "cpu"},
    }
    if plugins is not None:
        recipe["plugins"] = plugins
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def make_distribution(site: Path, dist_name: str, module_files: dict[str, str], entry_points: str) -> Path:
    """A fake installed distribution in ``site``: modules plus a ``*.dist-info`` folder."""
    site.mkdir(parents=True, exist_ok=True)
    for rel, text in module_files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    info = site / f"{dist_name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    return site


# --------------------------------------------------------------------------------------------
# (a) a decorator in a Python file named in the recipe's plugins: list
