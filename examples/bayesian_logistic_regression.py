"""Pyro-native scripting with bbvi-kit: your own Pyro model, a Pyro autoguide, bbvi-kit's trainer.

Recipes (``bbvi-kit run recipe.yaml``) build everything from registered plugins. This script shows
the other way in: write an ordinary Pyro model in a few lines, let Pyro build the variational
family (an autoguide), and hand both to :class:`bbvi_kit.Trainer`, which adds the choice of
objective, gradient estimator, optimizer and step-size schedule, and records the same
convergence diagnostics a recipe run records (per-step loss, squared gradient norm and its
running average, test negative ELBO).

The model is Bayesian multinomial logistic regression on the 8x8 digits bundled with
scikit-learn (no download)::

    w ~ N(0, s^2 I)  (64 pixels x 10 classes),   b ~ N(0, s^2 I)  (10 classes)
    y_i | x_i, w, b ~ Categorical(softmax(x_i w + b)),   i = 1..N_train

and the guide is a mean-field Gaussian q(w) q(b) (``AutoNormal``). Usage::

    python examples/bayesian_logistic_regression.py                       # pathwise + Adam
    python examples/bayesian_logistic_regression.py --estimator score --optimizer sgd
    python examples/bayesian_logistic_regression.py --iterations 500 --out runs   # + run dir, plots

From Python, ``main([...])`` runs the same thing and returns the final metrics as a dict.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoNormal

import bbvi_kit
import bbvi_kit.plotting  # submodules used below as bbvi_kit.plotting / bbvi_kit.runs
import bbvi_kit.runs
from bbvi_kit.data import Digits

# Default base step sizes, tuned so that every combination learns within a few hundred steps.
# Score-function gradients are far noisier than pathwise ones (the learning signal log w carries
# the whole data set's log likelihood), so they get smaller steps.
DEFAULT_LR = {
    ("pathwise", "adam"): 0.05,
    ("pathwise", "sgd"): 0.05,
    ("score", "adam"): 0.01,
    ("score", "sgd"): 0.001,
}
# The score-function estimator needs several particles: its leave-one-out baseline uses the
# other K-1 particles of the same step, and more particles lower its variance.
DEFAULT_PARTICLES = {"pathwise": 1, "score": 16}


def make_model(num_train: int, num_features: int, num_classes: int, prior_scale: float = 1.0) -> Callable:
    """A plain Pyro model of a mini-batch ``(x, y)``; nothing in it is specific to bbvi-kit.

    Two rules make it work with bbvi-kit's vectorised particles, and they are the usual Pyro
    rules for vectorised ELBOs:

    - the data plate has an explicit ``dim=-1`` and the full training-set size ``num_train``,
      subsampled to the batch: Pyro then scales the batch log likelihood by N / B, so each step
      sees an unbiased estimate of the ELBO of the *whole* data set (and bbvi-kit divides by
      the plate's full size N to report nats per example);
    - tensor code broadcasts over extra leading dims: the trainer draws the K particles of
      ``w`` and ``b`` in one pass inside an outer plate, so ``w`` may arrive as ``[K, 1, F, C]``.
    """

    def model(x: torch.Tensor, y: torch.Tensor) -> None:
        # Global latents: priors over the weights and biases (event dims, not plates).
        w = pyro.sample(
            "w", dist.Normal(x.new_zeros(num_features, num_classes), prior_scale).to_event(2)
        )
        b = pyro.sample("b", dist.Normal(x.new_zeros(num_classes), prior_scale).to_event(1))
        x = x.flatten(start_dim=1)  # (B, 1, 8, 8) -> (B, 64)
        # (B, 1, F) @ ([K, 1,] F, C) -> ([K,] B, 1, C): broadcasting handles the particle dims.
        logits = (x.unsqueeze(-2) @ w).squeeze(-2) + b
        # The batch is already drawn by the trainer, so the subsample indices are just 0..B-1;
        # only their number matters (it sets the likelihood scale N / B).
        index = torch.arange(x.shape[0], device=x.device)
        with pyro.plate("data", num_train, subsample=index, dim=-1):
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)

    return model


def posterior_mean_accuracy(guide: AutoNormal, dataset: torch.utils.data.TensorDataset) -> float:
    """Classification accuracy of the posterior mean weights (the autoguide's loc parameters).

    For the Gaussian ``AutoNormal`` guide the median of each latent is its mean.
    """
    x, y = dataset.tensors
    with torch.no_grad():
        medians = guide.median()
        w, b = medians["w"].cpu(), medians["b"].cpu()
        logits = x.flatten(start_dim=1) @ w + b
        return float((logits.argmax(-1) == y).float().mean())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--estimator", choices=["pathwise", "score"], default="pathwise",
                        help="gradient estimator: reparameterisation or score function (REINFORCE)")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--iterations", type=int, default=500, help="number of updates (default 500)")
    parser.add_argument("--lr", type=float, default=None,
                        help="base step size (default: " + ", ".join(f"{e}+{o} {lr}" for (e, o), lr in DEFAULT_LR.items()) + ")")
    parser.add_argument("--particles", type=int, default=None,
                        help="K, particles per step (default 1 for pathwise, 16 for score)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'auto'")
    parser.add_argument("--out", default=None,
                        help="write a run directory (metrics.csv, eval.csv, plots/) under this folder")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train and return the final metrics (plus ``history``, ``run_dir`` and ``test_accuracy``)."""
    args = parse_args(argv)
    # Pyro keeps parameters in a global store: start from a clean one so that running main()
    # twice in one process (as the tests do) never reuses the previous run's guide parameters.
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)

    # -- data: TensorDatasets of (image (1, 8, 8) in [0, 1], label) ---------------------------
    splits = Digits(labels=True).load()
    info = splits.info
    num_features = math.prod(info.shape)
    assert info.num_classes is not None
    model = make_model(info.num_train, num_features, info.num_classes)

    # -- guide: a Pyro autoguide, a mean-field Gaussian over w and b ---------------------------
    # AutoNormal is a PyroModule that creates its parameters (a loc and a scale per latent
    # site: the variational parameters phi) on its first call. The model has no parameters of
    # its own (no theta): as in black-box VI, only the variational family is fitted.
    guide = AutoNormal(model, init_scale=0.05)

    # -- the bbvi-kit pieces ------------------------------------------------------------------
    particles = args.particles or DEFAULT_PARTICLES[args.estimator]
    objective = bbvi_kit.ELBO(num_particles=particles)
    if args.estimator == "pathwise":
        estimator = bbvi_kit.Pathwise()
    else:
        estimator = bbvi_kit.ScoreFunction(baseline="leave_one_out" if particles >= 2 else "running_mean")
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.estimator, args.optimizer]
    if args.optimizer == "adam":
        optimizer = bbvi_kit.Adam(lr=lr)
    else:
        optimizer = bbvi_kit.SGD(lr=lr, momentum=0.9)
    training = bbvi_kit.TrainingOptions(
        batch_size=args.batch_size,
        epochs=10**6,  # bounded by `iterations` below
        iterations=args.iterations,
        seed=args.seed,
        device=args.device,
        eval_every=max(args.iterations // 5, 1),  # five test evaluations along the run
        progress=args.progress,
    )
    trainer = bbvi_kit.Trainer(
        model, guide, objective=objective, estimator=estimator, optimizer=optimizer, training=training,
        max_plate_nesting=1,  # the data plate; the trainer adds the particle plate outside it
        # No parameter_groups: on the first step the trainer finds the guide's parameters (its
        # Pyro param sites and module parameters: phi) and the model's (none here: theta), and
        # records the squared gradient norm of each group. A callable returning
        # {"phi": [...], "theta": [...]} would name them explicitly instead.
    )

    # -- train (optionally into a run directory, as `bbvi-kit run` does) ----------------------
    run = bbvi_kit.runs.RunDirectory.create(args.out, "logreg_example") if args.out else None
    if run is not None:
        run.update_info(status="running", script=__file__, arguments=vars(args),
                        environment=bbvi_kit.runs.environment())
    try:
        history = trainer.fit(splits.train, splits.test, run=run)
    except BaseException as exc:
        if run is not None:
            run.close()
            run.update_info(status="failed", error=f"{type(exc).__name__}: {exc}", steps_done=trainer.step)
        raise
    if run is not None:
        run.close()
        bbvi_kit.plotting.plot_run(run.path)  # plots/loss.png and plots/grad_norm_sq.png

    # -- report: the diagnostics a recipe run records, and the test accuracy -----------------
    final = history.metrics[-1]
    result: dict[str, Any] = {
        key: final[key]
        for key in ("step", "loss", "minibatch_grad_norm_sq", "minibatch_grad_norm_sq_avg",
                    "minibatch_grad_norm_sq_phi", "minibatch_grad_norm_sq_theta")
        if key in final
    }
    result["test_loss"] = history.evals[-1]["test_loss"] if history.evals else float("nan")
    result["test_accuracy"] = posterior_mean_accuracy(guide, splits.test)
    if not args.quiet:
        print(f"estimator={args.estimator} optimizer={args.optimizer} lr={lr} particles={particles} "
              f"iterations={trainer.step} (N_train={info.num_train}, N_test={info.num_test})")
        for key, value in result.items():
            print(f"  {key:<20} {value:.6g}" if isinstance(value, float) else f"  {key:<20} {value}")
        if run is not None:
            print(f"run directory: {run.path}")
    if run is not None:
        run.update_info(status="completed", steps_done=trainer.step,
                        **{f"final_{k}": v for k, v in result.items()})
    result["history"] = history
    result["run_dir"] = str(run.path) if run is not None else None
    return result


if __name__ == "__main__":
    main()
