"""Squared gradient norms of a step's gradient (the mini-batch g of the training step; the full-data
gradient the convergence theorems bound is the full_gradient diagnostic's)."""

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
    """``{"total": ||g||^2, name: ||g_name||^2, ...}`` for named, disjoint, non-empty groups.

    One fused ``_foreach_norm`` over every gradient, then a sum per group: a handful of kernels
    whatever the number of parameters, and no host synchronisation.
    """
    grads: list[torch.Tensor] = []
    counts: list[int] = []
    for params in groups.values():
        present = [p.grad for p in params if p.grad is not None]
        grads.extend(present)
        counts.append(len(present))
    if not grads:
        zero = torch.zeros((), device=next(iter(groups.values()))[0].device)
        return {"total": zero, **{name: zero for name in groups}}
    per_parameter = torch.stack(torch._foreach_norm(grads)).square()
    parts = {name: part.sum() for name, part in zip(groups, per_parameter.split(counts))}
    return {"total": per_parameter.sum(), **parts}
