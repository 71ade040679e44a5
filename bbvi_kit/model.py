"""The base class of model plugins: a Pyro model/guide pair that owns its networks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from bbvi_kit.data.base import DataInfo, DataSplits
from bbvi_kit.plugin import PluginOptions


class BBVIModel(nn.Module):
    """A model plugin: ``model(*batch)`` and ``guide(*batch)`` are Pyro programs over one batch.

    Subclass it, give it a nested pydantic ``Options`` schema (unknown keys are errors) and
    register it with ``@register_model("name")``. The constructor receives the :class:`DataInfo`
    of the recipe's dataset and the validated options as keywords.

    Conventions the engine relies on:

    - per-example latents live in a ``pyro.plate`` over the batch (any name) with negative
      ``dim``, and networks accept extra leading dims: K particles are drawn in one pass by an
      outer plate;
    - parameters are ordinary ``nn.Module`` parameters (no global param store);
    - :meth:`parameter_groups` says which parameters are the encoder / variational ones (``phi``)
      and which the decoder / model ones (``theta``); gradient norms are recorded per group.

    Class attributes: ``default_objective`` is the objective section used when a recipe has none;
    ``objectives`` restricts which objectives the plugin accepts (``None``: any); ``examples``
    says what per-example values divide by (``None``: the data plate, the outermost plate around
    every observed site; or a plate name, or a number; see :mod:`bbvi_kit.estimators._examples`).
    """

    if TYPE_CHECKING:  # a subclass's Options may be any PluginOptions (a nested class or an alias)
        Options: ClassVar[type[PluginOptions]]
    else:
        class Options(PluginOptions):
            pass

    options: PluginOptions

    default_objective: ClassVar[dict[str, Any]] = {"name": "elbo"}
    objectives: ClassVar[tuple[str, ...] | None] = None
    examples: ClassVar[str | int | None] = None

    def __init__(self, data: DataInfo, **options: Any) -> None:
        super().__init__()
        self.data_info = data
        self.options = self.Options(**options)

    def model(self, *batch: Any) -> Any:
        raise NotImplementedError

    def guide(self, *batch: Any) -> Any:
        raise NotImplementedError

    def reference_losses(self, data: DataSplits) -> dict[str, float]:
        """Exact values of evaluation columns this model can reach at best, if known in closed
        form (e.g. the Linear VAE's ``{"train_loss": exact pPCA negative log-likelihood}``).
        The engine then records ``<column>_gap`` at every evaluation. Default: none."""
        return {}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named groups of trainable parameters; by default all of them form ``theta``."""
        return {"theta": [p for p in self.parameters() if p.requires_grad]}
