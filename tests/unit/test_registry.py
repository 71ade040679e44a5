"""Plugin registries: the three ways a model plugin arrives, duplicates, unknown names, bad files.

Each way of registering a custom model (a file named in the recipe, an installed package's entry
point, a module path) is tested end to end: the plugin is listed by ``bbvi-kit plugins`` with
its source, and ``bbvi-kit run`` trains it for a few iterations (the installed package's, in a
fresh interpreter, in ``tests/integration/test_plugin_entry_points.py``).

Unit tests use fresh :class:`Registry` objects so the global registries stay clean; whatever is
registered into the global ``models`` registry gets a unique name and happens inside a test, never
at import time (other test modules parametrize over ``models.names()`` at collection).
"""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path
from typing import Callable

import pytest
import yaml

from bbvi_kit import BBVIModel, InputError
from bbvi_kit.registry import Registry, load_plugin_source, models, register_model
from tests.support.cli import run_dir_from
from tests.support.plugin_packages import assert_trained, listed_source, make_distribution, write_recipe


# --------------------------------------------------------------------------------------------
# helpers


def unique(prefix: str) -> str:
    """A plugin / module name no other test uses (the global registries live for the session)."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# A model subclassing BBVIModel directly, with its own Options (the README's plugin pattern).
TINY_MODEL_SRC = '''
import pyro
import pyro.distributions as dist
import torch
from pydantic import Field

from bbvi_kit import BBVIModel, PluginOptions, register_model


@register_model({name!r})
class TinyModel(BBVIModel):
    class Options(PluginOptions):
        latent_dim: int = Field(2, ge=1)
        tag: str = "tiny"

    def __init__(self, data, **options):
        super().__init__(data, **options)
        size = int(torch.tensor(data.shape).prod())
        self.enc = torch.nn.Linear(size, 2 * self.options.latent_dim)
        self.dec = torch.nn.Linear(self.options.latent_dim, size)

    def model(self, x):
        x = x.flatten(1)
        with pyro.plate("data", x.shape[0], dim=-1):
            prior = dist.Normal(x.new_zeros(x.shape[0], self.options.latent_dim), 1.0).to_event(1)
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(torch.sigmoid(self.dec(z)), 0.1).to_event(1), obs=x)

    def guide(self, x):
        x = x.flatten(1)
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, log_scale = self.enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.clamp(-5, 5).exp()).to_event(1))
'''

# A model subclassing the built-in Gaussian VAE, registered by the decorator.
GAUSSIAN_SUBCLASS_SRC = '''
from bbvi_kit import register_model
from bbvi_kit_plugins.gaussian_vae import GaussianVAE


@register_model({name!r})
class MyVAE(GaussianVAE):
    """The Gaussian VAE under another name."""
'''


def test_plugin_file_named_in_recipe_is_listed_with_its_file_and_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_run: Callable
) -> None:
    name = unique("my_vae")
    plugin = tmp_path / "recipes" / "plugin_code" / "my_plugins.py"
    plugin.parent.mkdir(parents=True)
    plugin.write_text(TINY_MODEL_SRC.format(name=name))
    recipe = write_recipe(tmp_path / "recipes" / "custom.yaml", {"name": name},
                          plugins=["plugin_code/my_plugins.py"])
    # The plugin path is relative to the recipe file, not to the working directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert name not in models, "plugin code must not run before a recipe names its file"

    code, out, err = cli_run(["validate", recipe])
    assert code == 0, err
    resolved = yaml.safe_load(out)
    assert resolved["plugins"] == [str(plugin.resolve())]  # recorded absolute: re-runnable anywhere
    assert resolved["model"] == {"name": name, "latent_dim": 2, "tag": "tiny"}  # its own defaults

    code, out, err = cli_run(["plugins"])
    assert code == 0, err
    assert listed_source(out, "model", name) == f"file {plugin.resolve()}"

    code, out, err = cli_run(["run", recipe, "--out", tmp_path / "runs"])
    assert code == 0, err
    run_dir = run_dir_from(out)
    assert run_dir.parent == tmp_path / "runs" / "custom"
    assert_trained(run_dir, iterations=3, model_name=name)


# --------------------------------------------------------------------------------------------
# (b) an installed package's entry point (a fake distribution found through PYTHONPATH; listed
# and trained in a fresh interpreter: tests/integration/test_plugin_entry_points.py)


def test_entry_points_are_read_from_sys_path_and_can_be_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, in-process, on fresh registries: the env var also makes ``get`` refuse the name."""
    group = f"bbvi_kit.{unique('regtest_group')}"
    module = unique("regtest_ep_module")
    dist = unique("regtest-ep-dist")
    site = make_distribution(
        tmp_path / "site", dist, {f"{module}.py": "class Thing:\n    pass\n"},
        f"[{group}]\nthing = {module}:Thing\n",
    )
    monkeypatch.syspath_prepend(str(site))

    monkeypatch.setenv("BBVI_KIT_DISABLE_ENTRY_POINTS", "1")
    disabled = Registry("model", group)
    assert disabled.names() == []
    with pytest.raises(InputError, match="unknown model plugin 'thing'"):
        disabled.get("thing")

    monkeypatch.setenv("BBVI_KIT_DISABLE_ENTRY_POINTS", "0")
    enabled = Registry("model", group)
    assert enabled.names() == ["thing"]
    assert module not in sys.modules, "reading entry points must not import them"
    (entry,) = enabled.entries()
    assert entry.source == f"entry point {group} ({dist})"
    assert enabled.get("thing") is sys.modules[module].Thing


