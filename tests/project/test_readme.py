"""The README documents what the code does: its plugin example runs, and every option is listed."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from bbvi_kit.engine import TrainingOptions
from bbvi_kit.recipe import OutputOptions, resolve
from bbvi_kit.registry import REGISTRIES
from bbvi_kit.runner import run_recipe
from tests.support import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_the_two_setup_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1).strip().splitlines()
    assert first_block[0].endswith("bbvi-kit run recipes/quickstart.yaml")
    assert first_block[1].endswith(".venv/bin/python -m pytest")
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install -q -c constraints.txt -e '.[test]'" in ci and ".venv/bin/python -m pytest" in ci


def test_readme_plugin_example_registers_and_trains(tmp_path: Path) -> None:
    (block,) = [b for b in python_blocks() if "@register_model" in b]
    plugin_file = tmp_path / "tiny_vae_readme.py"
    plugin_file.write_text(block.replace('"tiny_vae"', '"tiny_vae_readme"'))
    recipe = {
        "plugins": [str(plugin_file)],
        "model": {"name": "tiny_vae_readme"},
        "training": {"batch_size": 16, "iterations": 4, "progress": False, "device": "cpu"},
    }
    history = run_recipe(resolve(recipe), tmp_path / "runs")
    assert len(history.metrics) == 4
    assert all(math.isfinite(r["loss"]) for r in history.metrics)
    assert history.metrics[0]["minibatch_grad_norm_sq_phi"] > 0 and history.metrics[0]["minibatch_grad_norm_sq_theta"] > 0


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_builtin_option_is_documented(kind: str) -> None:
    registry = REGISTRIES[kind]
    for entry in registry.entries():
        if not entry.source.startswith(("built-in", "entry point bbvi_kit.models (bbvi-kit)")):
            continue
        assert f"`{entry.name}`" in README, f"{kind} plugin {entry.name} is not in the README"
        for field in registry.get(entry.name).Options.model_fields:
            assert f"`{field}`" in README, f"option {field} of {kind} plugin {entry.name} is not in the README"


def test_every_training_and_output_option_is_documented() -> None:
    for field in [*TrainingOptions.model_fields, *OutputOptions.model_fields]:
        assert f"| `{field}` |" in README, field
