"""What one pass of the training loss changes besides the parameters, saved so it can be undone.

A forward pass in train mode moves more than the parameters' gradients: the score-function
estimator's ``running_mean`` baseline takes in the pass's learning signal, and batch-norm layers
update their running statistics. A pass that must leave no trace (a diagnostic's extra passes, a
training step skipped because its loss or gradient was not finite) saves this state first and
puts it back afterwards.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


class PassState:
    """The estimator's state and every module buffer of ``trainer`` (anything with ``loss`` and
    ``modules``: a :class:`bbvi_kit.infer.BBVI` step, a diagnostic's
    :class:`bbvi_kit.diagnostics.TrainingState`), as they are now."""

    def __init__(self, trainer: Any) -> None:
        self._estimator = trainer.loss.estimator
        self.estimator_state: dict[str, Any] = copy.deepcopy(self._estimator.state_dict())
        self._buffers = [(b, b.detach().clone()) for m in trainer.modules for b in m.buffers()]

    def restore(self) -> None:
        """Put the saved estimator state and buffers back (the saved copy stays reusable)."""
        self._estimator.load_state_dict(copy.deepcopy(self.estimator_state))
        with torch.no_grad():
            for buffer, saved in self._buffers:
                buffer.copy_(saved)

    def keep_if(self, keep: torch.Tensor) -> None:
        """Keep the state the pass left where the 0-d bool tensor ``keep`` is true, else put the
        saved one back, on the device without reading ``keep`` (except where a state entry was
        ``None`` before or after the pass: then there is nothing to select between)."""
        current = self._estimator.state_dict()
        self._estimator.load_state_dict(_select(keep, current, self.estimator_state))
        with torch.no_grad():
            for buffer, saved in self._buffers:
                buffer.copy_(torch.where(keep, buffer, saved))


def _select(keep: torch.Tensor, new: Any, old: Any) -> Any:
    """``new`` where ``keep`` else ``old``, entry by entry through dicts, lists and tuples."""
    if isinstance(new, torch.Tensor) and isinstance(old, torch.Tensor) and new.shape == old.shape:
        return torch.where(keep, new, old)  # (a per-site average that restarted in another shape: below)
    if isinstance(new, dict) and isinstance(old, dict) and new.keys() == old.keys():
        return {k: _select(keep, new[k], old[k]) for k in new}
    if isinstance(new, (list, tuple)) and isinstance(old, (list, tuple)) and len(new) == len(old):
        return type(new)(_select(keep, a, b) for a, b in zip(new, old))
    return copy.deepcopy(new if bool(keep) else old)