def test_entry_point_at_the_defining_module_may_also_use_the_decorator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's pattern: ``tiny_vae = "pkg.vae_plugins:TinyVAE"`` plus ``@register_model``."""
    group = f"bbvi_kit.{unique('regtest_group')}"
    holder, module = unique("regtest_holder"), unique("regtest_direct")
    site = make_distribution(
        tmp_path / "site", unique("regtest-direct-dist"),
        {
            f"{holder}.py": f"from bbvi_kit.registry import Registry\nREG = Registry('model', {group!r})\n",
            f"{module}.py": f"from {holder} import REG\n\n@REG.register('thing')\nclass Thing:\n    pass\n",
        },
        f"[{group}]\nthing = {module}:Thing\n",
    )
    monkeypatch.syspath_prepend(str(site))
    registry = importlib.import_module(holder).REG
    assert registry.get("thing").__qualname__ == "Thing"
    assert registry.get("thing") is sys.modules[module].Thing


def test_entry_point_naming_a_reexported_decorated_class_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    group = f"bbvi_kit.{unique('regtest_group')}"
    holder, package = unique("regtest_holder"), unique("regtest_pkg")
    site = make_distribution(
        tmp_path / "site", unique("regtest-reexport-dist"),
        {
            f"{holder}.py": f"from bbvi_kit.registry import Registry\nREG = Registry('model', {group!r})\n",
            f"{package}/__init__.py": "from .impl import Thing\n",
            f"{package}/impl.py": f"from {holder} import REG\n\n@REG.register('thing')\nclass Thing:\n    pass\n",
        },
        f"[{group}]\nthing = {package}:Thing\n",
    )
    monkeypatch.syspath_prepend(str(site))
    registry = importlib.import_module(holder).REG
    assert registry.get("thing") is sys.modules[f"{package}.impl"].Thing


