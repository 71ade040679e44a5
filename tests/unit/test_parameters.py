"""Which trainable tensors a step uses and whose they are (:mod:`bbvi_kit.parameters`): a param
site belongs to the program whose trace holds it, a module parameter used directly to the guide
(``phi``) when the guide's sites depend on it, else to the model (``theta``); declared groups come
first; tensors first used after the first step join their group; each tensor has one stable key."""

from __future__ import annotations

from typing import Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.poutine.trace_struct import Trace
from torch import nn

from bbvi_kit.errors import TrainingError
from bbvi_kit.parameters import ParameterGroups

DATA = torch.tensor([[0.5], [-1.0]])


def traces(model: Callable, guide: Callable, *args: object) -> tuple[Trace, Trace]:
    """(model trace, guide trace) of one particle, with the log densities the walk starts from."""
    guide_trace = poutine.trace(guide).get_trace(*args)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    return model_trace, guide_trace


def linear(seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(1, 1)


def ids(tensors: list[torch.Tensor]) -> list[int]:
    return [id(t) for t in tensors]


def test_param_sites_belong_to_the_program_whose_trace_holds_them() -> None:
    def model(x: torch.Tensor) -> None:
        w = pyro.param("w", torch.tensor(1.0))
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(w * z, 1.0).expand(x.shape).to_event(2), obs=x)

    def guide(x: torch.Tensor) -> None:
        loc = pyro.param("loc", torch.tensor(0.0))
        scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
        pyro.sample("z", dist.Normal(loc, scale))

    groups = ParameterGroups([])
    new = groups.update(*traces(model, guide, DATA))
    store = pyro.get_param_store()
    loc, scale, w = (store.get_param(n).unconstrained() for n in ("loc", "scale", "w"))
    assert list(groups.groups) == ["phi", "theta"]  # the guide's group first
    assert ids(groups.groups["phi"]) == ids([loc, scale])  # the unconstrained leaf of a constrained param
    assert ids(groups.groups["theta"]) == ids([w])
    assert ids(new) == ids([loc, scale, w]) and ids(groups.parameters) == ids([loc, scale, w])
    assert groups.key_lists() == {"phi": ["param:loc", "param:scale"], "theta": ["param:w"]}


def test_modules_used_directly_are_split_by_what_the_guides_sites_depend_on() -> None:
    encoder, decoder, shared, unused = linear(0), linear(1), linear(2), linear(3)

    def model(x: torch.Tensor) -> None:
        z = pyro.sample("z", dist.Normal(torch.zeros(2, 1), 1.0).to_event(2))
        pyro.sample("x", dist.Normal(decoder(z) + shared(z), 1.0).to_event(2), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.sample("z", dist.Normal(encoder(x) + shared(x), 1.0).to_event(2))

    groups = ParameterGroups([encoder, decoder, shared, unused])
    groups.update(*traces(model, guide, DATA))
    # shared reaches both programs: the guide's, and counted once
    assert ids(groups.groups["phi"]) == ids([encoder.weight, encoder.bias, shared.weight, shared.bias])
    assert ids(groups.groups["theta"]) == ids([decoder.weight, decoder.bias])
    assert groups.key_lists() == {"phi": ["module:0.weight", "module:0.bias", "module:2.weight", "module:2.bias"],
                                  "theta": ["module:1.weight", "module:1.bias"]}
    assert id(unused.weight) not in groups.keys  # no trace reached it


def test_a_registered_module_is_keyed_by_its_param_sites() -> None:
    encoder, decoder = linear(0), linear(1)

    def model(x: torch.Tensor) -> None:
        pyro.module("decoder", decoder)
        z = pyro.sample("z", dist.Normal(torch.zeros(2, 1), 1.0).to_event(2))
        pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(2), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.module("encoder", encoder)
        pyro.sample("z", dist.Normal(encoder(x), 1.0).to_event(2))

    groups = ParameterGroups([encoder, decoder])
    groups.update(*traces(model, guide, DATA))
    assert groups.key_lists() == {"phi": ["param:encoder$$$weight", "param:encoder$$$bias"],
                                  "theta": ["param:decoder$$$weight", "param:decoder$$$bias"]}
    assert ids(groups.groups["phi"]) == ids([encoder.weight, encoder.bias])


def test_frozen_tensors_are_not_trained() -> None:
    encoder, decoder = linear(0), linear(1)
    encoder.bias.requires_grad_(False)

    def model(x: torch.Tensor) -> None:
        z = pyro.sample("z", dist.Normal(torch.zeros(2, 1), 1.0).to_event(2))
        pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(2), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.sample("z", dist.Normal(encoder(x), 1.0).to_event(2))

    groups = ParameterGroups([encoder, decoder])
    groups.update(*traces(model, guide, DATA))
    assert ids(groups.groups["phi"]) == ids([encoder.weight])


def test_tensors_first_used_later_join_their_group_once() -> None:
    encoder, decoder, late_module = linear(0), linear(1), linear(2)
    stage = {"late": False}

    def model(x: torch.Tensor) -> None:
        z = pyro.sample("z", dist.Normal(torch.zeros(2, 1), 1.0).to_event(2))
        pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(2), obs=x)

    def guide(x: torch.Tensor) -> None:
        loc = encoder(x)
        if stage["late"]:  # a lazily used module and a per-item param appear on the second step
            loc = loc + late_module(x) + pyro.param("item_3", torch.zeros(1))
        pyro.sample("z", dist.Normal(loc, 1.0).to_event(2))

    groups = ParameterGroups([encoder, decoder, late_module])
    first = groups.update(*traces(model, guide, DATA))
    assert ids(first) == ids([encoder.weight, encoder.bias, decoder.weight, decoder.bias])
    assert groups.update(*traces(model, guide, DATA)) == []  # nothing new
    stage["late"] = True
    new = groups.update(*traces(model, guide, DATA))
    item = pyro.get_param_store().get_param("item_3").unconstrained()
    assert ids(new) == ids([item, late_module.weight, late_module.bias])  # param sites before the graph walk
    assert groups.key_lists()["phi"] == ["module:0.weight", "module:0.bias", "param:item_3", "module:2.weight",
                                         "module:2.bias"]
    assert groups.update(*traces(model, guide, DATA)) == []


