"""Plugin registries: names to plugin classes, one registry per kind.

A plugin is a class with a nested pydantic ``Options`` model (its config schema). It reaches a
registry in one of three ways, all equivalent once loaded:

1. a decorator, ``@register_model("my_vae")``, in any imported module, including a Python file or
   module path named in a recipe's ``plugins:`` list (see :func:`load_plugin_source`);
2. an entry point of an installed distribution in the kind's group (``bbvi_kit.models``,
   ``bbvi_kit.datasets``, ...), read lazily: listing names imports nothing, and the module is
   imported only when its plugin is first asked for;
3. the built-in plugins, which use the same two mechanisms.

Registering a different object under a name already taken is an error; registering the same
object again (a module imported twice) is not. Asking for an unknown name is an error that lists
the known names and the closest match.

Setting the environment variable ``BBVI_KIT_DISABLE_ENTRY_POINTS=1`` turns off autoloading of
entry points from third-party distributions; bbvi-kit's own entry points still load.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from bbvi_kit.errors import InputError

T = TypeVar("T")

ENTRY_POINT_PREFIX = "bbvi_kit."
DISABLE_ENTRY_POINTS_ENV = "BBVI_KIT_DISABLE_ENTRY_POINTS"
_OWN_DISTRIBUTION = "bbvi-kit"


def _qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


@dataclass
class PluginEntry:
    """One registered plugin: its object (``None`` until a lazy entry point is loaded)."""

    name: str
    source: str
    obj: Any = None
    entry_point: importlib.metadata.EntryPoint | None = None
    # Registered by a decorator while the entry point's own module was still importing: the
    # entry point decides, once loaded, whether this is the same plugin.
    pending: Any = None


class Registry(Generic[T]):
    """Names to plugins of one kind (``model``, ``dataset``, ``objective`` ...)."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, PluginEntry] = {}
        self._entry_points_read = False

    # -- registering ------------------------------------------------------------------------
    def register(self, name: str, source: str | None = None) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``; see the module docstring."""

        def decorator(obj: T) -> T:
            self.add(name, obj, source=source)
            return obj

        return decorator

    def add(self, name: str, obj: Any, source: str | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise InputError(f"a {self.kind} plugin name must be a non-empty string, got {name!r}")
        check_plugin_name(self.kind, name, source or _source_of(obj))
        self._read_entry_points()
        where = source or _source_of(obj)
        entry = self._entries.get(name)
        if entry is None:
            self._entries[name] = PluginEntry(name=name, source=where, obj=obj)
            return
        if entry.obj is None and entry.entry_point is not None:
            if entry.entry_point.value == _qualified_name(obj):
                entry.obj = obj
                return
            # The entry point may name this object through a re-export (pkg:Thing for a class
            # defined in pkg.impl); load it to compare, unless its module is importing right now.
            loaded, target = _try_load(entry.entry_point)
            if not loaded:
                entry.pending = obj
                return
            if target is obj:
                entry.obj = obj
                return
        if entry.obj is obj:
            return
        raise InputError(
            f"duplicate {self.kind} plugin name {name!r}: already registered from {entry.source}, "
            f"registered again from {where}"
        )

    # -- looking up -------------------------------------------------------------------------
    def get(self, name: str, key: str | None = None) -> T:
        """The plugin called ``name``; ``key`` (a recipe key such as ``model.name``) goes in errors."""
        self._read_entry_points()
        entry = self._entries.get(name)
        if entry is None:
            known = sorted(self._entries)
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            where = f"{key}: " if key else ""
            raise InputError(
                f"{where}unknown {self.kind} plugin {name!r}; known: {', '.join(known) or '(none)'}{hint}"
            )
        if entry.obj is None:
            assert entry.entry_point is not None
            try:
                obj = entry.entry_point.load()
            except Exception as exc:  # a broken third-party plugin must not look like our bug
                raise InputError(
                    f"{self.kind} plugin {name!r} from {entry.source} failed to load: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if entry.pending is not None and entry.pending is not obj:
                raise InputError(
                    f"duplicate {self.kind} plugin name {name!r}: {entry.source} ({entry.entry_point.value}) "
                    f"and {_source_of(entry.pending)} register different plugins"
                )
            entry.obj = obj
        return entry.obj

    def names(self) -> list[str]:
        self._read_entry_points()
        return sorted(self._entries)

    def entries(self) -> list[PluginEntry]:
        self._read_entry_points()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        self._read_entry_points()
        return name in self._entries

    def forget_third_party_entry_points(self) -> None:
        """Drop third-party entry points not loaded yet (see :func:`disable_entry_points`)."""
        for name, entry in list(self._entries.items()):
            ep = entry.entry_point
            dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
            if ep is not None and entry.obj is None and _normalized(dist) != _normalized(_OWN_DISTRIBUTION):
                del self._entries[name]

    def _read_entry_points(self) -> None:
        # Marked as read only once every entry point is in: a conflict is raised on every call.
        if self._entry_points_read:
            return
        only_own = os.environ.get(DISABLE_ENTRY_POINTS_ENV, "") not in ("", "0")
        for ep in importlib.metadata.entry_points(group=self.group):
            dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
            if only_own and _normalized(dist) != _normalized(_OWN_DISTRIBUTION):
                continue
            source = f"entry point {self.group} ({dist})"
            check_plugin_name(self.kind, ep.name, f"{source} ({ep.value})")
            existing = self._entries.get(ep.name)
            if existing is not None:
                if existing.entry_point is not None and existing.entry_point.value == ep.value:
                    continue  # the same distribution seen twice on sys.path
                if existing.obj is not None and _qualified_name(existing.obj) == ep.value:
                    existing.entry_point = ep
                    continue
                raise InputError(
                    f"duplicate {self.kind} plugin name {ep.name!r}: registered from {existing.source} "
                    f"and from {source} ({ep.value})"
                )
            self._entries[ep.name] = PluginEntry(name=ep.name, source=source, entry_point=ep)
        self._entry_points_read = True


# A plugin name is also a file name (a diagnostic's values go to diagnostics/<name>.csv): one
# path component of letters, digits, '_', '-', '+' and '.', never '..', at most 128 characters.
_PLUGIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


def check_plugin_name(kind: str, name: str, source: str) -> None:
    """Refuse a plugin name that is not a safe file name (it could not reach outside a run
    directory, but ``diagnostics/../x.csv`` must never be possible)."""
    if not _PLUGIN_NAME.match(name) or ".." in name:
        shown = repr(name) if len(name) <= 60 else repr(name[:60]) + "..."
        raise InputError(
            f"{kind} plugin name {shown} from {source}: a plugin name must be 1-128 letters, digits, "
            "'_', '-', '+' or '.', starting with a letter or digit, without '..' (it can name a file)"
        )


def _normalized(distribution: str) -> str:
    """A distribution name as PEP 503 compares them (``bbvi_kit`` is ``bbvi-kit``)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _try_load(entry_point: importlib.metadata.EntryPoint) -> tuple[bool, Any]:
    """Load an entry point now if that is safe: not while its module is still being imported."""
    module = sys.modules.get(entry_point.module)
    if module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False):
        return False, None
    try:
        return True, entry_point.load()
    except Exception:  # a broken plugin is reported when it is asked for
        return False, None


