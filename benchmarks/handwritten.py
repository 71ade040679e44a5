"""The hand-written PyTorch baseline: the Gaussian VAE plugin's objectives and estimators written
out with plain tensor operations, no Pyro.

It uses the plugin's own networks (``encode`` / ``decode``) and computes, with the formulas
``torch.distributions`` uses, the per-example log weights of K particles

    log w[k, b] = log p(x_b | z_kb) + log p(z_kb) - log q(z_kb | x_b),   z_kb ~ q(z | x_b),

then the same surrogate losses the engine builds. The random draws are made in the order and
with the calls Pyro's distributions make, so for one seed the values are bit-identical to
``bbvi_kit.BBVILoss`` on the plugin's Pyro model and guide (``tests/integration/test_benchmarks.py``
checks it): the benchmark times the same computation two ways, not two different estimators.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bbvi_kit_plugins.gaussian_vae import GaussianVAE

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


def normal_log_prob(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(value; loc, scale^2) entry by entry, as ``torch.distributions.Normal.log_prob``."""
    return -((value - loc) ** 2) / (2 * scale**2) - scale.log() - _LOG_SQRT_2PI


def log_weights(vae: GaussianVAE, x: torch.Tensor, num_particles: int, *,
                reparameterized: bool = True, stop_q: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log w, log q)``, both ``[K, B]``, for the batch ``x`` of the Gaussian VAE ``vae``.

    ``reparameterized``: z = loc + scale * eps carries gradients to the encoder (pathwise);
    otherwise z is drawn without a gradient path (score function), ``log q`` is the factor of
    the score term, and it enters ``log w`` without its direct gradient (zero in expectation for
    the ELBO, as in Pyro's ``Trace_ELBO``). ``stop_q``: log q evaluated at z with the encoder's
    outputs detached (sticking the landing).
    """
    n_event = len(vae.event_shape)
    loc, scale = vae.encode(x)
    shape = (num_particles, *loc.shape)
    loc, scale = loc.expand(shape), scale.expand(shape)
    if reparameterized:
        z = loc + torch.empty(shape, dtype=loc.dtype, device=loc.device).normal_() * scale
    else:
        with torch.no_grad():
            z = torch.normal(loc, scale)
    out = vae.decode(z)
    target = x.expand(out.shape)
    if vae.options.likelihood == "bernoulli":
        log_px = -F.binary_cross_entropy_with_logits(out, target, reduction="none")
    else:
        mean = torch.sigmoid(out) if vae.options.decoder_output == "sigmoid" else out
        scale_x = torch.full_like(mean, vae.options.decoder_scale)
        log_px = normal_log_prob(target, mean, scale_x)
    log_px = log_px.reshape(log_px.shape[: log_px.dim() - n_event] + (-1,)).sum(-1)
    log_pz = normal_log_prob(z, torch.zeros_like(z), torch.ones_like(z)).sum(-1)
    log_q = normal_log_prob(z, loc.detach(), scale.detach()).sum(-1) if stop_q else normal_log_prob(z, loc, scale).sum(-1)
    return log_pz + log_px - (log_q if reparameterized else log_q.detach()), log_q


def elbo_loss(vae: GaussianVAE, x: torch.Tensor, num_particles: int = 1) -> torch.Tensor:
    """Pathwise negative ELBO in nats per example: -(1/B) sum_b mean_k log w[k, b]."""
    log_w, _ = log_weights(vae, x, num_particles)
    return -log_w.mean(0).sum() / x.shape[0]


def iwae_loss(vae: GaussianVAE, x: torch.Tensor, num_particles: int) -> torch.Tensor:
    """Pathwise negative IWAE_K bound: -(1/B) sum_b log (1/K) sum_k w[k, b] (Burda et al. 2016)."""
    log_w, _ = log_weights(vae, x, num_particles)
    bound = torch.logsumexp(log_w, dim=0) - math.log(num_particles)
    return -bound.sum() / x.shape[0]


def score_elbo_loss(vae: GaussianVAE, x: torch.Tensor, num_particles: int) -> torch.Tensor:
    """Score-function surrogate of the K-particle ELBO without baseline (REINFORCE):
    -(1/B) sum_b [ mean_k log w_k + sum_k (log w_k / K)^perp log q(z_k | x_b) ], where log q enters
    log w without its direct gradient (zero in expectation; Pyro's ``Trace_ELBO`` drops it too)."""
    log_w, log_q = log_weights(vae, x, num_particles, reparameterized=False)
    n = x.shape[0]
    signal = log_w.detach() / num_particles
    return -log_w.mean(0).sum() / n - (signal * log_q).sum() / n


def stl_elbo_loss(vae: GaussianVAE, x: torch.Tensor, num_particles: int) -> torch.Tensor:
    """Sticking the landing (Roeder et al. 2017): the pathwise negative ELBO with log q's
    parameters (the encoder's outputs) detached."""
    log_w, _ = log_weights(vae, x, num_particles, stop_q=True)
    return -log_w.mean(0).sum() / x.shape[0]


def dreg_iwae_gradients(vae: GaussianVAE, x: torch.Tensor, num_particles: int) -> dict[str, torch.Tensor]:
    """DReG (Tucker et al. 2019) written as the paper states it, one surrogate per group: the
    decoder (theta) from -(1/B) sum wtilde_k log w_k, the encoder (phi) from
    -(1/B) sum wtilde_k^2 log w_k with log q's parameters stopped; two backward passes. Returns
    the gradient of every named parameter."""
    log_w, _ = log_weights(vae, x, num_particles, stop_q=True)
    weights = torch.softmax(log_w.detach(), dim=0)
    groups = vae.parameter_groups()
    names = {id(p): n for n, p in vae.named_parameters()}
    out = {}
    for group, factor in (("theta", weights), ("phi", weights**2)):
        params = groups[group]
        grads = torch.autograd.grad(-(factor * log_w).sum() / x.shape[0], params, retain_graph=True)
        out.update({names[id(p)]: g for p, g in zip(params, grads)})
    return out
