"""Reading YAML safely (:mod:`bbvi_kit.config.safe_yaml`), called directly: plain data only, no
duplicate keys, no Python objects, the nesting and alias limits at their edges, and every failure
of :func:`load_yaml` one :class:`InputError` line naming the file (and the line and column). The
libyaml and pure-Python loaders are held to the same results. (``bbvi-kit validate`` on hostile
recipes is tested in ``test_hostile_recipes.py``.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from bbvi_kit.config import safe_yaml
from bbvi_kit.config.safe_yaml import MAX_DEPTH, MAX_RECIPE_BYTES, describe_yaml_error, load_yaml, one_line, parse_yaml
from bbvi_kit.errors import InputError

HAS_LIBYAML = getattr(safe_yaml, "_CSafeLoader", None) is not None


@pytest.fixture(params=["libyaml", "python"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with libyaml's parser (where installed) and with the pure-Python loader only."""
    if request.param == "libyaml" and not HAS_LIBYAML:
        pytest.skip("PyYAML without libyaml")
    if request.param == "python":
        monkeypatch.setattr(safe_yaml, "_CSafeLoader", None)
    return request.param


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def error(path: Path) -> str:
    with pytest.raises(InputError) as excinfo:
        load_yaml(path)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# -- what comes out ----------------------------------------------------------------------------
def test_a_recipe_is_plain_data(tmp_path: Path, loader: str) -> None:
    text = ("name: demo\ntraining: {batch_size: 64, seed: null, progress: false}\n"
            "optimizer:\n  lr: 1.0e-3\n  betas: [0.9, 0.999]\nmodel: {name: 'x', note: \"a: b\"}\n")
    assert load_yaml(write(tmp_path, text)) == {
        "name": "demo", "training": {"batch_size": 64, "seed": None, "progress": False},
        "optimizer": {"lr": 0.001, "betas": [0.9, 0.999]}, "model": {"name": "x", "note": "a: b"}}


def test_a_few_aliases_are_expanded(tmp_path: Path, loader: str) -> None:
    data = load_yaml(write(tmp_path, "base: &b {lr: 0.1, sizes: [1, 2]}\nother: *b\n"))
    assert data["other"] == {"lr": 0.1, "sizes": [1, 2]} == data["base"]


def test_an_empty_document_parses_to_none(loader: str) -> None:
    assert parse_yaml("") is None and parse_yaml("# only a comment\n") is None


# -- malformed text: one line, with the place --------------------------------------------------
def test_a_duplicate_key_is_refused_at_its_line_and_column(tmp_path: Path, loader: str) -> None:
    path = write(tmp_path, "a: 1\nb: 2\na: 3\n")
    assert error(path) == f"{path}: invalid YAML at line 3, column 1: duplicate key 'a'"
    path = write(tmp_path, "training:\n  seed: 1\n  seed: 2\n")
    assert error(path) == f"{path}: invalid YAML at line 3, column 3: duplicate key 'seed'"


def test_equal_keys_in_different_mappings_are_fine(tmp_path: Path, loader: str) -> None:
    assert load_yaml(write(tmp_path, "a: {name: 1}\nb: {name: 2}\n")) == {"a": {"name": 1}, "b": {"name": 2}}


def test_a_syntax_error_names_line_and_column(tmp_path: Path, loader: str) -> None:
    path = write(tmp_path, "a: b: c\n")  # the second colon is character 5
    assert error(path) == f"{path}: invalid YAML at line 1, column 5: mapping values are not allowed here"
    path = write(tmp_path, "a:\n\tb: 1\n")
    assert error(path) == f"{path}: invalid YAML at line 2, column 1: found character '\\t' that cannot start any token"


def test_a_control_character_names_its_line_and_code_point(tmp_path: Path, loader: str) -> None:
    path = write(tmp_path, "a: 1\nb: \x01\n")
    assert error(path) == f"{path}: invalid YAML at line 2: special characters are not allowed (character U+0001)"


@pytest.mark.parametrize("text, what", [
    ("a: !!python/object/apply:os.system ['true']\n", "could not determine a constructor for the tag"),
    ("a: !!python/name:os.system ''\n", "could not determine a constructor for the tag"),
    ("a: !!timestamp 2001-13-45\n", "cannot read this value"),
    ("a: " + "1" * 5000 + "\n", "cannot read this value"),  # beyond Python's digit limit for int()
    ("a: !!binary \"a\"\n", "failed to decode base64 data"),
])
def test_python_objects_and_values_that_cannot_be_made_are_refused_at_their_line(tmp_path: Path, loader: str, text: str,
                                                                                  what: str) -> None:
    path = write(tmp_path, "ok: 1\n" + text)
    message = error(path)
    assert message.startswith(f"{path}: invalid YAML at line 2, column 4: ") and what in message


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, b"a: \xff\xfe\n")
    assert error(path) == f"{path}: not a UTF-8 text file"


