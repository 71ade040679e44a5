"""Neural-network building blocks for model plugins."""

from bbvi_kit.nn.activations import GeneralizedSoftClipping, soft_clip
from bbvi_kit.nn.conv import ConvDecoder, ConvEncoder, conv_decoder, conv_encoder, conv_shape_problem
from bbvi_kit.nn.mlp import ActivationSpec, check_activation, deepen, make_activation, mlp

__all__ = [
    "ActivationSpec",
    "ConvDecoder",
    "ConvEncoder",
    "GeneralizedSoftClipping",
    "check_activation",
    "conv_decoder",
    "conv_encoder",
    "conv_shape_problem",
    "deepen",
    "make_activation",
    "mlp",
    "soft_clip",
]