def test_a_group_that_first_appears_after_the_first_step_is_refused_naming_the_tensor() -> None:
    stage = {"late": False}

    def model(x: torch.Tensor) -> None:
        w = pyro.param("late_w", torch.tensor(1.0)) if stage["late"] else torch.tensor(1.0)
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(w * z, 1.0).expand(x.shape).to_event(2), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.sample("z", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0))

    groups = ParameterGroups([])
    groups.update(*traces(model, guide, DATA))
    stage["late"] = True
    with pytest.raises(TrainingError) as excinfo:
        groups.update(*traces(model, guide, DATA))
    assert str(excinfo.value) == (
        "parameter 'param:late_w' of the theta group first appears after the first step, which found no theta "
        "parameter; create one before training or declare the groups (parameter_groups)")


def test_a_pair_without_trainable_tensors_is_refused() -> None:
    def model(x: torch.Tensor) -> None:
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0).expand(x.shape).to_event(2), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(TrainingError, match="^the model and guide have no trainable parameters$"):
        ParameterGroups([linear(0)]).update(*traces(model, guide, DATA))  # a module no trace uses


def test_declared_groups_come_first_in_their_order_and_param_sites_are_added() -> None:
    encoder, decoder = linear(0), linear(1)
    extra = torch.zeros(1, requires_grad=True)  # declared, but in no module

    def model(x: torch.Tensor) -> None:
        z = pyro.sample("z", dist.Normal(torch.zeros(2, 1), 1.0).to_event(2))
        prior_w = pyro.param("prior_w", torch.tensor(1.0))
        pyro.sample("x", dist.Normal(prior_w * decoder(z) + extra, 1.0).to_event(2), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.sample("z", dist.Normal(encoder(x), 1.0).to_event(2))

    calls = []

    def declared() -> dict[str, list[torch.Tensor]]:
        calls.append(1)
        return {"decoder": [decoder.weight, decoder.bias, extra], "encoder": [encoder.weight]}

    groups = ParameterGroups([encoder, decoder], declared=declared)
    groups.update(*traces(model, guide, DATA))
    assert groups.key_lists() == {"decoder": ["module:1.weight", "module:1.bias", "declared:decoder.2"],
                                  "encoder": ["module:0.weight"], "theta": ["param:prior_w"]}
    assert id(encoder.bias) not in groups.keys  # declared groups are taken as given: no graph walk
    groups.update(*traces(model, guide, DATA))
    assert calls == [1]  # asked on the first step only
