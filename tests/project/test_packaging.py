"""What `pip install .` ships: every subpackage, and plugins/ under its namespaced name."""

from __future__ import annotations

import tomllib

from tests.support import REPO



def test_every_subpackage_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "bbvi_kit").rglob("__init__.py")
    }
    assert on_disk <= listed, f"missing from pyproject packages: {sorted(on_disk - listed)}"
    assert config["package-dir"]["bbvi_kit_plugins"] == "plugins"
    assert "plugins" not in listed  # never a generic top-level `plugins` package


def test_builtin_model_plugins_are_entry_points_of_this_distribution() -> None:
    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    models = entry_points["bbvi_kit.models"]
    plugin_files = {p.stem for p in (REPO / "plugins").glob("*.py") if p.stem != "__init__"}
    assert set(models) == plugin_files
    for name, target in models.items():
        assert target.startswith(f"bbvi_kit_plugins.{name}:")