def _source_of(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    mod = sys.modules.get(module)
    path = getattr(mod, "__file__", None)
    if module in _FILE_MODULES:
        return f"file {_FILE_MODULES[module]}"
    if module.startswith("bbvi_kit.") or module.startswith("bbvi_kit_plugins."):
        return f"built-in ({module})"
    return f"module {module}" + (f" ({path})" if path else "")


# One registry per plugin kind. Entry point groups are "bbvi_kit." + the plural kind.
models: Registry[Any] = Registry("model", ENTRY_POINT_PREFIX + "models")
datasets: Registry[Any] = Registry("dataset", ENTRY_POINT_PREFIX + "datasets")
objectives: Registry[Any] = Registry("objective", ENTRY_POINT_PREFIX + "objectives")
estimators: Registry[Any] = Registry("estimator", ENTRY_POINT_PREFIX + "estimators")
optimizers: Registry[Any] = Registry("optimizer", ENTRY_POINT_PREFIX + "optimizers")
schedules: Registry[Any] = Registry("schedule", ENTRY_POINT_PREFIX + "schedules")
activations: Registry[Any] = Registry("activation", ENTRY_POINT_PREFIX + "activations")
diagnostics: Registry[Any] = Registry("diagnostic", ENTRY_POINT_PREFIX + "diagnostics")

REGISTRIES: dict[str, Registry[Any]] = {
    r.kind: r for r in (models, datasets, objectives, estimators, optimizers, schedules, activations, diagnostics)
}


def disable_entry_points() -> None:
    """Turn off third-party entry points for the rest of this process (what
    ``BBVI_KIT_DISABLE_ENTRY_POINTS=1`` does from the start; ``bbvi-kit --no-entry-points``)."""
    os.environ[DISABLE_ENTRY_POINTS_ENV] = "1"
    for registry in REGISTRIES.values():
        registry.forget_third_party_entry_points()


def register_model(name: str) -> Callable[[T], T]:
    """Register a model plugin: a :class:`bbvi_kit.BBVIModel` subclass with an ``Options`` schema."""
    return models.register(name)


def register_dataset(name: str) -> Callable[[T], T]:
    """Register a dataset plugin: a :class:`bbvi_kit.data.DatasetPlugin` subclass."""
    return datasets.register(name)


def register_objective(name: str) -> Callable[[T], T]:
    """Register an objective plugin: a :class:`bbvi_kit.objectives.Objective` subclass."""
    return objectives.register(name)


def register_estimator(name: str) -> Callable[[T], T]:
    """Register a gradient estimator plugin: a :class:`bbvi_kit.estimators.Estimator` subclass."""
    return estimators.register(name)


def register_optimizer(name: str) -> Callable[[T], T]:
    """Register an optimizer plugin: a :class:`bbvi_kit.optim.OptimizerPlugin` subclass."""
    return optimizers.register(name)


def register_schedule(name: str) -> Callable[[T], T]:
    """Register a step-size schedule plugin: a :class:`bbvi_kit.optim.Schedule` subclass."""
    return schedules.register(name)


def register_activation(name: str) -> Callable[[T], T]:
    """Register an activation plugin: an ``nn.Module`` subclass with an ``Options`` schema."""
    return activations.register(name)


def register_diagnostic(name: str) -> Callable[[T], T]:
    """Register a diagnostic plugin: a :class:`bbvi_kit.diagnostics.Diagnostic` subclass."""
    return diagnostics.register(name)


# -- plugins named in a recipe ---------------------------------------------------------------
_FILE_MODULES: dict[str, str] = {}  # module name -> file path, for plugin files loaded here
_LOADED_FILES: dict[Path, str] = {}  # resolved path -> module name


def load_plugin_source(spec: str, base_dir: Path | None = None, key: str = "plugins") -> str:
    """Import a plugin file (``path/to/x.py``) or module (``pkg.mod``) so its decorators run.

    A file path is taken relative to ``base_dir`` (the recipe's folder) unless absolute. A file is
    imported once per process, under a module name derived from its resolved path. Returns what
    a resolved recipe records: the absolute file path, or the module name.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"{key}: expected a Python file path or module name, got {spec!r}")
    if spec.endswith(".py") or "/" in spec or os.sep in spec:
        path = Path(spec).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        path = path.resolve()
        if path in _LOADED_FILES:
            return str(path)
        if not path.is_file():
            raise InputError(f"{key}: plugin file not found: {path}")
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
        module_name = f"bbvi_kit_user_plugins.{path.stem}_{digest}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise InputError(f"{key}: cannot import plugin file {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        _FILE_MODULES[module_name] = str(path)
        try:
            module_spec.loader.exec_module(module)
        except InputError:
            del sys.modules[module_name]
            raise
        except Exception as exc:
            del sys.modules[module_name]
            raise InputError(f"{key}: plugin file {path} failed to import: {type(exc).__name__}: {exc}") from exc
        _LOADED_FILES[path] = module_name
        return str(path)
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        raise InputError(f"{key}: plugin module {spec!r} not found ({exc})") from exc
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{key}: plugin module {spec!r} failed to import: {type(exc).__name__}: {exc}") from exc
    return spec
