"""What one pass of the training loss changes besides the parameters, saved so it can be undone.

A forward pass in train mode moves more than the parameters' gradients: the score-function
estimator's ``running_mean`` baseline takes in the pass's learning signal, and batch-norm layers
update their running statistics. A pass that must leave no trace (a diagnostic's extra passes, a
training step skipped because its loss or gradient was not finite) saves this state first and
puts it back afterwards.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from bbvi_kit.engine import Trainer


class PassState:
    """The estimator's state and every module buffer of ``trainer``, as they are now."""

    def __init__(self, trainer: "Trainer") -> None:
        self._estimator = trainer.loss.estimator
        self.estimator_state: dict[str, Any] = copy.deepcopy(self._estimator.state_dict())
        self._buffers = [(b, b.detach().clone()) for m in trainer.modules for b in m.buffers()]

    def restore(self) -> None:
        """Put the saved estimator state and buffers back (the saved copy stays reusable)."""
        self._estimator.load_state_dict(copy.deepcopy(self.estimator_state))
        with torch.no_grad():
            for buffer, saved in self._buffers:
                buffer.copy_(saved)
