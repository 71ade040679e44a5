"""The project's device check: what must hold on a GPU, in at most about 8 minutes, one command.

Run ``scripts/device-check`` on the GPU machine (it installs the wheels that ``scripts/device-check
prepare`` fetched here, then runs this file). Each step runs in its own process with its own time
limit, inside an overall budget; a step whose time is gone is recorded as ``SKIP``. What it
writes into ``$OUT`` (default ``/tmp/device-out``): ``summary.txt`` (one line per step, PASS /
FAIL / SKIP with seconds), ``steps.log`` (every step's output) and ``RESULTS-<device>.md`` (the
training-step benchmark on CUDA, engine against hand-written eager PyTorch and Pyro's SVI, the
paper's CelebA conv VAE at B = 256 included), also copied to ``benchmarks/`` of the checkout.

The steps (:func:`plan`): the ``gpu``-marked tests (the on-device non-finite skip among them);
the benchmark; every recipe family for a few steps on CUDA (quickstart ELBO, the score estimator, IWAE K = 5
with DReG, beta-VAE and IWAE on the paper's CIFAR-100 and CelebA conv VAEs on generated files in
the real on-disk formats, the linear VAE), with every diagnostic once; SIGKILL during a run, then
``--resume``; ``torchrun`` with one process and an NCCL process group; CPU and CUDA agreeing on a
short run's losses within float tolerance, given the same latent noise
(``scripts/cpu_cuda_agreement.py``). ``--plan`` prints the steps without running them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 480  # the whole check: about 8 minutes
ALL_DIAGNOSTICS = ("[{name: full_gradient, every: 4, num_estimates: 3}, {name: gradient_noise, every: 4, num_batches: 2, "
                   "samples_per_batch: 2}, {name: heldout_iwae, every: 4, num_samples: 8}, {name: posterior_collapse, "
                   "every: 4, mc_samples: 4}, {name: smoothness, every: 4}, {name: snr, every: 4, num_draws: 4, "
                   "estimators: [pathwise, stl]}]")


@dataclass(frozen=True)
class Step:
    """One check: a shell command run from the checkout's root, allowed ``seconds``."""

    name: str
    seconds: int
    command: str


@dataclass(frozen=True)
class Outcome:
    step: Step
    status: str  # PASS, FAIL or SKIP
    seconds: float
    detail: str = ""

    def line(self) -> str:
        extra = f"; {self.detail}" if self.detail else ""
        return f"{self.status:<4}  {self.step.name} ({self.seconds:.0f} s{extra})"


