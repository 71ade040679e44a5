"""Training: the loop (:func:`fit`) and the callbacks that act after its steps."""

from bbvi_kit.train.callback import Callback, LoopState
from bbvi_kit.train.loop import fit

__all__ = ["Callback", "LoopState", "fit"]
