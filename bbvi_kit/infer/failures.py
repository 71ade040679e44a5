"""How a failing step is reported: one line naming the step, and a refused value told apart.

Under Pyro's and torch's argument validation, a distribution whose parameter or observed value
is outside its support (a NaN loc, a non-positive scale) raises a ``ValueError`` before the loss
can be checked for finiteness; that is a non-finite step for ``on_nonfinite``, so it is raised as
a :class:`RefusedValueError`.
"""

from __future__ import annotations

from bbvi_kit.errors import TrainingError

REFUSED_VALUE = "but found invalid values"
"""What torch.distributions says when a distribution's argument or observed value is outside its
constraint (a NaN loc, a non-positive scale) under argument validation."""


class RefusedValueError(TrainingError):
    """A distribution in the model or guide refused a NaN or out-of-support value at a step: a
    non-finite step for ``on_nonfinite``."""


def failed_at(step: int, epoch: int, what: str, exc: Exception) -> TrainingError:
    """A one-line error naming the step and what failed. Only the head of the original message
    is kept: torch and Pyro append tensor dumps and trace shapes. Pyro words a failing site as
    ``Error while computing log_prob at site 'x':`` with the cause on the next line; that line
    is kept too. A refused value (:data:`REFUSED_VALUE`) gives a :class:`RefusedValueError`."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [""]
    head = lines[0]
    if head.endswith(":") and len(lines) > 1 and not lines[1].startswith("tensor("):
        head = f"{head} {lines[1]}"
    message = f"step {step} (epoch {epoch}): {what} failed: {type(exc).__name__}: {head.rstrip(':')}"
    if isinstance(exc, ValueError) and REFUSED_VALUE in str(exc):
        return RefusedValueError(message)
    return TrainingError(message)
