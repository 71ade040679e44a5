"""The shape every plugin shares: a class with a nested pydantic ``Options`` schema."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class PluginOptions(BaseModel):
    """Base of every plugin's option schema. Unknown keys are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


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