def test_entry_point_and_decorator_naming_different_classes_is_a_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module registers ``Other`` under the name its entry point gives to ``Thing``."""
    group = f"bbvi_kit.{unique('regtest_group')}"
    holder, module = unique("regtest_holder"), unique("regtest_conflict")
    site = make_distribution(
        tmp_path / "site", unique("regtest-conflict-dist"),
        {
            f"{holder}.py": f"from bbvi_kit.registry import Registry\nREG = Registry('model', {group!r})\n",
            f"{module}.py": (f"from {holder} import REG\n\n@REG.register('thing')\nclass Other:\n    pass\n\n"
                             "class Thing:\n    pass\n"),
        },
        f"[{group}]\nthing = {module}:Thing\n",
    )
    monkeypatch.syspath_prepend(str(site))
    registry = importlib.import_module(holder).REG
    with pytest.raises(InputError) as info:
        registry.get("thing")
    message = str(info.value)
    assert "duplicate model plugin name 'thing'" in message
    assert f"{module}:Thing" in message and f"module {module}" in message


# --------------------------------------------------------------------------------------------
# (c) a module path importable from sys.path


def test_module_path_plugin_is_listed_with_its_module_and_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_run: Callable
) -> None:
    name, package = unique("my_mod_vae"), unique("my_mod")
    root = tmp_path / "modroot"
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    module_file = root / package / "plugins.py"
    module_file.write_text(GAUSSIAN_SUBCLASS_SRC.format(name=name))
    monkeypatch.syspath_prepend(str(root))
    recipe = write_recipe(tmp_path / "mod.yaml", {"name": name, "hidden": [8], "latent_dim": 2},
                          plugins=[f"{package}.plugins"])
    assert name not in models

    code, out, err = cli_run(["validate", recipe])
    assert code == 0, err
    resolved = yaml.safe_load(out)
    assert resolved["plugins"] == [f"{package}.plugins"]
    assert resolved["model"]["name"] == name and resolved["model"]["decoder_scale"] == 0.1

    code, out, err = cli_run(["plugins"])
    assert code == 0, err
    assert listed_source(out, "model", name) == f"module {package}.plugins ({module_file})"

    code, out, err = cli_run(["run", recipe, "--out", tmp_path / "runs"])
    assert code == 0, err
    assert_trained(run_dir_from(out), iterations=3, model_name=name)


# --------------------------------------------------------------------------------------------
# duplicates


class _First(BBVIModel):
    pass


class _Second(BBVIModel):
    pass


def test_registering_a_different_object_under_a_taken_name_names_both_sources() -> None:
    registry: Registry = Registry("model", "bbvi_kit.test_group")
    registry.add("my_vae", _First, source="file first.py")
    with pytest.raises(InputError) as info:
        registry.add("my_vae", _Second, source="file second.py")
    message = str(info.value)
    assert "duplicate model plugin name 'my_vae'" in message
    assert "file first.py" in message and "file second.py" in message
    assert registry.get("my_vae") is _First  # the first registration stands


def test_duplicate_through_the_decorator_names_the_defining_modules() -> None:
    registry: Registry = Registry("model", "bbvi_kit.test_group")
    registry.register("my_vae")(_First)
    with pytest.raises(InputError) as info:
        registry.register("my_vae")(_Second)
    assert str(info.value).count(f"module {__name__}") == 2


def test_registering_the_same_object_again_is_not_an_error() -> None:
    registry: Registry = Registry("model", "bbvi_kit.test_group")
    registry.register("my_vae")(_First)
    assert registry.register("my_vae")(_First) is _First
    registry.add("my_vae", _First)
    assert registry.names() == ["my_vae"]
    assert registry.get("my_vae") is _First


def test_a_different_class_cannot_take_a_builtin_name() -> None:
    from bbvi_kit_plugins.gaussian_vae import GaussianVAE

    class Impostor(BBVIModel):
        pass

    with pytest.raises(InputError) as info:
        register_model("gaussian_vae")(Impostor)
    message = str(info.value)
    assert "duplicate model plugin name 'gaussian_vae'" in message
    assert "entry point bbvi_kit.models (bbvi-kit)" in message  # where the real one came from
    assert f"module {__name__}" in message  # where the impostor came from
    assert models.get("gaussian_vae") is GaussianVAE
    register_model("gaussian_vae")(GaussianVAE)  # the real class again: fine


@pytest.mark.parametrize("bad", ["", None, 3])
def test_plugin_names_must_be_non_empty_strings(bad: object) -> None:
    registry: Registry = Registry("model", "bbvi_kit.test_group")
    with pytest.raises(InputError, match="non-empty string"):
        registry.add(bad, _First)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# unknown names


def test_unknown_name_lists_the_known_names_and_the_closest_match() -> None:
    registry: Registry = Registry("model", "bbvi_kit.test_group")
    registry.add("gaussian_vae", _First)
    registry.add("linear_vae", _Second)
    with pytest.raises(InputError) as info:
        registry.get("gausian_vae", key="r.yaml: model.name")
    assert str(info.value) == (
        "r.yaml: model.name: unknown model plugin 'gausian_vae'; known: gaussian_vae, linear_vae; "
        "did you mean 'gaussian_vae'?"
    )


def test_unknown_name_in_the_global_registry_lists_every_builtin() -> None:
    with pytest.raises(InputError) as info:
        models.get("gausian_vae")
    message = str(info.value)
    assert message.endswith("did you mean 'gaussian_vae'?")
    known = message.split("known: ", 1)[1].split(";")[0].split(", ")
    assert {"gaussian_vae", "beta_vae", "iwae", "linear_vae", "bayesian_logistic_regression"} <= set(known)


def test_unknown_name_without_a_close_match_gives_no_suggestion() -> None:
    registry: Registry = Registry("model", "bbvi_kit.test_group")
    registry.add("gaussian_vae", _First)
    with pytest.raises(InputError) as info:
        registry.get("zzz")
    assert "did you mean" not in str(info.value)
    assert "known: gaussian_vae" in str(info.value)
    with pytest.raises(InputError, match=r"known: \(none\)"):
        Registry("model", "bbvi_kit.test_group").get("zzz")


# --------------------------------------------------------------------------------------------
# plugin files and modules that cannot be used


def test_missing_plugin_file_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_plugin_source("sub/missing_plugin.py", base_dir=tmp_path, key="r.yaml: plugins.0")
    assert str(info.value) == f"r.yaml: plugins.0: plugin file not found: {tmp_path / 'sub' / 'missing_plugin.py'}"


@pytest.mark.parametrize("body, expected", [
    ("raise RuntimeError('kaboom')\n", "RuntimeError: kaboom"),
    ("def broken(:\n    pass\n", "SyntaxError"),
    ("import regtest_no_such_dependency_xyz\n", "ModuleNotFoundError"),
])
def test_plugin_file_that_fails_to_import_is_a_one_line_error_naming_the_file(
    tmp_path: Path, body: str, expected: str
) -> None:
    plugin = tmp_path / "bad_plugin.py"
    plugin.write_text(body)
    with pytest.raises(InputError) as info:
        load_plugin_source("bad_plugin.py", base_dir=tmp_path, key="r.yaml: plugins.0")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"r.yaml: plugins.0: plugin file {plugin} failed to import")
    assert expected in message


def test_missing_and_failing_plugin_modules_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = unique("regtest_missing_module")
    with pytest.raises(InputError, match=rf"plugins\.0: plugin module '{missing}\.plugins' not found"):
        load_plugin_source(f"{missing}.plugins", key="plugins.0")
    failing = unique("regtest_failing_module")
    (tmp_path / f"{failing}.py").write_text("raise ValueError('broken plugin module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InputError) as info:
        load_plugin_source(failing, key="plugins.0")
    assert str(info.value) == (
        f"plugins.0: plugin module '{failing}' failed to import: ValueError: broken plugin module"
    )


def test_a_plugin_file_is_imported_once_however_it_is_spelled(tmp_path: Path) -> None:
    name = unique("my_vae_once")
    counter = tmp_path / "count.txt"
    plugin = tmp_path / "pkg" / "once.py"
    plugin.parent.mkdir()
    plugin.write_text(
        f"with open({str(counter)!r}, 'a') as fh:\n    fh.write('x')\n" + GAUSSIAN_SUBCLASS_SRC.format(name=name)
    )
    first = load_plugin_source("pkg/once.py", base_dir=tmp_path)
    second = load_plugin_source(str(tmp_path / "pkg" / ".." / "pkg" / "once.py"))
    assert first == second == str(plugin.resolve())
    assert counter.read_text() == "x"
    assert name in models


def _two_distributions_claiming_one_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, str]:
    group = f"bbvi_kit.{unique('regtest_group')}"
    first, second = unique("regtest-first"), unique("regtest-second")
    for dist, module in ((first, unique("regtest_a")), (second, unique("regtest_b"))):
        make_distribution(tmp_path / "site", dist, {f"{module}.py": "class Thing:\n    pass\n"},
                          f"[{group}]\nthing = {module}:Thing\nother_{module} = {module}:Thing\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return group, first, second


def test_two_distributions_claiming_one_name_is_an_error_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group, first, second = _two_distributions_claiming_one_name(tmp_path, monkeypatch)
    with pytest.raises(InputError) as info:
        Registry("model", group).names()
    message = str(info.value)
    assert "duplicate model plugin name 'thing'" in message
    assert f"({first})" in message and f"({second})" in message


def test_a_duplicate_entry_point_error_is_raised_every_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    group, _, _ = _two_distributions_claiming_one_name(tmp_path, monkeypatch)
    registry: Registry = Registry("model", group)
    with pytest.raises(InputError):
        registry.names()
    with pytest.raises(InputError, match="duplicate model plugin name 'thing'"):
        registry.names()
