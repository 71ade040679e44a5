"""Third-party model plugins in a fresh interpreter: an installed distribution's entry point is
listed without being imported and trains; ``BBVI_KIT_DISABLE_ENTRY_POINTS`` and
``--no-entry-points`` hide it (and never import it). In-process registry tests:
``tests/unit/test_registry.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.cli import bbvi_subprocess, run_dir_from
from tests.support.plugin_packages import assert_trained, listed_source, make_distribution, write_recipe

EP_MODULE_SRC = '''
import os

from bbvi_kit_plugins.gaussian_vae import GaussianVAE

# Records every import, so tests can tell that listing plugins imports nothing.
if os.environ.get("MY_BBVI_PLUGIN_MARKER"):
    with open(os.environ["MY_BBVI_PLUGIN_MARKER"], "a") as fh:
        fh.write("imported\\n")


class MyVAE(GaussianVAE):
    """A third-party model: the Gaussian VAE under another name."""
'''


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Path:
    """A directory that, on PYTHONPATH, holds an 'installed' distribution my-bbvi-plugin."""
    return make_distribution(
        tmp_path / "site", "my-bbvi-plugin", {"my_bbvi_plugin.py": EP_MODULE_SRC},
        "[bbvi_kit.models]\nmy_ep_vae = my_bbvi_plugin:MyVAE\n",
    )


def test_entry_point_plugin_is_listed_without_import_and_trains(tmp_path: Path, installed_plugin: Path) -> None:
    marker = tmp_path / "imports.log"
    env = {"PYTHONPATH": str(installed_plugin), "MY_BBVI_PLUGIN_MARKER": str(marker)}

    listing = bbvi_subprocess(["plugins"], cwd=tmp_path, env=env)
    assert listing.returncode == 0, listing.stderr
    assert listed_source(listing.stdout, "model", "my_ep_vae") == "entry point bbvi_kit.models (my-bbvi-plugin)"
    assert listed_source(listing.stdout, "model", "gaussian_vae") == "entry point bbvi_kit.models (bbvi-kit)"
    assert not marker.exists(), "listing plugins must not import a third-party plugin's module"

    recipe = write_recipe(tmp_path / "ep.yaml", {"name": "my_ep_vae", "hidden": [8], "latent_dim": 2})
    result = bbvi_subprocess(["run", recipe, "--out", tmp_path / "runs"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "imported\n"
    run_dir = run_dir_from(result.stdout)
    assert_trained(run_dir, iterations=3, model_name="my_ep_vae")
    resolved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert resolved["model"]["hidden"] == [8] and resolved["model"]["likelihood"] == "gaussian"


def test_disable_entry_points_env_hides_third_party_plugins_only(tmp_path: Path, installed_plugin: Path) -> None:
    env = {"PYTHONPATH": str(installed_plugin), "BBVI_KIT_DISABLE_ENTRY_POINTS": "1"}
    listing = bbvi_subprocess(["plugins"], cwd=tmp_path, env=env)
    assert listing.returncode == 0, listing.stderr
    assert listed_source(listing.stdout, "model", "my_ep_vae") is None
    for builtin in ("gaussian_vae", "beta_vae", "iwae", "linear_vae", "bayesian_logistic_regression"):
        assert listed_source(listing.stdout, "model", builtin) == "entry point bbvi_kit.models (bbvi-kit)"


def test_no_entry_points_flag_hides_third_party_plugins_and_never_imports_them(
    tmp_path: Path, installed_plugin: Path
) -> None:
    marker = tmp_path / "imports.log"
    env = {"PYTHONPATH": str(installed_plugin), "MY_BBVI_PLUGIN_MARKER": str(marker)}
    listing = bbvi_subprocess(["--no-entry-points", "plugins"], cwd=tmp_path, env=env)
    assert listing.returncode == 0, listing.stderr
    assert listed_source(listing.stdout, "model", "my_ep_vae") is None
    assert listed_source(listing.stdout, "model", "gaussian_vae") == "entry point bbvi_kit.models (bbvi-kit)"
    recipe = write_recipe(tmp_path / "ep.yaml", {"name": "my_ep_vae", "hidden": [8], "latent_dim": 2})
    result = bbvi_subprocess(["--no-entry-points", "validate", recipe], cwd=tmp_path, env=env)
    assert result.returncode == 2 and "unknown model plugin 'my_ep_vae'" in result.stderr
    assert not marker.exists(), "a disabled entry point's module must never be imported"
