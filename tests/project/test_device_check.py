"""scripts/device-check, the one-command GPU check: its plan is valid on this machine (every
recipe run it makes resolves, with generated data in the real on-disk formats), its runner keeps
each step to its time limit and the whole check to its budget, and without CUDA it refuses in one
line. The check itself runs on a GPU machine only."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bbvi_kit.sweep import load_plan
from tests.support.datasets_on_disk import make_celeba, make_cifar100

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("device_check", ROOT / "scripts" / "device_check.py")
assert spec is not None and spec.loader is not None
device_check = importlib.util.module_from_spec(spec)
sys.modules["device_check"] = device_check
spec.loader.exec_module(device_check)


def test_the_plan_covers_what_the_issue_asks_within_eight_minutes(tmp_path: Path) -> None:
    steps = device_check.plan("python3", tmp_path / "out", tmp_path / "work", "RESULTS-x.md")
    names = " | ".join(s.name for s in steps)
    for words in ("gpu-marked tests", "every recipe family", "every diagnostic", "SIGKILL", "--resume", "torchrun",
                  "NCCL", "cpu and cuda agree", "benchmark"):
        assert words in names, words
    assert device_check.BUDGET_S <= 480
    (benchmark,) = [s for s in steps if "benchmark" in s.name]
    assert "--only training_step --out" in benchmark.command and benchmark.command.endswith("RESULTS-x.md")
    assert steps.index(benchmark) == 1  # right after the tests: the budget never skips it
    families = {recipe for recipe, _ in device_check.recipe_runs(tmp_path)}
    assert {"recipes/celeba_iwae.yaml", "recipes/cifar100_iwae.yaml", "recipes/cifar100_beta_vae.yaml",
            "recipes/linear_vae_ppca.yaml", "recipes/quickstart.yaml", "recipes/iwae_estimators.yaml"} <= families


def test_every_recipe_run_of_the_plan_resolves_to_one_cuda_run(tmp_path: Path) -> None:
    make_celeba(tmp_path, n_train=4, n_valid=1, n_test=2)
    make_cifar100(tmp_path, n_train=4, n_test=2)
    seen = set()
    for recipe, overrides in device_check.recipe_runs(tmp_path):
        plan = load_plan(ROOT / recipe, overrides)
        assert len(plan.runs) == 1, recipe
        run = plan.runs[0].recipe
        assert run.training.device == "cuda" and run.training.iterations is not None, recipe
        seen.add((run.objective.name, run.estimator.name))
        seen.update(("diagnostic", d.name) for d in run.diagnostics)
    assert {("elbo", "score"), ("iwae", "dreg")} <= seen
    assert {"elbo", "iwae", "beta"} <= {objective for objective, _ in seen}
    from bbvi_kit.registry import diagnostics

    builtin = {e.name for e in diagnostics.entries() if e.obj is not None and e.obj.__module__.startswith("bbvi_kit.")}
    assert len(builtin) >= 6 and {("diagnostic", name) for name in builtin} <= seen  # every diagnostic once
    # (other tests in this process may register diagnostics of their own: only bbvi-kit's count)


def test_steps_keep_their_limits_and_the_budget(tmp_path: Path) -> None:
    Step = device_check.Step
    steps = [Step("passes", 10, "echo hello"), Step("fails", 10, "exit 3"),
             Step("too slow", 2, f"sleep 30 & echo $! > {tmp_path}/child; wait"), Step("no time left", 10, "echo never")]
    log = tmp_path / "steps.log"
    outcomes = device_check.run_steps(steps, log, budget_s=6)
    assert [o.status for o in outcomes] == ["PASS", "FAIL", "FAIL", "SKIP"]
    assert outcomes[1].detail == "exit 3" and outcomes[2].detail == "over its 2 s"
    assert outcomes[2].seconds < 20  # stopped at its limit, not after the 30 s sleep
    child = int((tmp_path / "child").read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and "zombie" not in _state(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or "zombie" in _state(child)  # killed with its step
    assert "hello" in log.read_text() and "never" not in log.read_text()
    assert outcomes[0].line().startswith("PASS  passes (")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"  # gone


def test_device_names_make_file_names() -> None:
    assert device_check.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert device_check.device_slug("  ") == "gpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_without_cuda_it_refuses_in_one_line_and_lists_its_steps_on_request() -> None:
    done = subprocess.run([sys.executable, "scripts/device_check.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no CUDA device here" in done.stderr
    listed = subprocess.run([sys.executable, "scripts/device_check.py", "--plan"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0 and "training-step benchmark on cuda" in listed.stdout


def test_the_agreement_check_shares_the_noise_and_compares_the_runs(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    """Both runs draw the guide's noise from the CPU stream (the same numbers whatever the
    device); two runs on the CPU then agree exactly; the comparison fails past its tolerance."""
    import torch.distributions.normal as torch_normal

    spec = importlib.util.spec_from_file_location("agreement", ROOT / "scripts" / "cpu_cuda_agreement.py")
    assert spec is not None and spec.loader is not None
    agreement = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agreement)
    torch.manual_seed(5)
    expected = torch.randn(3, 2)
    torch.manual_seed(5)
    assert torch.equal(agreement._noise_from_cpu((3, 2), torch.float32, torch.device("cpu")), expected)
    monkeypatch.setattr(torch_normal, "_standard_normal", torch_normal._standard_normal)  # put back afterwards
    monkeypatch.chdir(ROOT)
    assert agreement.main([str(tmp_path), "--devices", "cpu", "cpu", "--iterations", "3"]) == 0
    assert "3 steps, largest relative loss difference 0 " in capsys.readouterr().out
    assert agreement.compare([1.0, 2.0], [1.0, 2.0005], 1e-3) == (True, "2 steps, largest relative loss difference "
                                                                       "0.00025 (tolerance 0.001)")
    assert not agreement.compare([1.0, 2.0], [1.0, 2.01], 1e-3)[0] and not agreement.compare([1.0], [], 1.0)[0]
