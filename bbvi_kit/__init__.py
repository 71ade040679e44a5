"""bbvi-kit: black-box variational inference and VAEs on Pyro, with convergence diagnostics.

The public API. Build a run from a YAML recipe (``bbvi-kit run recipe.yaml``, or
:func:`run_recipe`) or from Python with :class:`Trainer` (epochs, evaluation, diagnostics,
checkpoints) or :class:`BBVI` (one step at a time, in your own loop, like ``pyro.infer.SVI``); register plugins with the
``register_*`` decorators.
"""

__version__ = "0.1.0"

from bbvi_kit.data import DataInfo, DatasetPlugin, DataSplits
from bbvi_kit.diagnostics import Diagnostic, DiagnosticContext, DiagnosticOptions
from bbvi_kit.config import TrainingOptions
from bbvi_kit.engine import History, Trainer
from bbvi_kit.errors import BBVIError, InputError, TrainingError
from bbvi_kit.estimators import Auto, BaselineNet, DReG, Estimator, Pathwise, PerGroup, ScoreFunction, StickingTheLanding
from bbvi_kit.infer import BBVI, StepResult
from bbvi_kit.loss import BBVILoss
from bbvi_kit.model import BBVIModel
from bbvi_kit.nn import activations as _activations  # noqa: F401  (registers activation plugins)
from bbvi_kit.objectives import ELBO, IWAE, BetaELBO, Objective, Renyi
from bbvi_kit.optim import SGD, Adam, AdamW, OptimizerPlugin, Schedule
from bbvi_kit.plugin import Configurable, PluginOptions
from bbvi_kit.registry import (
    register_activation,
    register_dataset,
    register_diagnostic,
    register_estimator,
    register_model,
    register_objective,
    register_optimizer,
    register_schedule,
)

__all__ = [
    "__version__",
    "Adam",
    "AdamW",
    "Auto",
    "BBVI",
    "BBVIError",
    "BaselineNet",
    "BBVILoss",
    "BBVIModel",
    "BetaELBO",
    "Configurable",
    "DataInfo",
    "DataSplits",
    "DatasetPlugin",
    "Diagnostic",
    "DiagnosticContext",
    "DiagnosticOptions",
    "DReG",
    "ELBO",
    "Estimator",
    "History",
    "IWAE",
    "InputError",
    "Objective",
    "OptimizerPlugin",
    "Pathwise",
    "PerGroup",
    "PluginOptions",
    "Renyi",
    "SGD",
    "Schedule",
    "ScoreFunction",
    "StepResult",
    "StickingTheLanding",
    "Trainer",
    "TrainingError",
    "TrainingOptions",
    "register_activation",
    "register_dataset",
    "register_diagnostic",
    "register_estimator",
    "register_model",
    "register_objective",
    "register_optimizer",
    "register_schedule",
]
