"""Squared gradient norms: the quantity the convergence theorems bound."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch


def squared_grad_norm(params: Sequence[torch.Tensor]) -> torch.Tensor:
    r"""||g||^2 = sum over parameters of the squared entries of ``p.grad``.

    Surendran et al. (AISTATS 2025) bound E||grad L(theta_R, phi_R)||^2 = O(log n / sqrt n) with
    R uniform on {0..n}, i.e. the running average of this quantity along the trajectory. Computed
    with one fused ``_foreach_norm`` and no host synchronisation. Parameters without a gradient
    count as zero; ``params`` must not be empty.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    return torch.stack(torch._foreach_norm(grads)).square().sum()


def squared_grad_norms(groups: Mapping[str, Sequence[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``{"total": ||g||^2, name: ||g_name||^2, ...}`` for named, disjoint, non-empty groups."""
    parts = {name: squared_grad_norm(params) for name, params in groups.items()}
    return {"total": torch.stack(list(parts.values())).sum(), **parts}
