"""Configuration: the options of a recipe's sections, below everything that reads them."""

from bbvi_kit.config.training import TrainingOptions

__all__ = ["TrainingOptions"]
