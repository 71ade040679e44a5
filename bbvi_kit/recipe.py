"""YAML recipes: parse, apply ``KEY=VALUE`` overrides, validate, resolve plugins.

A recipe is a mapping of sections. Each plugin section names its plugin and gives its options
inline, validated against that plugin's own ``Options`` schema (unknown keys are errors)::

    name: quickstart
    plugins: [my_plugins.py]        # files (relative to the recipe) or module paths to import
    model: {name: gaussian_vae, latent_dim: 8}
    data: {name: digits}
    objective: {name: elbo, num_particles: 1}
    estimator: {name: pathwise}
    optimizer: {name: adam, lr: 1.0e-3}
    schedule: {name: constant}
    training: {batch_size: 128, epochs: 10, seed: 0, device: auto}
    output: {root: runs}

Every error is one line naming the file and the dotted key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bbvi_kit.engine import TrainingOptions
from bbvi_kit.errors import InputError
from bbvi_kit.plugin import PluginOptions, describe_validation_error
from bbvi_kit.registry import REGISTRIES, load_plugin_source

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# a sweep axis: one dotted key, or several joined by commas (a zipped axis)
AXIS_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(,[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)*$")

# recipe section -> plugin kind
PLUGIN_SECTIONS: dict[str, str] = {
    "model": "model",
    "data": "dataset",
    "objective": "objective",
    "estimator": "estimator",
    "optimizer": "optimizer",
    "schedule": "schedule",
}


# Default plugin of each section that has one (the objective's default comes from the model).
_DEFAULT_PLUGINS = {"data": "digits", "estimator": "pathwise", "optimizer": "adam", "schedule": "constant"}


class PluginSection(BaseModel):
    """A plugin's name with its options inline (checked later against the plugin's schema).
    Without a name the section means its default plugin (see :func:`_resolve_plugin`)."""

    model_config = ConfigDict(extra="allow")
    name: str | None = Field(None, min_length=1)


class OutputOptions(PluginOptions):
    root: str = Field("runs", min_length=1, description="runs are written to ROOT/<name>/<time>-<id>/")


class RecipeSchema(PluginOptions):
    """The top level of a recipe, before plugin options are checked."""

    name: str | None = Field(None, description="run name; default: the recipe file's stem")
    description: str = ""
    plugins: list[str] = Field(default_factory=list)
    model: PluginSection
    data: PluginSection = PluginSection()
    objective: PluginSection | None = None
    estimator: PluginSection = PluginSection()
    optimizer: PluginSection = PluginSection()
    schedule: PluginSection = PluginSection()
    training: TrainingOptions = TrainingOptions()
    output: OutputOptions = OutputOptions()
    diagnostics: list[PluginSection] = Field(
        default_factory=list, description="diagnostic plugins to measure along the way (bbvi_kit.diagnostics)"
    )
    sweep: dict[str, list[Any]] | None = Field(
        None, description="dotted key -> list of values; the grid of runs (see bbvi_kit.sweep)"
    )


@dataclass
class ResolvedPlugin:
    """A plugin class and its validated options."""

    name: str
    cls: Any
    options: PluginOptions

    def build(self, *args: Any) -> Any:
        return self.cls(*args, **self.options.model_dump())

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options.model_dump(mode="json")}


@dataclass
class Recipe:
    """A fully resolved recipe: every plugin found, every option validated and defaulted."""

    name: str
    description: str
    source: str
    plugins: list[str]
    model: ResolvedPlugin
    data: ResolvedPlugin
    objective: ResolvedPlugin
    estimator: ResolvedPlugin
    optimizer: ResolvedPlugin
    schedule: ResolvedPlugin
    training: TrainingOptions
    output: OutputOptions
    diagnostics: list[ResolvedPlugin] = field(default_factory=list)

    def diagnostic_plugins(self) -> dict[str, Any]:
        """The diagnostics built and named: their plugin name, with ``_2``, ``_3`` ... for repeats."""
        built: dict[str, Any] = {}
        for spec in self.diagnostics:
            name, n = spec.name, 1
            while name in built:
                n += 1
                name = f"{spec.name}_{n}"
            built[name] = spec.build()
        return built

    def as_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data; written to the run directory as recipe.yaml."""
        out: dict[str, Any] = {"name": self.name, "description": self.description, "plugins": self.plugins}
        for section in PLUGIN_SECTIONS:
            out[section] = getattr(self, section).as_dict()
        out["training"] = self.training.model_dump(mode="json")
        out["output"] = self.output.model_dump(mode="json")
        out["diagnostics"] = [d.as_dict() for d in self.diagnostics]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.as_dict(), sort_keys=False)


# -- errors ------------------------------------------------------------------------------------
def _format_validation_error(exc: ValidationError, source: str, prefix: str = "") -> InputError:
    problems = describe_validation_error(exc, prefix)
    return InputError(f"{source}: " + "; ".join(f"{key or '(top level)'}: {msg}" for key, msg in problems))


