"""The shape every plugin shares: a class with a nested pydantic ``Options`` schema."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError


class PluginOptions(BaseModel):
    """Base of every plugin's option schema. Unknown keys are errors, never silently dropped, and
    so are infinite or NaN numbers (``.inf`` in YAML): no option of bbvi-kit's takes one."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Configurable:
    """Mixin for plugins built from keyword options: ``Plugin(**options)`` validates them.

    ``self.options`` holds the validated :class:`PluginOptions` instance, so a plugin can be made
    from Python (``ELBO(num_particles=5)``) and from a recipe section with the same checks.
    """

    Options: ClassVar[type[PluginOptions]] = PluginOptions

    def __init__(self, **options: Any) -> None:
        self.options = self.Options(**options)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.options.model_dump().items())
        return f"{type(self).__name__}({fields})"


class NestedOptionsError(ValueError):
    """Raised inside a pydantic validator when a nested plugin spec (an activation inside a model's
    options) is invalid; keeps each problem's key relative to the field, so the recipe error can
    name the full dotted key (``model.activation.foo: unknown key``)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {msg}" if key else msg for key, msg in problems))


def validation_error_line(exc: ValidationError, prefix: str = "") -> str:
    """Every problem of ``exc`` on one line: ``key: message; key: message`` (keys dotted)."""
    return "; ".join(f"{key or '(top level)'}: {msg}" for key, msg in describe_validation_error(exc, prefix))


def describe_validation_error(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted key, one-line message)`` for every error in a pydantic ``ValidationError``."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        key = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        nested = (err.get("ctx") or {}).get("error")
        if isinstance(nested, NestedOptionsError):
            problems.extend((f"{key}.{sub}" if sub else key, msg) for sub, msg in nested.problems)
            continue
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "value_error" and nested is not None:
            msg = " ".join(str(nested).split())  # without pydantic's "Value error, " prefix
        else:
            msg = " ".join(err["msg"].split())
        problems.append((key, msg))
    return problems