def device_slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3`` (for ``RESULTS-<device>.md``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def recipe_runs(data: Path) -> list[tuple[str, list[str]]]:
    """The recipe runs of the step "every recipe family" (recipe, overrides; ``data``: the
    generated CelebA and CIFAR-100 files)."""
    quick = ["training.progress=false", "training.seeds=[0]", "training.device=cuda"]
    few = quick + ["training.iterations=4", "training.num_workers=2", "sweep=null"]
    return [
        ("recipes/quickstart.yaml", quick + ["training.iterations=8", f"diagnostics={ALL_DIAGNOSTICS}"]),
        ("recipes/quickstart.yaml", quick + ["training.iterations=4", "estimator.name=score"]),
        ("recipes/quickstart.yaml", quick + ["training.iterations=4", "training.precision=bf16"]),
        ("recipes/quickstart.yaml", quick + ["training.iterations=8", "training.precision=fp16"]),
        ("recipes/iwae_estimators.yaml", few + ["objective.num_particles=5", "estimator.name=dreg"]),
        ("recipes/cifar100_beta_vae.yaml", few + [f"data.root={data}"]),
        ("recipes/cifar100_iwae.yaml", few + [f"data.root={data}", "objective.num_particles=5"]),
        ("recipes/celeba_iwae.yaml", few + [f"data.root={data}", "objective.num_particles=5",
                                            "training.keep_checkpoints=0"]),
        ("recipes/linear_vae_ppca.yaml", few + ["data.num_train=256", "data.num_test=64"]),
    ]


def plan(python: str, out: Path, work: Path, results_name: str) -> list[Step]:
    """The steps, in order (module docstring); ``work`` holds generated data and runs."""
    run = f"{python} -m bbvi_kit run"
    quick = "recipes/quickstart.yaml training.progress=false training.seeds=[0]"
    data = work / "data"
    make_data = (f"{python} -c 'import sys; from pathlib import Path; sys.path.insert(0, \".\"); "
                 "from tests.support.datasets_on_disk import make_celeba, make_cifar100; "
                 f"make_celeba(Path(\"{data}\"), n_train=64, n_valid=8, n_test=16); "
                 f"make_cifar100(Path(\"{data}\"), n_train=64, n_test=16)'")
    families = [" ".join([run, recipe, *map(shlex.quote, overrides), "--out", str(work / "families")])
                for recipe, overrides in recipe_runs(data)]
    kill_resume = (
        # 30 epochs (about 700 steps): still running when its first checkpoint appears, even on a fast GPU
        f"{run} {quick} training.device=cuda training.epochs=30 training.checkpoint_every=10 --out {work}/killed & pid=$!; "
        f"for i in $(seq 600); do [ -n \"$(find {work}/killed -name 'step-*.pt' 2>/dev/null | head -1)\" ] && break; "
        "sleep 0.1; done; kill -9 $pid; wait $pid; "
        f"d=$(dirname $(find {work}/killed -name run.json | head -1)); {run} --resume $d && grep -q completed $d/run.json"
    )
    nccl = (
        f"{python} -m torch.distributed.run --standalone --nproc_per_node=1 -m bbvi_kit run {quick} "
        f"training.device=cuda training.iterations=8 --out {work}/torchrun && "
        f"{python} -m torch.distributed.run --standalone --nproc_per_node=1 {ROOT / 'scripts' / 'nccl_probe.py'}"
    )
    agree = f"{python} {ROOT / 'scripts' / 'cpu_cuda_agreement.py'} {work}/agree --iterations 40 --tolerance 1e-3"
    return [  # the benchmark early: if the budget runs out, the later checks are the ones skipped
        Step("gpu-marked tests", 100, f"{python} -m pytest -q -m gpu -p no:cacheprovider -o addopts=-ra tests"),
        Step("training-step benchmark on cuda", 180,
             f"{python} -m benchmarks --only training_step --out {out / results_name}"),
        Step("generated CelebA and CIFAR-100 files", 30, make_data),
        Step("every recipe family for a few steps on cuda, every diagnostic once", 150, " && ".join(families)),
        Step("SIGKILL during a cuda run, then --resume", 60, kill_resume),
        Step("torchrun, one process, NCCL process group", 45, nccl),
        Step("cpu and cuda agree on 40 steps' losses (relative 1e-3)", 60, agree),
    ]


def run_steps(steps: list[Step], log: Path, budget_s: float = BUDGET_S) -> list[Outcome]:
    """Run ``steps`` in order, each within its own limit and what is left of ``budget_s``;
    their output goes to ``log``."""
    start = time.monotonic()
    outcomes = []
    with open(log, "a", encoding="utf-8") as fh:
        for step in steps:
            left = budget_s - (time.monotonic() - start)
            if left < 5:
                outcomes.append(Outcome(step, "SKIP", 0.0, "the check's time budget is spent"))
                continue
            limit = min(step.seconds, left)
            fh.write(f"=== {step.name}\n$ {step.command}\n")
            fh.flush()
            t0 = time.monotonic()
            process = subprocess.Popen(["bash", "-c", step.command], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            try:
                code = process.wait(timeout=limit)
                status, detail = ("PASS", "") if code == 0 else ("FAIL", f"exit {code}")
            except subprocess.TimeoutExpired:  # the whole process group: no run left behind on the GPU
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                status, detail = "FAIL", f"over its {limit:.0f} s"
            outcomes.append(Outcome(step, status, time.monotonic() - t0, detail))
            fh.write(f"--- {outcomes[-1].line()}\n")
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/device-check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp/device-out"))
    parser.add_argument("--plan", action="store_true", help="print the steps and exit")
    args = parser.parse_args(argv)
    import torch

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    results_name = f"RESULTS-{device_slug(name)}.md"
    work = Path(os.environ.get("DEVICE_CHECK_WORK", "/tmp/device-check-work"))
    steps = plan(shlex.quote(sys.executable), args.out, work, results_name)
    if args.plan:
        for step in steps:
            print(f"{step.name} (at most {step.seconds} s)\n  {step.command}")
        return 0
    if not torch.cuda.is_available():
        print("error: no CUDA device here: scripts/device-check runs on a GPU machine (scripts/device-check --plan "
              "lists its steps)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    header = [f"device: {name}", f"torch {torch.__version__}, CUDA {torch.version.cuda}, Python {sys.version.split()[0]}"]
    outcomes = run_steps(steps, args.out / "steps.log")
    lines = header + [o.line() for o in outcomes]
    failed = sum(o.status != "PASS" for o in outcomes)
    lines.append(f"{len(outcomes) - failed} of {len(outcomes)} steps passed")
    (args.out / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (args.out / "summary.json").write_text(json.dumps(
        {"device": name, "steps": [{"name": o.step.name, "status": o.status, "seconds": round(o.seconds, 1),
                                    "detail": o.detail} for o in outcomes]}, indent=2) + "\n", encoding="utf-8")
    results = args.out / results_name
    if results.is_file():
        shutil.copyfile(results, ROOT / "benchmarks" / results_name)
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
