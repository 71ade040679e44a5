"""Neural-network building blocks for model plugins."""

from bbvi_kit.nn.activations import GeneralizedSoftClipping, soft_clip
from bbvi_kit.nn.mlp import ActivationSpec, check_activation, make_activation, mlp

__all__ = ["ActivationSpec", "GeneralizedSoftClipping", "check_activation", "make_activation", "mlp", "soft_clip"]
