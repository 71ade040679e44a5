"""The parts of a training run that act after steps: metrics log, progress bar, evaluation,
diagnostics and checkpoints (each a :class:`bbvi_kit.train.Callback`)."""

from bbvi_kit.train.callbacks.checkpointing import Checkpointing
from bbvi_kit.train.callbacks.diagnostics import Diagnostics
from bbvi_kit.train.callbacks.evaluation import Evaluation
from bbvi_kit.train.callbacks.metrics import MetricsLog
from bbvi_kit.train.callbacks.progress import ProgressBar

__all__ = ["Checkpointing", "Diagnostics", "Evaluation", "MetricsLog", "ProgressBar"]