@pytest.mark.parametrize("text", ["", "# comment only\n", "---\n", "null\n"])
def test_an_empty_recipe_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert error(path) == f"{path}: the recipe is empty"


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int")])
def test_a_recipe_that_is_not_a_mapping_is_refused_naming_what_it_is(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, text)
    assert error(path) == f"{path}: a recipe must be a mapping of sections, got {kind}"


# -- files that are not recipes ----------------------------------------------------------------
def test_a_missing_file_and_a_folder_are_named(tmp_path: Path) -> None:
    assert error(tmp_path / "nope.yaml") == f"recipe file not found: {tmp_path / 'nope.yaml'}"
    assert error(tmp_path) == f"recipe path is a directory, not a file: {tmp_path}"


def test_a_path_with_a_nul_character_is_refused() -> None:
    assert error(Path("a\x00b.yaml")) == "cannot read recipe 'a\\x00b.yaml': the path contains a NUL character"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)
    message = error(fifo)
    assert str(fifo) in message and "not a regular file" in message


def test_the_size_limit_is_one_mebibyte(tmp_path: Path) -> None:
    filler = MAX_RECIPE_BYTES - len("a: \n")
    assert load_yaml(write(tmp_path, "a: " + "x" * filler + "\n"))["a"] == "x" * filler
    path = write(tmp_path, "a: " + "x" * (filler + 1) + "\n")
    assert error(path) == f"{path}: the recipe is larger than 1024 KiB; is it a recipe?"


# -- nesting and alias limits ------------------------------------------------------------------
def nested_lists(levels: int) -> str:
    """``a:`` holding ``levels`` nested empty lists: ``levels + 1`` levels with the root mapping."""
    return "a: " + "[" * levels + "]" * levels + "\n"


def test_nesting_up_to_the_limit_is_read(tmp_path: Path, loader: str) -> None:
    data = load_yaml(write(tmp_path, nested_lists(MAX_DEPTH - 1)))
    depth, node = 0, data["a"]
    while node:
        node, depth = node[0], depth + 1
    assert depth == MAX_DEPTH - 2  # the innermost list is empty


def test_nesting_one_level_past_the_limit_is_refused(tmp_path: Path, loader: str) -> None:
    path = write(tmp_path, nested_lists(MAX_DEPTH))
    message = error(path)
    assert message.startswith(f"{path}: invalid YAML at line 1, column ") and "nested deeper than 64 levels" in message


@pytest.mark.skipif(not HAS_LIBYAML, reason="PyYAML without libyaml")
def test_a_scalar_one_level_too_deep_is_worded_by_both_loaders_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "a: " + "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1) + "\n")
    fast = error(path)
    monkeypatch.setattr(safe_yaml, "_CSafeLoader", None)
    python = error(path)
    assert python == f"{path}: invalid YAML at line 1, column 67: nested deeper than 64 levels"
    assert fast == python


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path, loader: str) -> None:
    path = write(tmp_path, "ok: 1\na: &x [1, *x]\n")
    message = error(path)
    assert message.startswith(f"{path}: invalid YAML at line 2, column ")
    assert "an alias refers to itself (through its own anchor); a recipe cannot be recursive" in message


def test_aliases_that_expand_past_the_value_limit_are_refused(tmp_path: Path, loader: str) -> None:
    # level k holds 10 aliases of level k-1: 10**6 strings once expanded, from a few hundred bytes
    lines = ["l0: &l0 [" + ", ".join(["x"] * 10) + "]"]
    lines += [f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 10) + "]" for k in range(1, 6)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert "aliases expand to more than 100000 values" in error(path)


# -- wording helpers ---------------------------------------------------------------------------
def test_an_error_without_a_mark_and_other_failures_are_worded_generically() -> None:
    assert describe_yaml_error(RecursionError(), "") == "invalid YAML: nested too deeply"
    assert describe_yaml_error(ValueError("x"), "") == "invalid YAML: ValueError"
    assert describe_yaml_error(yaml.MarkedYAMLError(problem="odd"), "") == "invalid YAML: odd"


def test_one_line_collapses_and_cuts_at_200_characters() -> None:
    assert one_line(" a \n b\t c ") == "a b c"
    assert one_line("y" * 200) == "y" * 200
    assert one_line("y" * 201) == "y" * 197 + "..."
