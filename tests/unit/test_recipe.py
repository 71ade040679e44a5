"""Recipes: overrides, defaults, validation errors (one line, naming the file and the key), round trip."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from bbvi_kit import InputError, cli
from bbvi_kit.engine import TrainingOptions
from bbvi_kit.recipe import OutputOptions, PLUGIN_SECTIONS, apply_overrides, load_recipe, load_yaml, resolve
from bbvi_kit.registry import REGISTRIES
from tests.support import REPO

QUICKSTART = REPO / "recipes" / "quickstart.yaml"

MINIMAL = "model: {name: gaussian_vae}\n"


# --------------------------------------------------------------------------------------------
# helpers


def write(tmp_path: Path, text: str | bytes, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def input_error(path: Path, overrides: tuple[str, ...] = ()) -> str:
    """The message of the InputError that loading ``path`` raises; checks it is one line."""
    with pytest.raises(InputError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert "\n" not in message, f"error is not one line: {message!r}"
    return message


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are leaves."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


# --------------------------------------------------------------------------------------------
# overrides


def test_overrides_change_exactly_the_named_values() -> None:
    base = flatten(load_recipe(QUICKSTART).as_dict())
    changed = flatten(load_recipe(QUICKSTART, ["optimizer.lr=1e-4", "objective.num_particles=5"]).as_dict())
    assert changed["optimizer.lr"] == pytest.approx(1e-4) and isinstance(changed["optimizer.lr"], float)
    assert changed["objective.num_particles"] == 5
    assert base["optimizer.lr"] == 0.01 and base["objective.num_particles"] == 1
    assert {k for k in base if base[k] != changed[k]} == {"optimizer.lr", "objective.num_particles"}
    assert base.keys() == changed.keys()


def test_overrides_on_raw_data_touch_nothing_else() -> None:
    data = load_yaml(QUICKSTART)
    expected = copy.deepcopy(data)
    expected["optimizer"]["lr"] = "1e-4"  # YAML 1.1 reads 1e-4 as a string; the schema makes it a float
    expected["objective"]["num_particles"] = 5
    assert apply_overrides(data, ["optimizer.lr=1e-4", "objective.num_particles=5"]) == expected


@pytest.mark.parametrize("override, key, value", [
    ("model.hidden=[4, 2]", "model.hidden", [4, 2]),
    ("training.progress=false", "training.progress", False),
    ("training.eval_every=null", "training.eval_every", None),
    ("training.eval_every=7", "training.eval_every", 7),
    ("optimizer.betas=[0.5, 0.6]", "optimizer.betas", [0.5, 0.6]),
    ("model.activation={name: softplus, beta: 2}", "model.activation", {"name": "softplus", "beta": 2}),
    ("description='a: b = c'", "description", "a: b = c"),
    ("description=x=y", "description", "x=y"),  # only the first '=' separates key and value
    ("training.grad_clip=1e-4", "training.grad_clip", 1e-4),
    ("name=renamed", "name", "renamed"),
])
def test_override_values_are_yaml(override: str, key: str, value: Any) -> None:
    resolved = load_recipe(QUICKSTART, [override]).as_dict()
    node: Any = resolved
    for part in key.split("."):
        node = node[part]
    assert node == value


def test_overrides_create_missing_sections() -> None:
    data = apply_overrides({"model": {"name": "gaussian_vae"}},
                           ["schedule.name=warmup", "schedule.warmup_iterations=3", "a.b.c=1"])
    assert data == {
        "model": {"name": "gaussian_vae"},
        "schedule": {"name": "warmup", "warmup_iterations": 3},
        "a": {"b": {"c": 1}},
    }
    recipe = resolve({"model": {"name": "gaussian_vae"}, **apply_overrides({}, ["schedule.name=warmup",
                                                                                "schedule.warmup_iterations=3"])})
    assert recipe.schedule.as_dict() == {"name": "warmup", "warmup_iterations": 3, "then": "constant"}


def test_a_plugin_section_without_a_name_uses_the_default_plugin(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "optimizer: {lr: 0.5}\nschedule: {}\n")
    recipe = load_recipe(path).as_dict()
    assert recipe["optimizer"]["name"] == "adam" and recipe["optimizer"]["lr"] == 0.5
    assert recipe["schedule"] == {"name": "constant"}


def test_overrides_fill_a_null_section() -> None:
    assert apply_overrides({"objective": None}, ["objective.name=iwae"]) == {"objective": {"name": "iwae"}}



@pytest.mark.parametrize("recipe, override, section, expected", [
    (MINIMAL, "optimizer.lr=1e-4", "optimizer", {"name": "adam", "lr": 1e-4}),
    (MINIMAL, "data.labels=true", "data", {"name": "digits", "labels": True}),
    (MINIMAL, "schedule.warmup_iterations=5", "schedule", None),  # constant has no such option: see below
    ("model: {name: iwae}\n", "objective.num_particles=8", "objective", {"name": "iwae", "num_particles": 8}),
], ids=["optimizer.lr", "data.labels", "schedule.warmup_iterations", "objective.num_particles"])
def test_override_into_a_defaulted_plugin_section_keeps_the_default_plugin(
    tmp_path: Path, recipe: str, override: str, section: str, expected: dict | None
) -> None:
    path = write(tmp_path, recipe)
    if expected is None:
        # the default schedule (constant) has no warmup_iterations: the error must say so,
        # not that the section lacks a name
        assert input_error(path, (override,)) == f"{path}: schedule.warmup_iterations: unknown key"
        return
    resolved = load_recipe(path, [override]).as_dict()[section]
    assert {key: resolved[key] for key in expected} == expected


@pytest.mark.parametrize("override, not_a_section", [
    ("optimizer.lr.x=1", "optimizer.lr"),
    ("model.hidden.first=3", "model.hidden"),
    ("model.name.x.y=3", "model.name"),
])
def test_override_through_a_non_section_is_an_error(override: str, not_a_section: str) -> None:
    with pytest.raises(InputError) as info:
        apply_overrides(load_yaml(QUICKSTART), [override])
    assert str(info.value) == f"override {override!r}: {not_a_section} is not a section"


@pytest.mark.parametrize("override", ["optimizer.lr", "=3", "optimizer..lr=3", "1x=3", "optimizer.lr-x=3", ""])
def test_malformed_override_is_an_error(override: str) -> None:
    with pytest.raises(InputError) as info:
        apply_overrides({}, [override])
    assert str(info.value).startswith(f"override {override!r}: expected KEY=VALUE")


def test_override_with_invalid_yaml_value_is_an_error() -> None:
    with pytest.raises(InputError, match=r"override 'model.hidden=\[1, 2': the value is not valid YAML"):
        apply_overrides({}, ["model.hidden=[1, 2"])


def test_overridden_value_of_the_wrong_type_names_the_file_and_key() -> None:
    message = input_error(QUICKSTART, ("training.batch_size=abc",))
    assert message.startswith(f"{QUICKSTART}: training.batch_size: ")
    assert "valid integer" in message


# --------------------------------------------------------------------------------------------
# defaults


@pytest.mark.parametrize("model, data, objective", [
    ("gaussian_vae", {"name": "digits"}, {"name": "elbo", "num_particles": 1, "kl": "sample"}),
    ("linear_vae", {"name": "digits"}, {"name": "elbo", "num_particles": 1, "kl": "sample"}),
    ("iwae", {"name": "digits"}, {"name": "iwae", "num_particles": 5}),
    ("beta_vae", {"name": "digits"}, {"name": "beta", "num_particles": 1, "kl": "sample", "beta": 4.0,
                                          "beta_schedule": "constant", "warmup_steps": 1000, "cycle_steps": 1000, "cycle_ratio": 0.5}),
    ("bayesian_logistic_regression", {"name": "digits", "labels": True},
     {"name": "elbo", "num_particles": 1, "kl": "sample"}),
])
def test_resolved_recipe_contains_every_option_of_every_plugin(model: str, data: dict, objective: dict) -> None:
    recipe = resolve({"model": {"name": model}, "data": data}, source="r.yaml", default_name="fallback")
    out = recipe.as_dict()
    assert list(out) == ["name", "description", "plugins", *PLUGIN_SECTIONS, "training", "output", "diagnostics"]
    assert out["diagnostics"] == []
    assert out["name"] == "fallback" and out["description"] == "" and out["plugins"] == []
    for section, kind in PLUGIN_SECTIONS.items():
        cls = REGISTRIES[kind].get(out[section]["name"])
        assert set(out[section]) == {"name", *cls.Options.model_fields}, section
    for section in ("model", "estimator", "optimizer", "schedule"):
        cls = REGISTRIES[PLUGIN_SECTIONS[section]].get(out[section]["name"])
        options = {k: v for k, v in out[section].items() if k != "name"}
        assert options == cls.Options().model_dump(mode="json"), section
    assert out["objective"] == objective  # the model's default objective, fully spelled out
    assert out["data"]["test_fraction"] == 0.2 and out["data"]["labels"] is data.get("labels", False)
    assert (out["estimator"]["name"], out["optimizer"]["name"], out["schedule"]["name"]) == (
        "auto", "adam", "constant")
    assert out["training"] == TrainingOptions().model_dump(mode="json")
    assert out["output"] == OutputOptions().model_dump(mode="json") == {"root": "runs"}


def test_recipe_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    assert load_recipe(write(tmp_path, MINIMAL, "my-recipe.v2.yaml")).name == "my-recipe.v2"


# --------------------------------------------------------------------------------------------
# unknown keys, wrong types


@pytest.mark.parametrize("text, key", [
    ("modle: {name: gaussian_vae}\n" + MINIMAL, "modle"),
    (MINIMAL + "training: {batch_size: 8, epoch: 3}\n", "training.epoch"),
    ("model: {name: gaussian_vae, hidden_sizes: [3]}\n", "model.hidden_sizes"),
    (MINIMAL + "optimizer: {name: adam, learning_rate: 0.1}\n", "optimizer.learning_rate"),
    (MINIMAL + "data: {name: digits, label: true}\n", "data.label"),
    (MINIMAL + "objective: {name: elbo, particles: 3}\n", "objective.particles"),
    (MINIMAL + "estimator: {name: score, base_line: none}\n", "estimator.base_line"),
    (MINIMAL + "schedule: {name: warmup, warmup: 3}\n", "schedule.warmup"),
    (MINIMAL + "output: {dir: x}\n", "output.dir"),
])
def test_unknown_keys_anywhere_are_errors_naming_the_file_and_the_dotted_key(
    tmp_path: Path, text: str, key: str
) -> None:
    path = write(tmp_path, text)
    assert input_error(path) == f"{path}: {key}: unknown key"


def test_unknown_key_inside_an_activation_spec_names_the_dotted_key(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {name: gaussian_vae, activation: {name: tanh, foo: 1}}\n")
    assert input_error(path) == f"{path}: model.activation.foo: unknown key"


@pytest.mark.parametrize("activation, problem", [
    ("{name: generalized_soft_clipping, sharpness: abc}", "model.activation.sharpness: "),
    ("{name: generalized_soft_clipping, s1: 3, s2: 1}", "model.activation: s1 must be smaller than s2"),
    ("{name: tanhh}", "model.activation.name: unknown activation plugin 'tanhh'"),
    ("{sharpness: 3}", "model.activation.name: "),
])
def test_bad_activation_specs_name_the_nested_key(tmp_path: Path, activation: str, problem: str) -> None:
    path = write(tmp_path, f"model: {{name: gaussian_vae, activation: {activation}}}\n")
    message = input_error(path)
    assert message.startswith(f"{path}: {problem}"), message
    assert "https://" not in message and "Value error" not in message


@pytest.mark.parametrize("text, key, problem", [
    (MINIMAL + "training: {batch_size: abc}\n", "training.batch_size", "valid integer"),
    (MINIMAL + "training: {batch_size: 1.5}\n", "training.batch_size", "valid integer"),
    (MINIMAL + "training: {batch_size: 0}\n", "training.batch_size", "greater than or equal to 1"),
    (MINIMAL + "training: {progress: maybe}\n", "training.progress", "valid boolean"),
    ("model: {name: gaussian_vae, hidden: [a]}\n", "model.hidden.0", "valid integer"),
    ("model: {name: gaussian_vae, hidden: 8}\n", "model.hidden", "valid list"),
    ("model: {name: gaussian_vae, likelihood: poisson}\n", "model.likelihood", "'gaussian' or 'bernoulli'"),
    (MINIMAL + "optimizer: {name: adam, lr: -1}\n", "optimizer.lr", "greater than 0"),
    (MINIMAL + "optimizer: {name: adam, lr: 1.0e+30}\n", "optimizer.lr", "less than or equal to 1000"),
    ("model: gaussian_vae\n", "model", "valid dictionary"),
    ("model: {latent_dim: 3}\n", "model.name", "Field required"),
    ("training: {epochs: 1}\n", "model", "Field required"),
    ("plugins: my_plugins.py\n" + MINIMAL, "plugins", "valid list"),
    ("name: 2024\n" + MINIMAL, "name", "valid string"),
])
def test_wrong_types_are_errors_naming_the_file_and_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = write(tmp_path, text)
    message = input_error(path)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message


# --------------------------------------------------------------------------------------------
# files that are not recipes


def test_malformed_yaml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  name: gaussian_vae\n   latent_dim: 3\n")
    message = input_error(path)
    assert message.startswith(f"{path}: invalid YAML at line 3, column ")


def test_unclosed_bracket_names_the_line_where_parsing_failed(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  name: gaussian_vae\n  hidden: [1, 2\n  latent_dim: 3\n")
    assert input_error(path).startswith(f"{path}: invalid YAML at line 4, column ")


def test_forbidden_character_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "description: ok\nname: bad\x00name\n")
    assert input_error(path).startswith(f"{path}: invalid YAML at line 3")


@pytest.mark.parametrize("text, line, key", [
    (MINIMAL + "training:\n  epochs: 1\ntraining:\n  epochs: 50\n", 4, "training"),
    (MINIMAL + "optimizer: {name: adam, lr: 0.1, lr: 0.2}\n", 2, "lr"),
    ("model:\n  name: gaussian_vae\n  latent_dim: 2\n  latent_dim: 3\n", 4, "latent_dim"),
])
def test_duplicate_keys_are_an_error_naming_the_line(tmp_path: Path, text: str, line: int, key: str) -> None:
    """YAML requires unique keys; the plain loader would silently keep the last value."""
    path = write(tmp_path, text)
    message = input_error(path)
    assert message.startswith(f"{path}: invalid YAML at line {line}")
    assert f"duplicate key {key!r}" in message


@pytest.mark.parametrize("content, problem", [
    ("", "the recipe is empty"),
    ("# only a comment\n\n", "the recipe is empty"),
    ("- model\n- data\n", "a recipe must be a mapping of sections, got list"),
    ("just a string\n", "a recipe must be a mapping of sections, got str"),
    (bytes(range(256)) * 4, "not a UTF-8 text file"),
    (b"\xff\xfe\x00m\x00o\x00d", "not a UTF-8 text file"),
])
def test_files_that_are_not_recipes(tmp_path: Path, content: str | bytes, problem: str) -> None:
    path = write(tmp_path, content)
    assert input_error(path) == f"{path}: {problem}"


def test_binary_junk_that_happens_to_be_utf8_is_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, b"\x00\x01\x02model: x\n")
    assert input_error(path).startswith(f"{path}: invalid YAML")


def test_missing_recipe_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert input_error(path) == f"recipe file not found: {path}"


def test_directory_instead_of_recipe(tmp_path: Path) -> None:
    assert input_error(tmp_path) == f"recipe path is a directory, not a file: {tmp_path}"


# --------------------------------------------------------------------------------------------
# plugin names and combinations


@pytest.mark.parametrize("section, kind, builtin", [
    ("model", "model", "gaussian_vae"),
    ("data", "dataset", "digits"),
    ("objective", "objective", "elbo"),
    ("estimator", "estimator", "pathwise"),
    ("optimizer", "optimizer", "adam"),
    ("schedule", "schedule", "constant"),
])
def test_unknown_plugin_name_in_each_section(tmp_path: Path, section: str, kind: str, builtin: str) -> None:
    typo = builtin[:-1] + builtin[-1] * 2  # e.g. 'adamm'
    sections = {"model": {"name": "gaussian_vae"}, section: {"name": typo}}
    path = write(tmp_path, yaml.safe_dump(sections))
    message = input_error(path)
    known = ", ".join(REGISTRIES[kind].names())
    assert message == (
        f"{path}: {section}.name: unknown {kind} plugin {typo!r}; known: {known}; did you mean {builtin!r}?"
    )


def test_unknown_activation_name_names_the_key_and_the_closest_match(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {name: gaussian_vae, activation: tanhh}\n")
    message = input_error(path)
    assert message.startswith(f"{path}: model.activation: ")
    assert "unknown activation plugin 'tanhh'" in message and "did you mean 'tanh'?" in message


@pytest.mark.parametrize("model, objective, allowed", [
    ("beta_vae", "elbo", "'beta'"),
    ("iwae", "elbo", "'iwae'"),
    ("beta_vae", "iwae", "'beta'"),
])
def test_a_model_rejects_objectives_it_does_not_train_under(tmp_path: Path, model: str, objective: str,
                                                            allowed: str) -> None:
    path = write(tmp_path, f"model: {{name: {model}}}\nobjective: {{name: {objective}}}\n")
    assert input_error(path) == (
        f"{path}: objective.name: model {model!r} trains under {allowed}, not {objective!r}"
    )


def test_beta_vae_with_its_own_objective_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {name: beta_vae}\nobjective: {name: beta, beta: 2.0}\n")
    assert load_recipe(path).objective.as_dict() == {
        "name": "beta", "num_particles": 1, "kl": "sample", "beta": 2.0, "beta_schedule": "constant",
        "warmup_steps": 1000, "cycle_steps": 1000, "cycle_ratio": 0.5}


def test_leave_one_out_baseline_needs_two_particles(tmp_path: Path) -> None:
    text = MINIMAL + "estimator: {name: score, baseline: leave_one_out}\nobjective: {name: elbo, num_particles: 1}\n"
    path = write(tmp_path, text)
    message = input_error(path)
    assert message.startswith(f"{path}: estimator: ")
    assert "leave_one_out" in message and "num_particles >= 2" in message
    ok = load_recipe(path, ["objective.num_particles=2"])
    assert ok.estimator.as_dict()["baseline"] == "leave_one_out"


# --------------------------------------------------------------------------------------------
# the run name


@pytest.mark.parametrize("name", ["a/b", "../escape", "..", "a..b", "/abs", ".hidden", "", "x" * 129,
                                  "with space", "tab\tname", "back\\slash"])
def test_recipe_name_cannot_leave_its_folder(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, yaml.safe_dump({"name": name, "model": {"name": "gaussian_vae"}}))
    message = input_error(path)
    assert message.startswith(f"{path}: name: {name!r} must be")


def test_override_cannot_smuggle_a_path_into_the_name() -> None:
    with pytest.raises(InputError, match=r": name: '\.\./\.\./etc' must be"):
        load_recipe(QUICKSTART, ["name=../../etc"])


@pytest.mark.parametrize("name", ["run", "run-1.2_b", "A", "x" * 128, "2024.01"])
def test_valid_recipe_names(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, yaml.safe_dump({"name": name, "model": {"name": "gaussian_vae"}}))
    assert load_recipe(path).name == name


def test_a_file_stem_that_is_not_a_valid_name_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL, "my recipe.yaml")
    assert input_error(path).startswith(f"{path}: name: 'my recipe' must be")


# --------------------------------------------------------------------------------------------
# round trip: what validate prints is a recipe that resolves to the same thing


@pytest.fixture
def validate_output(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable:
    monkeypatch.setitem(cli._state, "debug", False)

    def run(path: Path, overrides: list[str]) -> str:
        capsys.readouterr()
        try:
            cli.main(["validate", str(path), *overrides])
        except SystemExit as exc:  # pragma: no cover - a failure here is reported below
            pytest.fail(f"validate exited {exc.code}: {capsys.readouterr().err}")
        return capsys.readouterr().out

    return run


@pytest.mark.parametrize("overrides", [
    [],
    ["model.name=iwae", "objective=null", "model.activation=relu"],
    ["model.name=beta_vae", "objective=null", "optimizer.name=sgd", "optimizer.momentum=0.9",
     "schedule.name=warmup", "schedule.then=inv_sqrt_iteration"],
    ["estimator={name: score, baseline: leave_one_out}", "objective.num_particles=3"],
    ["model={name: bayesian_logistic_regression}", "data.labels=true", "training.grad_clip=1e-4"],
    ["model.mean_bound=1e3", "description='multi\nline: text'", "training.device=cpu"],
])
def test_validate_output_round_trips(tmp_path: Path, validate_output: Callable, overrides: list[str]) -> None:
    expected = load_recipe(QUICKSTART, overrides).as_dict()
    printed = validate_output(QUICKSTART, overrides)
    assert yaml.safe_load(printed) == expected
    copy_path = write(tmp_path, printed, "resolved.yaml")
    assert load_recipe(copy_path).as_dict() == expected
    assert validate_output(copy_path, []) == printed  # a fixed point


def test_round_trip_keeps_plugin_files_usable_from_another_folder(
    tmp_path: Path, validate_output: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    name = f"my_vae_roundtrip_{uuid.uuid4().hex[:8]}"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "plug.py").write_text(
        "from bbvi_kit import register_model\nfrom bbvi_kit_plugins.gaussian_vae import GaussianVAE\n\n"
        f"@register_model({name!r})\nclass RoundTripVAE(GaussianVAE):\n    pass\n"
    )
    recipe = write(tmp_path / "a", f"plugins: [plug.py]\nmodel: {{name: {name}, latent_dim: 3}}\n", "r.yaml")
    printed = validate_output(recipe, [])
    assert yaml.safe_load(printed)["plugins"] == [str((tmp_path / "a" / "plug.py").resolve())]
    (tmp_path / "b").mkdir()
    moved = write(tmp_path / "b", printed, "copy.yaml")
    monkeypatch.chdir(tmp_path / "b")
    assert load_recipe(moved).as_dict() == load_recipe(recipe).as_dict()


@pytest.mark.parametrize(("key", "text"), [
    ("model.decoder_scale", "model: {name: gaussian_vae, decoder_scale: .inf}\n"),
    ("optimizer.weight_decay", "model: {name: gaussian_vae}\noptimizer: {name: adam, weight_decay: .inf}\n"),
    ("optimizer.lr", "model: {name: gaussian_vae}\noptimizer: {name: sgd, lr: .nan}\n"),
])
def test_infinite_or_nan_numbers_are_refused_naming_the_key(tmp_path: Path, key: str, text: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=key.replace(".", r"\.") + r": .*finite number"):
        load_recipe(path)
