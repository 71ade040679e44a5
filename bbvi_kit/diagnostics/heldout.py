"""Held-out evaluation with many importance samples: the test IWAE bound and its standard error."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from bbvi_kit.diagnostics.base import Diagnostic, DiagnosticContext, DiagnosticOptions
from bbvi_kit.errors import InputError
from bbvi_kit.estimators._particles import guess_max_plate_nesting, trace_particles
from bbvi_kit.estimators._sites import auto_mode
from bbvi_kit.findings import Finding
from bbvi_kit.results.panels import SE_BAND
from bbvi_kit.results.run import Run
from bbvi_kit.results.table import Table, last_finite
from bbvi_kit.results.words import num, short
from bbvi_kit.registry import register_diagnostic


@register_diagnostic("heldout_iwae")
class HeldOutIWAE(Diagnostic):
    r"""Test negative ELBO and test negative IWAE_K bound with K = ``num_samples`` importance
    samples per example (Burda et al. 2016), each with its standard error.

    For test example x_i and z_ik ~ q(z | x_i), log w_ik = log p(x_i, z_ik) - log q(z_ik | x_i):

    .. math::
        \hat{\mathcal L}^{\rm ELBO}_i = \frac1K \sum_k \log w_{ik}, \qquad
        \hat{\mathcal L}^{K}_i = \log \frac1K \sum_k w_{ik},

    recorded as ``test_neg_elbo`` = -mean_i L^ELBO_i and ``test_neg_iwae`` = -mean_i L^K_i (nats
    per example; the IWAE value approaches -log p(x) from above as K grows). ``*_se`` is the
    standard error of each mean, sd_i / sqrt(n): the spread of the per-example estimates, which
    holds both the Monte Carlo noise of the K samples and the variation across test examples, so
    two runs' values differ significantly when they differ by a few of it.

    The K samples are drawn ``chunk_size`` at a time in one vectorised pass each and combined
    by a running log-sum-exp, so memory stays that of ``chunk_size`` particles for any K (5000
    included). Cost: K / chunk_size forward passes of model and guide over ``max_examples`` test
    examples (all by default), no backward pass. Runs in eval mode, without gradients.
    """

    class Options(DiagnosticOptions):
        num_samples: int = Field(100, ge=1, le=100_000, description="K_eval, importance samples per test example")
        chunk_size: int = Field(100, ge=1, le=100_000, description="samples drawn in one vectorised pass")
        batch_size: int | None = Field(None, ge=1, le=10_000_000, description="test examples per pass; null: training.eval_batch_size")
        max_examples: int | None = Field(None, ge=1, le=10**9, description="evaluate the first N test examples only")

    options: Options

    def measure(self, context: DiagnosticContext) -> dict[str, float]:
        o = self.options
        training = context.training
        if context.test is None:
            raise InputError("diagnostic heldout_iwae needs a test set")
        for m in training.modules:
            m.eval()
        batch_size = o.batch_size or training.eval_batch_size
        elbo_rows, iwae_rows = [], []
        seen = 0
        with torch.no_grad():
            for args in context.batches(context.test, batch_size):
                if o.max_examples is not None:
                    if seen >= o.max_examples:
                        break
                    args = tuple(a[: o.max_examples - seen] if isinstance(a, torch.Tensor) else a for a in args)
                elbo, iwae = self.per_example(training.model, training.guide, args, training.loss.max_plate_nesting)
                seen += elbo.numel()
                elbo_rows.append(elbo)
                iwae_rows.append(iwae)
        elbo, iwae = torch.cat(elbo_rows).double(), torch.cat(iwae_rows).double()
        return {
            "test_neg_elbo": -elbo.mean().item(),
            "test_neg_elbo_se": _standard_error(elbo),
            "test_neg_iwae": -iwae.mean().item(),
            "test_neg_iwae_se": _standard_error(iwae),
            "num_samples": o.num_samples,
            "num_examples": elbo.numel(),
        }

    def per_example(self, model, guide, args: tuple, max_plate_nesting: int | None) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
        """Per-example ELBO and IWAE_K estimates (``[n]`` each) of one batch, K drawn in chunks."""
        if max_plate_nesting is None:
            max_plate_nesting = guess_max_plate_nesting(model, guide, args, {})
        remaining = self.options.num_samples
        log_sum_exp: torch.Tensor | None = None
        log_w_sum: torch.Tensor | None = None
        while remaining > 0:
            k = min(self.options.chunk_size, remaining)
            log_w = trace_particles(model, guide, args, {}, num_particles=k, max_plate_nesting=max_plate_nesting,
                                    policy=auto_mode).log_weights
            if log_w.dim() < 2:
                raise InputError("diagnostic heldout_iwae needs latents in a plate over the examples (a per-example "
                                 "log weight); this model's latents are all global")
            log_w = log_w.flatten(start_dim=1).double()
            chunk_lse = torch.logsumexp(log_w, dim=0)
            log_sum_exp = chunk_lse if log_sum_exp is None else torch.logaddexp(log_sum_exp, chunk_lse)
            log_w_sum = log_w.sum(0) if log_w_sum is None else log_w_sum + log_w.sum(0)
            remaining -= k
        assert log_sum_exp is not None and log_w_sum is not None
        k_total = self.options.num_samples
        return log_w_sum / k_total, log_sum_exp - math.log(k_total)

    headline_column = "test_neg_iwae"  # the column whose trend the report states

    @classmethod
    def findings(cls, table: Table, run: Run, label: str = "") -> list[Finding]:
        """The last test −IWAE_K bound (± 2 SE) against the test −ELBO of the same evaluation."""
        iwae, elbo = last_finite(table, "test_neg_iwae"), last_finite(table, "test_neg_elbo")
        if iwae is None:
            return []
        who = f"{label}: " if label else ""
        se = last_finite(table, "test_neg_iwae_se")
        k = last_finite(table, "num_samples")
        k_text = f" with K = {num(k[1])} samples" if k is not None else ""
        iw = f"{short(iwae[1])}" + (f" ± {short(SE_BAND * se[1])}" if se is not None else "")
        text = f"{who}at n = {num(iwae[0])} the test −IWAE bound{k_text} is {iw} nats per example"
        numbers = {"step": iwae[0], "test_neg_iwae": iwae[1]}
        if se is not None:
            text += f" (± {SE_BAND:g} SE)"
            numbers["test_neg_iwae_se"] = se[1]
        if k is not None:
            numbers["num_samples"] = k[1]
        if elbo is not None and elbo[0] == iwae[0]:
            ese = last_finite(table, "test_neg_elbo_se")
            el = f"{short(elbo[1])}" + (f" ± {short(SE_BAND * ese[1])}" if ese is not None else "")
            text += f" against a test −ELBO of {el}: the IWAE bound is {short(elbo[1] - iwae[1])} nats tighter"
            numbers.update(test_neg_elbo=elbo[1], gap=elbo[1] - iwae[1])
        return [Finding(text + ".", "info", "diagnostic:heldout_iwae", numbers)]


def _standard_error(values: torch.Tensor) -> float:
    n = values.numel()
    return (values.std(unbiased=True) / math.sqrt(n)).item() if n > 1 else float("nan")
