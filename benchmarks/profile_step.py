"""Where the engine's step spends its time, next to the hand-written step's.

The step is cut into its phases (forward pass to the loss, backward, squared gradient norms and
finiteness check, optimizer step), each timed with the clock around it, for the engine's pieces
(:class:`bbvi_kit.BBVILoss` over the Pyro model and guide, ``squared_grad_norms``) and the
hand-written loss. The forward pass is also run under ``torch.profiler``, which sums the time
spent inside torch operators: what is left of the wall time is Python, i.e. Pyro's tracing
machinery for the engine. Medians over interleaved steps.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from typing import Any

import pyro
import torch

from benchmarks.training_step import Case, build_vae, handwritten_loss, make_data
from bbvi_kit import ELBO, IWAE, BBVILoss, Pathwise, ScoreFunction
from bbvi_kit.diagnostics.gradients import squared_grad_norms


def _operator_ms(fn: Any, repeats: int) -> float:
    """Mean time per call spent inside torch operators (self CPU time of every aten op)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    total_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith("aten::"))
    return total_us / 1e3 / repeats


def run(case: Case, *, rounds: int = 12, steps: int = 20) -> dict[str, Any]:
    """Median milliseconds per phase for ``bbvi-kit`` and ``hand-written``, and the forward
    pass's time inside torch operators."""
    data = make_data(case, steps)
    engine_vae, hand_vae = build_vae(case), build_vae(case)
    objective = (IWAE if case.objective == "iwae" else ELBO)(num_particles=case.num_particles)
    estimator = Pathwise() if case.estimator == "pathwise" else ScoreFunction()
    loss = BBVILoss(engine_vae.model, engine_vae.guide, objective, estimator, max_plate_nesting=1)
    groups = engine_vae.parameter_groups()
    engine_opt = torch.optim.Adam(engine_vae.parameters(), lr=1e-3)
    hand_opt = torch.optim.Adam(hand_vae.parameters(), lr=1e-3)
    hand_loss = handwritten_loss(case)
    phases: dict[str, dict[str, list[float]]] = {"bbvi-kit": defaultdict(list), "hand-written": defaultdict(list)}
    b = case.batch_size
    with pyro.validation_enabled(False):
        for r in range(rounds + 1):
            for i in range(steps):
                x = data[i * b:(i + 1) * b]
                keep = r > 0  # the first round warms up
                t = [time.perf_counter()]
                result = loss(x)
                t.append(time.perf_counter())
                engine_opt.zero_grad(set_to_none=True)
                result.surrogate.backward()
                value = result.loss.detach()
                del result
                t.append(time.perf_counter())
                norms = squared_grad_norms(groups)
                bool(torch.isfinite(value) & torch.isfinite(norms["total"]))
                t.append(time.perf_counter())
                engine_opt.step()
                t.append(time.perf_counter())
                h = [time.perf_counter()]
                hand = hand_loss(hand_vae, x)
                h.append(time.perf_counter())
                hand_opt.zero_grad(set_to_none=True)
                hand.backward()
                h.append(time.perf_counter())
                h.append(h[-1])  # no norms
                hand_opt.step()
                h.append(time.perf_counter())
                if keep:
                    for name, stamps in (("bbvi-kit", t), ("hand-written", h)):
                        for phase, a, z in zip(("forward", "backward", "norms + check", "optimizer"), stamps, stamps[1:]):
                            phases[name][phase].append(z - a)
        x = data[:b]
        operators = {"bbvi-kit": _operator_ms(lambda: loss(x), 30),
                     "hand-written": _operator_ms(lambda: hand_loss(hand_vae, x), 30)}
    return {
        "case": case.name,
        "title": case.title,
        "phases_ms": {name: {p: 1e3 * statistics.median(v) for p, v in ph.items()} for name, ph in phases.items()},
        "forward_in_operators_ms": operators,
    }
