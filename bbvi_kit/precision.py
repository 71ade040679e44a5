"""Mixed precision for a run's networks (``training.precision``): bf16 or fp16 inside them, float32 outside.

With ``bf16`` (or ``fp16``), every call of a network, meaning a direct child module of the modules the run
trains (a model plugin's encoder and decoder, or the submodules of the ``nn.Module`` whose methods
are the model and guide), runs under ``torch.autocast`` with bfloat16 (float16), and the floating-point
tensors it returns are cast back to float32. So the matrix products and convolutions, most of a
VAE step's arithmetic, run in bfloat16, while every distribution that model and guide build
from those outputs, every latent draw, log density and the bound are float32: the particle pass,
the estimators and the squared gradient norms see float32 tensors, and the parameters, their
gradients and the optimizer state stay float32 (autocast casts weights on the fly).

CPU and CUDA autocast keep different operators in float32 (on the CPU ``log``, ``softplus`` and
``sum`` of a bfloat16 tensor stay bfloat16): casting at the networks' boundary makes the log
densities float32 on both. A network called outside those modules (a ``pyro.module`` net that the
run was not given) runs in float32.

With ``fp16``, whose range is narrow, the step also scales the loss with ``torch.amp``'s gradient
scaler before the backward pass and unscales the gradient before its norms, clipping and the
update (:class:`bbvi_kit.infer.bbvi.BBVI`): a step whose loss is finite but whose gradient
overflowed makes no update and lowers the scale, as ``torch.amp`` does; it is counted in the
``scaler_skips`` column of ``metrics.csv`` and has no row of its own (its norms are infinite), and it
is not a non-finite step of the run. As in ``torch.amp``, such a step has moved batch-norm
statistics and a running baseline (unless ``on_nonfinite: skip`` puts them back).

Reference: Micikevicius et al., "Mixed Precision Training", ICLR 2018; Kalamkar et al., "A Study
of BFLOAT16 for Deep Learning Training", 2019.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal

import torch
from torch import nn

from bbvi_kit.devices import map_tensors

Precision = Literal["fp32", "bf16", "fp16"]
LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _to_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor


class NetworkAutocast:
    """Run the direct children of ``modules`` under autocast with ``dtype`` on ``device_type``,
    their outputs cast back to float32 (module docstring); :meth:`remove` takes the hooks off."""

    def __init__(self, modules: Iterable[nn.Module], device_type: str, precision: Precision) -> None:
        self.dtype = LOW[precision]
        self.device_type = device_type
        self._open: list[torch.autocast] = []  # (a network called inside another's call nests)
        self._handles = []
        for module in modules:
            for network in module.children() if any(True for _ in module.children()) else [module]:
                self._handles.append(network.register_forward_pre_hook(self._enter))
                self._handles.append(network.register_forward_hook(self._exit, always_call=True))

    def _enter(self, module: nn.Module, args: Any) -> None:
        context = torch.autocast(self.device_type, dtype=self.dtype)
        context.__enter__()
        self._open.append(context)

    def _exit(self, module: nn.Module, args: Any, output: Any) -> Any:
        self._open.pop().__exit__(None, None, None)
        return map_tensors(output, _to_float32)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
