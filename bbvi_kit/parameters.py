"""Which trainable tensors a step uses, and whether each is the guide's (phi) or the model's (theta).

The split is the product's headline diagnostic (Surendran et al., AISTATS 2025, bound the phi
and theta parts of the gradient with different rates), so it follows the traces, not module
ownership:

- a ``pyro.param`` site (``pyro.module`` registers one per module parameter) belongs to the
  program whose trace holds it: the guide's to ``phi``, the model's to ``theta``;
- a parameter of a module that model or guide use directly (a method of an ``nn.Module``, no
  param site) belongs to ``phi`` when the guide's values or log densities depend on it (a walk
  of the autograd graph from the guide's sites), else to ``theta`` when the model's do;
- a plugin (or caller) may declare the groups itself (``parameter_groups``); param sites that
  its traces add are classified as above.

A tensor reached by both programs is ``phi`` (the guide comes first), and each is counted once.
A module parameter that no trace has reached yet costs a walk of the step's autograd graph (a few
hundred nodes for a VAE) on every step until it is reached; param sites and declared groups cost
a look at the traces' param nodes only.
Parameters are found on every step: one created after the first (a per-item ``pyro.param``
inside a subsampled plate, a lazily built module) joins its group, and the optimizer, the step
it first appears. Each tensor has a stable key (``param:<name>`` or ``module:<i>.<qualified
name>``) that checkpoints use to put values and optimizer state back.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence, cast

import torch
from pyro.poutine.trace_struct import Trace
from torch import nn
from torch.autograd.graph import Node

from bbvi_kit.errors import TrainingError

GroupsFn = Callable[[], Mapping[str, Sequence[torch.Tensor]]]


def leaf_tensors(roots: Iterable[Any]) -> dict[int, torch.Tensor]:
    """Every leaf tensor that requires a gradient (a parameter) in the autograd graphs of
    ``roots``, by ``id``."""
    found: dict[int, torch.Tensor] = {}
    stack: list[Node | None] = []
    for root in roots:
        if isinstance(root, torch.Tensor) and root.requires_grad:
            if root.grad_fn is None:
                found[id(root)] = root
            else:
                stack.append(root.grad_fn)
    seen: set[Any] = set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf tensor
        if variable is not None:
            found[id(variable)] = variable
        stack.extend(child for child, _ in node.next_functions)
    return found


def _graph_leaves(roots: Iterable[Any], wanted: dict[int, torch.Tensor]) -> set[int]:
    """``id``s of the tensors in ``wanted`` that the autograd graphs of ``roots`` reach."""
    return {i for i in leaf_tensors(roots) if i in wanted}


def site_tensors(trace: Trace) -> list[Any]:
    """The values and log densities of the sample sites of ``trace`` (the roots of its graph)."""
    tensors: list[Any] = []
    for site in trace.nodes.values():
        if site["type"] == "sample":
            tensors += [site.get("value"), site.get("unscaled_log_prob"), site.get("log_prob")]
    return tensors


class ParameterGroups:
    """The named groups of trainable tensors of a model/guide pair; see the module docstring.

    Args:
        modules: modules whose parameters model and guide may use directly (a model that is an
            ``nn.Module`` or a method of one); each is given its index for the keys.
        declared: optional callable giving the groups (a model plugin's ``parameter_groups``).
    """

    def __init__(self, modules: Sequence[nn.Module], declared: GroupsFn | None = None) -> None:
        self.modules = list(modules)
        self.declared = declared
        self.groups: dict[str, list[torch.Tensor]] = {}
        self.keys: dict[int, str] = {}  # id(tensor) -> stable key
        self._module_keys: dict[int, str] = {}
        self._unresolved: dict[int, torch.Tensor] = {}  # module parameters no trace has reached yet
        self._fixed = False  # the group names are fixed after the first update

    def _module_key(self, tensor: torch.Tensor, fallback: str) -> str:
        """The key of a module parameter (modules may create parameters lazily: looked up anew
        when one is not known yet)."""
        if id(tensor) not in self._module_keys:
            self._module_keys = {id(p): f"module:{i}.{name}" for i, m in enumerate(self.modules)
                                 for name, p in m.named_parameters()}
        return self._module_keys.get(id(tensor), fallback)

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [p for params in self.groups.values() for p in params]

    def key_lists(self) -> dict[str, list[str]]:
        return {name: [self.keys[id(p)] for p in params] for name, params in self.groups.items()}

    def _add(self, group: str, tensor: torch.Tensor, key: str, new: list[torch.Tensor]) -> None:
        if not tensor.requires_grad or id(tensor) in self.keys:
            return
        self.keys[id(tensor)] = key
        self._unresolved.pop(id(tensor), None)
        if group not in self.groups:
            if self._fixed:  # the metrics' columns were fixed on the first step
                raise TrainingError(
                    f"parameter {key!r} of the {group} group first appears after the first step, which found no "
                    f"{group} parameter; create one before training or declare the groups (parameter_groups)"
                )
            self.groups[group] = []
        self.groups[group].append(tensor)
        new.append(tensor)

    def update(self, model_trace: Trace, guide_trace: Trace) -> list[torch.Tensor]:
        """Classify what this step's traces use that no earlier step did; returns the tensors that
        are new, in group order. Call it before ``backward`` (the graph is walked)."""
        first = not self._fixed
        new: list[torch.Tensor] = []
        pending: dict[str, list[tuple[torch.Tensor, str]]] = {"phi": [], "theta": []}
        if first and self.declared is not None:
            for group, params in self.declared().items():
                for p in params:
                    items = pending.setdefault(group, [])
                    items.append((p, self._module_key(p, f"declared:{group}.{len(items)}")))
        for group, trace in (("phi", guide_trace), ("theta", model_trace)):
            for site in trace.nodes.values():
                if site["type"] == "param":  # its value is set: Pyro's constrained parameter tensor
                    pending[group].append((cast(Any, site["value"]).unconstrained(), f"param:{site['name']}"))
        if first and self.declared is None:
            self._unresolved = {id(p): p for m in self.modules for p in m.parameters() if p.requires_grad}
        if self._unresolved:
            guide_found = _graph_leaves(site_tensors(guide_trace), self._unresolved)
            model_found = _graph_leaves(site_tensors(model_trace), self._unresolved)
            for pid, p in list(self._unresolved.items()):
                if pid in guide_found or pid in model_found:
                    pending["phi" if pid in guide_found else "theta"].append((p, self._module_key(p, f"tensor:{pid}")))
        # Empty groups are left out; the declared order (or phi before theta) is kept.
        for group, items in pending.items():
            for tensor, key in items:
                self._add(group, tensor, key, new)
        if first and not self.groups:
            raise TrainingError("the model and guide have no trainable parameters")
        self._fixed = True
        return new
