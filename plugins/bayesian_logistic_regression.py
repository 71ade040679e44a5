"""Bayesian multinomial logistic regression: a non-VAE black-box VI model with global latents."""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pydantic import Field
from torch import nn

from bbvi_kit import BBVIModel, DataInfo, InputError, PluginOptions, register_model


@register_model("bayesian_logistic_regression")
class BayesianLogisticRegression(BBVIModel):
    r"""Softmax regression with Gaussian priors, fitted by BBVI with a mean-field Gaussian guide.

    - w ~ N(0, s^2 I) (features x classes), b ~ N(0, s^2 I) (classes);
    - y_i | x_i, w, b ~ Categorical(softmax(x_i w + b)), in a data plate of the full training-set
      size N subsampled to the batch, so the log likelihood is scaled by N / B;
    - q(w) q(b) fully factorised Gaussians (the variational parameters ``phi``; there is no
      ``theta``: the model is fixed, as in black-box VI, Ranganath et al. 2014).

    The loss is the negative ELBO of the whole training set divided by N (nats per example).
    Needs a dataset with labels (``data: {name: digits, labels: true}``).
    """

    class Options(PluginOptions):
        prior_scale: float = Field(1.0, gt=0.0, description="s, prior std of weights and biases")
        init_scale: float = Field(0.01, gt=0.0, description="initial std of the guide")

    options: Options

    def __init__(self, data: DataInfo, **options: Any) -> None:
        super().__init__(data, **options)
        if data.num_classes is None:
            raise InputError(f"model bayesian_logistic_regression needs labelled data; dataset {data.name!r} yields none")
        features, classes = math.prod(data.shape), data.num_classes
        log_init = math.log(self.options.init_scale)
        self.w_loc = nn.Parameter(torch.zeros(features, classes))
        self.w_log_scale = nn.Parameter(torch.full((features, classes), log_init))
        self.b_loc = nn.Parameter(torch.zeros(classes))
        self.b_log_scale = nn.Parameter(torch.full((classes,), log_init))
        self.num_train = data.num_train
        self.features, self.classes = features, classes

    def model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        s = self.options.prior_scale
        w = pyro.sample("w", dist.Normal(x.new_zeros(self.features, self.classes), s).to_event(2))
        b = pyro.sample("b", dist.Normal(x.new_zeros(self.classes), s).to_event(1))
        x = x.flatten(start_dim=1)
        logits = (x.unsqueeze(-2) @ w).squeeze(-2) + b
        index = torch.arange(x.shape[0], device=x.device)
        with pyro.plate("data", self.num_train, subsample=index, dim=-1):
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)

    def guide(self, x: torch.Tensor, y: torch.Tensor) -> None:
        pyro.sample("w", dist.Normal(self.w_loc, self.w_log_scale.exp()).to_event(2))
        pyro.sample("b", dist.Normal(self.b_loc, self.b_log_scale.exp()).to_event(1))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"phi": list(self.parameters())}
