"""The short names of recipe keys and plugins in legends and labels (``K=5``, ``Adam``,
``soft-clip s=2``), and the recipe keys that never split runs into groups: one place for all."""

from __future__ import annotations

__all__ = ["ACTIVATION_NAMES", "ACTIVATION_OPTIONS", "IGNORED_KEYS", "OBJECTIVE_NAMES", "OPTIMIZER_NAMES",
           "SHORT_NAMES"]

IGNORED_KEYS = frozenset({
    "name", "description", "plugins", "output",
    "training.seed", "training.device", "training.progress", "training.flush_every",
})
"""Recipe keys (sections or ``section.option``) that never split runs into groups."""

SHORT_NAMES = {
    "objective.num_particles": "K",
    "training.batch_size": "B",
    "objective.beta": "β",
    "model.latent_dim": "d_z",
    "optimizer.lr": "γ₀",
}
"""Recipe keys written as a symbol in labels (``K=5``)."""

OBJECTIVE_NAMES = {"elbo": "ELBO", "iwae": "IWAE", "beta": "β-ELBO"}
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad"}
ACTIVATION_NAMES = {"generalized_soft_clipping": "soft-clip"}
ACTIVATION_OPTIONS = {"sharpness": "s", "alpha": "α", "beta": "β"}
