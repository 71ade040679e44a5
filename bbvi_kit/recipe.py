"""YAML recipes: apply ``KEY=VALUE`` overrides, validate, resolve plugins (files are read by
:mod:`bbvi_kit.config.safe_yaml`).

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
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bbvi_kit.config import TrainingOptions
from bbvi_kit.config.safe_yaml import describe_yaml_error, load_yaml, one_line, parse_yaml
from bbvi_kit.errors import InputError
from bbvi_kit.plugin import PluginOptions, validation_error_line
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
_DEFAULT_PLUGINS = {"data": "digits", "estimator": "auto", "optimizer": "adam", "schedule": "constant"}


class PluginSection(BaseModel):
    """A plugin's name with its options inline (checked later against the plugin's schema).
    Without a name the section means its default plugin (see :func:`_resolve_plugin`)."""

    model_config = ConfigDict(extra="allow")
    name: str | None = Field(None, min_length=1)


def output_root_problem(root: str) -> str | None:
    """Why ``root`` could lead a run outside the folder it is started in, or ``None``: an
    absolute path (POSIX or Windows, drive or UNC), a home folder (``~``), a ``..`` component
    (with ``/`` or ``\\`` as separator) or a NUL character."""
    if "\0" in root:
        return "contains a NUL character"
    if root.startswith("~"):
        return "starts with '~' (a home folder)"
    if PurePosixPath(root).is_absolute() or PureWindowsPath(root).drive or root.startswith(("/", "\\")):
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", root):
        return "goes up a folder with '..'"
    return None


class OutputOptions(PluginOptions):
    """The ``output:`` section. A recipe cannot send its runs outside the folder it is run from:
    ``root`` is a relative path without ``..``; the CLI's ``--out DIR`` picks any other place."""

    root: str = Field(
        "runs", min_length=1, max_length=1024,
        description="runs are written to ROOT/<name>/<time>-<id>/; a relative path below the working folder",
    )

    @field_validator("root")
    @classmethod
    def _stays_inside(cls, root: str) -> str:
        problem = output_root_problem(root)
        if problem is not None:
            raise ValueError(
                f"{root!r} {problem}; a recipe may only name a folder below the working folder "
                "(choose any other place with --out DIR)"
            )
        return root


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
    return InputError(f"{source}: {validation_error_line(exc, prefix)}")


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


def _override_repr(item: str, limit: int = 80) -> str:
    """An override quoted for an error message, cut short so the reason after it stays visible."""
    return repr(item) if len(item) <= limit else repr(item[:limit]) + "..."


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set dotted keys to YAML values: ``["optimizer.lr=1e-4", "training.epochs=2"]``.

    Below ``sweep.`` the rest of the key is one sweep axis (``sweep.objective.num_particles=[1, 5]``
    replaces that axis; a null value removes it); ``sweep=null`` removes the sweep.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        is_axis = key.startswith("sweep.") and AXIS_KEY.match(key[len("sweep."):]) is not None
        shown = _override_repr(item)
        if not sep or not (_KEY.match(key) or is_axis):
            raise InputError(f"override {shown}: expected KEY=VALUE with a dotted key, e.g. optimizer.lr=1e-4")
        try:
            value = parse_yaml(text) if text.strip() else None
        except (yaml.YAMLError, RecursionError) as exc:
            reason = describe_yaml_error(exc, text).removeprefix("invalid YAML")
            raise InputError(f"override {shown}: the value is not valid YAML{reason}") from None
        if key.startswith("sweep."):
            axes = data.get("sweep")
            if axes is None:
                axes = data["sweep"] = {}
            if not isinstance(axes, dict):
                raise InputError(f"override {shown}: sweep is not a section")
            axis = key[len("sweep."):]
            if value is None:
                axes.pop(axis, None)
            else:
                axes[axis] = value
            continue
        set_dotted(data, key, value, f"override {shown}")
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


_NOT_PLUGIN_SUFFIXES = (".yaml", ".yml", ".json", ".csv", ".txt")


def load_plugin_sources(specs: Sequence[str], base_dir: Path | None, source: str) -> list[str]:
    """Import the files and modules of a recipe's ``plugins:`` list; returns what a resolved
    recipe records for each (absolute file path or module name).

    A recipe or data file (``.yaml``, ``.json`` ...; the recipe itself, say) is refused up front:
    recipes do not include one another, and importing one would only fail obscurely.
    """
    loaded = []
    for i, spec in enumerate(specs):
        key = f"{source}: plugins.{i}"
        if isinstance(spec, str):
            if "\0" in spec:
                raise InputError(f"{key}: {one_line(repr(spec), 100)} contains a NUL character")
            if spec.strip().lower().endswith(_NOT_PLUGIN_SUFFIXES):
                raise InputError(
                    f"{key}: {one_line(repr(spec), 100)} is not a plugin: list Python files (.py) or modules; "
                    "a recipe cannot include a recipe"
                )
        try:
            loaded.append(load_plugin_source(spec, base_dir, key=key))
        except OSError as exc:  # e.g. a file name too long for the file system
            raise InputError(f"{key}: cannot read plugin file {one_line(repr(spec), 100)}: "
                             f"{exc.strerror or exc}") from None
    return loaded


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
    objective = resolved["objective"].build()
    try:
        estimator.check(objective)
    except ValueError as exc:
        raise InputError(f"{source}: estimator: {exc}") from None
    for i, diagnostic in enumerate(diagnostics):
        try:
            diagnostic.build().check(objective, f"diagnostics.{i}")
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None
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