# -- loading -----------------------------------------------------------------------------------
class _UniqueKeySafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML requires unique keys;
    the plain loader silently keeps the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a recipe file with a safe YAML loader; every failure is an :class:`InputError`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"recipe file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"recipe path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeySafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character or "\0")
        raise InputError(f"{path}: invalid YAML at line {line}: {exc.reason} (character U+{char:04X})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InputError(f"{path}: invalid YAML{where}: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise InputError(f"{path}: invalid YAML: {type(exc).__name__}") from None
    if data is None:
        raise InputError(f"{path}: the recipe is empty")
    if not isinstance(data, dict):
        raise InputError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    return data


def set_dotted(data: dict[str, Any], key: str, value: Any, what: str) -> None:
    """Set ``data[a][b][c] = value`` for ``key == "a.b.c"``, creating missing sections; ``what``
    names the source of the key in errors."""
    parts = key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise InputError(f"{what}: {'.'.join(parts[: depth + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set dotted keys to YAML values: ``["optimizer.lr=1e-4", "training.epochs=2"]``.

    Below ``sweep.`` the rest of the key is one sweep axis (``sweep.objective.num_particles=[1, 5]``
    replaces that axis; a null value removes it); ``sweep=null`` removes the sweep.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        is_axis = key.startswith("sweep.") and AXIS_KEY.match(key[len("sweep."):]) is not None
        if not sep or not (_KEY.match(key) or is_axis):
            raise InputError(f"override {item!r}: expected KEY=VALUE with a dotted key, e.g. optimizer.lr=1e-4")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise InputError(f"override {item!r}: the value is not valid YAML") from None
        if key.startswith("sweep."):
            axes = data.get("sweep")
            if axes is None:
                axes = data["sweep"] = {}
            if not isinstance(axes, dict):
                raise InputError(f"override {item!r}: sweep is not a section")
            axis = key[len("sweep."):]
            if value is None:
                axes.pop(axis, None)
            else:
                axes[axis] = value
            continue
        set_dotted(data, key, value, f"override {item!r}")
    return data


def _resolve_plugin(
    section: str, spec: PluginSection, source: str, default: Mapping[str, Any] | None = None,
    kind: str | None = None,
) -> ResolvedPlugin:
    """Look up a section's plugin (of ``kind``, by default the section's) and validate its
    options. A section without ``name`` is the ``default`` section (name and options) with the
    given options laid over it."""
    options = dict(spec.model_extra or {})
    name = spec.name
    if name is None:
        if default is None:
            raise InputError(f"{source}: {section}.name: Field required")
        options = {**default, **options}
        name = options.pop("name")
    cls = REGISTRIES[kind or PLUGIN_SECTIONS[section]].get(name, key=f"{source}: {section}.name")
    try:
        validated = cls.Options(**options)
    except ValidationError as exc:
        raise _format_validation_error(exc, source, prefix=section) from None
    return ResolvedPlugin(name, cls, validated)


def load_plugin_sources(specs: Sequence[str], base_dir: Path | None, source: str) -> list[str]:
    """Import the files and modules of a recipe's ``plugins:`` list; returns what a resolved
    recipe records for each (absolute file path or module name)."""
    return [load_plugin_source(spec, base_dir, key=f"{source}: plugins.{i}") for i, spec in enumerate(specs)]


def resolve(data: Mapping[str, Any], source: str = "<recipe>", base_dir: Path | None = None,
            default_name: str = "recipe") -> Recipe:
    """Validate recipe data and resolve its plugins; see the module docstring.

    A plugin section without ``name`` (``optimizer: {lr: 1e-4}``, or one created by an override
    such as ``optimizer.lr=1e-4``) uses the section's default plugin.
    """
    try:
        schema = RecipeSchema.model_validate(dict(data))
    except ValidationError as exc:
        raise _format_validation_error(exc, source) from None
    plugins = load_plugin_sources(schema.plugins, base_dir, source)
    name = schema.name if schema.name is not None else default_name
    if not _NAME.match(name) or ".." in name:
        raise InputError(
            f"{source}: name: {name!r} must be 1-128 letters, digits, '_', '-' or '.', starting with a "
            "letter or digit (it names the run's folder)"
        )
    resolved: dict[str, ResolvedPlugin] = {}
    for section in ("model", "data", "estimator", "optimizer", "schedule"):
        default = {"name": _DEFAULT_PLUGINS[section]} if section in _DEFAULT_PLUGINS else None
        resolved[section] = _resolve_plugin(section, getattr(schema, section), source, default)
    model_cls = resolved["model"].cls
    resolved["objective"] = _resolve_plugin(
        "objective", schema.objective or PluginSection(), source, model_cls.default_objective
    )
    allowed = getattr(model_cls, "objectives", None)
    if allowed is not None and resolved["objective"].name not in allowed:
        raise InputError(
            f"{source}: objective.name: model {resolved['model'].name!r} trains under "
            f"{' or '.join(repr(a) for a in allowed)}, not {resolved['objective'].name!r}"
        )
    diagnostics = [
        _resolve_plugin(f"diagnostics.{i}", spec, source, kind="diagnostic") for i, spec in enumerate(schema.diagnostics)
    ]
    estimator = resolved["estimator"].build()
    try:
        estimator.check(resolved["objective"].build())
    except ValueError as exc:
        raise InputError(f"{source}: estimator: {exc}") from None
    return Recipe(
        name=name,
        description=schema.description,
        source=source,
        plugins=plugins,
        training=schema.training,
        output=schema.output,
        diagnostics=diagnostics,
        **resolved,
    )


def load_recipe_plugins(path: str | Path) -> list[str]:
    """Import only the plugin files and modules a recipe's ``plugins:`` list names."""
    path = Path(path)
    plugins = load_yaml(path).get("plugins") or []
    if not isinstance(plugins, list):
        raise InputError(f"{path}: plugins: expected a list of files or modules")
    return load_plugin_sources(plugins, path.resolve().parent, str(path))


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override, validate and resolve the recipe at ``path``."""
    path = Path(path)
    data = apply_overrides(load_yaml(path), overrides)
    return resolve(data, source=str(path), base_dir=path.resolve().parent, default_name=path.stem)
