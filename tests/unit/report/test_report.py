"""``bbvi-kit report``: a self-contained HTML page for a run or a sweep (bbvi_kit.report); the
pages come from real tiny runs (``tests/support/report_pages.py``), with diagnostic CSV files of
known values added, so the findings they should produce are known. The same pages in a real
browser: ``tests/integration/test_report_browser.py``.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

from bbvi_kit.diagnostics import convergence
from bbvi_kit.results import Table
from bbvi_kit.report import (
    MAX_PANELS,
    build_report,
    convergence_findings,
    diagnostic_figure,
    plan_panels,
)
from tests.support.report_pages import Page, as_number, check_self_contained, read_csv, write_diagnostic

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cli_writes_the_run_report_into_the_run_directory(dirs: dict[str, Path], run_report: dict[str, Any]) -> None:
    assert run_report["code"] == 0
    assert run_report["stdout"] == f"{dirs['run'] / 'report.html'}\n"
    assert not [p.name for p in dirs["run"].iterdir() if p.name.startswith(".")]  # no temporary file left


def test_run_report_is_self_contained_with_every_figure(run_page: Page) -> None:
    check_self_contained(run_page)
    alts = [img["alt"] for img in run_page.images]
    # the run's two plots, the paper's two figures (no IWAE K axis here), one per diagnostic
    assert sum(a.endswith(" loss") for a in alts) == 1 and sum(a.endswith(" grad_norm_sq") for a in alts) == 1
    assert {"grad_norm_sq", "test_loss", "diagnostic heldout_iwae", "diagnostic made_up",
            "diagnostic posterior_collapse"} <= set(alts)
    assert len(alts) == 7
    assert {"diagnostic-heldout_iwae", "diagnostic-made_up", "diagnostic-posterior_collapse"} <= run_page.ids


def test_run_summary_table_holds_the_files_values(dirs: dict[str, Path], run_page: Page) -> None:
    metrics = read_csv(dirs["run"] / "metrics.csv")[-1]
    evals = read_csv(dirs["run"] / "eval.csv")[-1]
    info = json.loads((dirs["run"] / "run.json").read_text())
    kv = run_page.kv
    for key, expected in (("final loss", metrics["loss"]), ("final minibatch_grad_norm_sq_avg", metrics["minibatch_grad_norm_sq_avg"]),
                          ("final test loss", evals["test_loss"]),
                          ("final test objective loss", evals["test_objective_loss"])):
        shown, exact = kv[key]
        assert float(exact) == float(expected)
        assert as_number(shown) == pytest.approx(float(expected), rel=1e-5)
    assert kv["steps"][0] == metrics["step"] == "30"
    assert kv["status"][0] == info["status"] == "completed"
    assert (kv["recipe"][0], kv["model"][0], kv["data"][0], kv["objective"][0]) == (
        "quickstart", "gaussian_vae", "digits", "elbo (kl=sample)")  # the objective's options but K
    assert kv["K (objective.num_particles)"][0] == "1" and kv["B (training.batch_size)"][0] == "64"
    assert (kv["optimizer"][0], as_number(kv["lr (optimizer.lr)"][0]), kv["schedule"][0]) == (
        "adam", 0.01, "inv_sqrt_epoch")
    recipe = (dirs["run"] / "recipe.yaml").read_text()
    assert "<details><summary>recipe.yaml" in run_page.text
    assert f"<pre>{html.escape(recipe)}</pre>" in run_page.text  # the resolved recipe, whole


def test_run_findings_state_the_rate_and_the_held_out_bound(dirs: dict[str, Path], run_page: Page) -> None:
    rows = read_csv(dirs["run"] / "metrics.csv")
    n = np.array([float(r["step"]) for r in rows])
    g = np.array([float(r["minibatch_grad_norm_sq"]) for r in rows])
    (rate,) = run_page.sentences("rate")  # no full_gradient in this run: the mini-batch verdict alone
    verdict = convergence.minibatch_verdict(n, g)
    assert rate == verdict.sentence[0].upper() + verdict.sentence[1:]
    assert rate.startswith("The mini-batch ‖g‖² ")
    assert "How the findings are computed" in run_page.text and "noise floor" in run_page.text
    assert "never running averages" in run_page.text

    last = read_csv(dirs["run"] / "diagnostics" / "heldout_iwae.csv")[-1]
    iwae, elbo = float(last["test_neg_iwae"]), float(last["test_neg_elbo"])
    sentences = run_page.sentences("diagnostic:heldout_iwae")
    bound = next(s for s in sentences if "IWAE bound" in s)
    assert f"with K = 10 samples is {iwae:.3g} ± {2 * float(last['test_neg_iwae_se']):.3g}" in bound
    assert f"the IWAE bound is {elbo - iwae:.3g} nats tighter" in bound
    evals = read_csv(dirs["run"] / "eval.csv")
    (test,) = run_page.sentences("test")
    assert f"to {float(evals[-1]['test_loss']):.3g} nats per example at n = 30" in test


def test_a_failed_run_says_where_it_failed(dirs: dict[str, Path]) -> None:
    page = Page(build_report(dirs["failed"]))
    check_self_contained(page)
    info = json.loads((dirs["failed"] / "run.json").read_text())
    assert info["status"] == "failed" and info["steps_done"] == 10
    (failure,) = page.sentences("status")
    assert failure == f"Run {dirs['failed'].name} failed after step 10: RuntimeError: injected failure"
    assert page.kv["status"][0] == "failed" and page.kv["steps"][0] == "10"


# -- generic diagnostic figures and the rate rule -------------------------------------------------
def test_every_diagnostic_column_gets_a_panel() -> None:
    steps = np.arange(10, 110, 10, dtype=float)
    table = Table({
        "step": steps, "epoch": steps // 50,
        "decays": 1e4 / steps**2, "decays_se": 1e2 / steps**2,  # positive over more than a decade: log
        "signed": np.sin(steps), "narrow": 5 + steps / 100,  # linear
        "count": np.full(10, 50.0), "lonely_se": steps**2 / 7,  # constant; an _se with no companion is a column
        **{f"au_z_{j}": steps / (j + 1) for j in (0, 1, 2, 10)},  # numbered: one panel, in numeric order
        "pair_0": steps, "pair_1": steps,  # two numbered columns are no family
        "time": steps / 3,
    })
    panels, constants = plan_panels([table])
    assert [(p.column, p.se, p.log, p.members) for p in panels] == [
        ("decays", "decays_se", True, []), ("signed", None, False, []), ("narrow", None, False, []),
        ("lonely_se", None, True, []), ("au_z_<j>", None, True, ["au_z_0", "au_z_1", "au_z_2", "au_z_10"]),
        ("pair_0", None, False, []), ("pair_1", None, False, [])]
    assert constants == {"count": 50.0}
    png, drawn, _ = diagnostic_figure("made_up", [("a run", "tab:blue", [table])])
    assert drawn == panels and png is not None
    assert Image.open(io.BytesIO(png)).size[0] > 1000  # three panels side by side

    wide = Table({"step": steps, **{f"c{i}": steps + i for i in range(MAX_PANELS + 3)}})
    png, drawn, _ = diagnostic_figure("wide", [("a run", "tab:blue", [wide])])
    assert len(plan_panels([wide])[0]) == MAX_PANELS + 3 and len(drawn) == MAX_PANELS


def test_a_value_measured_at_several_k_shares_one_panel() -> None:
    """snr with num_particles: [1, 4, 16, 64] writes snr_phi_K1 ... snr_phi_K64: one panel each."""
    steps = np.arange(10, 60, 10, dtype=float)
    table = Table({"step": steps, "snr_phi": steps / 10,
                   **{f"snr_phi_K{k}": steps / k for k in (16, 1, 4)},
                   **{f"snr_theta_K{k}": steps * k for k in (1, 4)}, "lone_K3": steps})
    panels, _ = plan_panels([table])
    assert [(p.column, p.members) for p in panels] == [
        ("snr_phi", []), ("snr_phi_K<k>", ["snr_phi_K1", "snr_phi_K4", "snr_phi_K16"]),
        ("snr_theta_K<k>", ["snr_theta_K1", "snr_theta_K4"]), ("lone_K3", [])]
    png, drawn, _ = diagnostic_figure("snr", [("a run", "tab:blue", [table])])
    assert png is not None and drawn == panels


@pytest.mark.parametrize(("curve", "kind", "words", "level"), [
    (lambda n: 3 * np.log(n) / np.sqrt(n), "consistent", "consistent with log n/√n", "good"),
    (lambda n: 50 / n, "faster", "faster than log n/√n", "good"),
    (lambda n: 7 * n**-0.05, "noise_floor", "has been flat since about n = ", "info"),
    (lambda n: 7 * n**-0.2, "slower", "does not show that ‖∇L‖² is slower", "info"),
    (lambda n: n**0.2, "grows", "grows as n^0.20", "warning"),
])
def test_the_minibatch_rule(curve: Callable[[np.ndarray], np.ndarray], kind: str, words: str, level: str) -> None:
    n = np.arange(1, 4001, dtype=float)
    verdict = convergence.minibatch_verdict(n, curve(n))
    assert verdict.kind == kind and words in verdict.sentence and verdict.level == level
    assert (verdict.fit.n_start, verdict.fit.n_end, verdict.fit.num_points) == (2000, 4000, 2001)
    (finding,) = convergence_findings(n, curve(n), subject="point K=1")
    assert finding.text == f"point K=1: {verdict.sentence}" and finding.topic == "rate"


def test_the_convergence_findings_lead_with_the_full_data_series() -> None:
    rng = np.random.default_rng(0)
    n = np.arange(1, 2001, dtype=float)
    g = (4 * n**-0.5 + 2) * rng.lognormal(0, 0.3, n.size)
    g[1500] = math.nan  # a hole in the mini-batch series is left out, not fatal
    steps = np.arange(25, 2001, 25, dtype=float)
    u = 4 * steps**-0.5 * (1 + 0.05 * rng.normal(size=steps.size))
    full = Table({"step": steps, "full_grad_norm_sq": u, "full_grad_norm_sq_se": 0.05 * u,
                  "num_estimates": np.full(steps.size, 8.0)})
    noise = Table({"step": np.array([1000.0, 2000.0]), "grad_var_total": np.array([4.0, 4.0]),
                   "batch_size": np.array([32.0, 32.0])})
    first, second = convergence_findings(n, g, [full], [noise], batch_size=64)
    assert first.text.startswith("the full-data ‖∇L‖² (full_gradient, 41 measurements) decays as n^-0.5")
    assert first.level == "good" and first.topic == "rate"
    assert "the mini-batch ‖g‖² has been flat" in second.text
    # tr Cov g measured at B = 32 is 4: at the training B = 64 it is 2, all of the floor's ~2.2
    assert "the gradient_noise diagnostic puts 9" in second.text
    assert convergence_findings(n[:4], g[:4])[0].text == ("too few recorded iterations (n_max = 4) to fit the rate "
                                                         "of the mini-batch ‖g‖².")


def test_a_new_diagnostic_and_posterior_collapse_appear_without_code_changes(run_page: Page) -> None:
    assert run_page.sentences("diagnostic:made_up") == [
        "This run: diagnostic made_up has values that are not finite (NaN or infinite) in column broken, first at "
        "step 30.",  # not lagging: a value undefined before the first finite one is by design
        "Diagnostic made_up: wobble went from 1 at n = 10 to 0.333 at n = 30 (÷3)."]
    assert "12 of 100 latent units active at n = 30: posterior collapse." in run_page.sentences(
        "diagnostic:posterior_collapse")
    assert "Constant: num_units = 100, kl_total = 3." in run_page.text
    assert "Numbered columns share a panel, one thin line each: au_z_&lt;j&gt;, kl_z_&lt;j&gt;." in run_page.text
    # findings sit next to their figure: after its image, before the next diagnostic's heading
    text = run_page.text
    section = text[text.index('id="diagnostic-posterior_collapse"'):]
    section = section[:section.find("<h3", 10)] if "<h3" in section[10:] else section
    assert 'alt="diagnostic posterior_collapse"' in section and "posterior collapse.</li>" in section


# -- a sweep --------------------------------------------------------------------------------------

def test_sweep_report_is_self_contained_with_one_colour_per_point(sweep_page: Page) -> None:
    check_self_contained(sweep_page)
    alts = [img["alt"] for img in sweep_page.images]
    assert {"grad_norm_sq", "test_loss", "diagnostic snr", "diagnostic posterior_collapse"} <= set(alts)
    assert sum(a.endswith(" loss") for a in alts) == 4  # every run's own plots
    swatches = re.findall(r'<tr data-point="(\d)"><td><span class="swatch" style="background:(#[0-9a-f]{6})"',
                          sweep_page.text)
    assert len(swatches) == 4 and len({c for _, c in swatches}) == 2  # the points table and the diagnostics one


def test_sweep_table_is_the_mean_and_sd_over_seeds_of_summary_csv(sweep_with_diagnostics: Path,
                                                                   sweep_page: Page) -> None:
    rows = read_csv(sweep_with_diagnostics / "summary.csv")
    columns = ["final_loss", "final_minibatch_grad_norm_sq_avg", "final_test_loss", "final_test_objective_loss"]
    cells = [c for c in sweep_page.cells if c.get("data-column") in columns]
    assert len(cells) == 2 * len(columns)
    for cell in cells:
        k = "1" if cells.index(cell) < len(columns) else "2"
        values = [float(r[cell["data-column"]]) for r in rows if r["objective.num_particles"] == k]
        assert len(values) == 2 and int(cell["data-n"]) == 2
        mean, sd = np.mean(values), np.std(values, ddof=1)
        assert float(cell["data-mean"]) == pytest.approx(mean, rel=1e-12)
        shown_mean, shown_sd = (as_number(x) for x in cell["text"].split(" ± "))
        assert shown_mean == pytest.approx(mean, rel=1e-5) and shown_sd == pytest.approx(sd, rel=5e-3)
    completed = [c["text"] for c in sweep_page.cells if c["text"].endswith(" / 2")]
    assert completed == ["2 / 2", "2 / 2"]
    theta = [float(c["data-mean"]) for c in sweep_page.cells if c.get("data-column") == "snr.snr_theta"]
    assert theta == pytest.approx([3 * 1.05, 3 * math.sqrt(2) * 1.05])  # the final values per point, side by side


def test_sweep_findings_compare_points(sweep_page: Page) -> None:
    assert "All 4 runs completed." in sweep_page.sentences("status")
    rate = sweep_page.sentences("rate")  # the quickstart measures full_gradient: two sentences per point
    assert [r.split(" (")[0] for r in rate] == ["Point K=1"] * 2 + ["Point K=2"] * 2
    assert all("(mean over 2 seeds): " in r for r in rate)
    assert ["full-data ‖∇L‖²" in r for r in rate] == [True, False, True, False]
    assert all("(mean over 2 seeds): the mini-batch ‖g‖² " in r for r in rate[1::2])
    snr = sweep_page.sentences("diagnostic:snr")
    phi = next(s for s in snr if s.startswith("SNR(φ)"))
    # final SNR(phi) = 2/sqrt(K) * 1.05 * (1 + 1/30): the slope in log K is exactly -1/2
    assert phi.startswith("SNR(φ) falls with K, from 2.17 at K = 1 to 1.53 at K = 2 (log-log slope -0.50; "
                          "predicted -0.5): raising K alone starves the encoder gradient; consider a larger batch B")
    assert "SNR(θ) rises with K, from 3.15 at K = 1 to 4.45 at K = 2 (log-log slope +0.50; predicted +0.5)." in snr
    collapse = sweep_page.sentences("diagnostic:posterior_collapse")
    assert [s for s in collapse if s.endswith("posterior collapse.")] == [
        "Point K=2, seed 0: 12 of 100 latent units active at n = 30: posterior collapse.",
        "Point K=2, seed 1: 12 of 100 latent units active at n = 30: posterior collapse."]
    best = next(s for s in sweep_page.sentences("sweep") if s.startswith("Lowest mean final test loss"))
    assert "over 2 seeds; the next, " in best and "the spread over seeds" in best


def test_a_sweep_with_a_failed_run_reports_it(dirs: dict[str, Path], cli_run: Callable, tmp_path: Path) -> None:
    out = tmp_path / "new folder" / "failed_sweep.html"
    code, stdout, err = cli_run(["report", dirs["failed_sweep"], "--out", out])
    assert code == 0 and stdout == f"{out}\n", err
    assert not (dirs["failed_sweep"] / "report.html").exists()
    page = Page(out.read_text(encoding="utf-8"))
    check_self_contained(page)
    failed = [s for s in page.sentences("status") if "failed" in s]
    assert failed == ["Run p01-fail_at=15-seed0 failed after step 10: RuntimeError: injected failure"]
    assert [c["text"] for c in page.cells if c["text"].endswith(" / 1")] == ["1 / 1", "0 / 1"]


# -- errors ---------------------------------------------------------------------------------------
def test_not_a_run_or_sweep_directory_is_a_one_line_input_error(dirs: dict[str, Path], cli_run: Callable,
                                                                 tmp_path: Path) -> None:
    code, out, err = cli_run(["report", tmp_path])
    assert code == 2 and out == ""
    assert err == f"error: {tmp_path}: not a run directory (run.json, metrics.csv) or a sweep directory " \
                  "(sweep.json, summary.csv)\n"
    code, _, err = cli_run(["report", tmp_path / "missing"])
    assert code == 2 and err == f"error: {tmp_path / 'missing'}: no such directory\n"
    code, _, err = cli_run(["report", dirs["run"], "--out", tmp_path])
    assert code == 2 and err.count("\n") == 1 and "directory" in err
    assert list(tmp_path.iterdir()) == []


def test_a_diagnostic_column_that_is_never_finite_is_reported() -> None:
    from bbvi_kit.report.findings import nonfinite_findings as _nonfinite_findings

    steps = np.array([1.0, 2.0, 3.0])
    first_nan = Table({"step": steps, "lipschitz": np.array([np.nan, 1.0, 2.0])})  # by design
    assert _nonfinite_findings(first_nan, "diagnostic smoothness", "run a", "t", strict=False) == []
    broken = Table({"step": steps, "test_neg_iwae": np.full(3, np.nan), "ok": steps})
    (finding,) = _nonfinite_findings(broken, "diagnostic heldout_iwae", "run a", "t", strict=False)
    assert "no finite value in column test_neg_iwae" in finding.text and finding.level == "warning"
    later = Table({"step": steps, "x": np.array([1.0, np.nan, np.inf])})
    (finding,) = _nonfinite_findings(later, "diagnostic d", "run a", "t", strict=False)
    assert finding.level == "problem" and "first at step 2" in finding.text


# -- findings as objects, and a diagnostic plugin's own findings ----------------------------------
def test_findings_carry_their_numbers(dirs: dict[str, Path], run_report: dict[str, Any],
                                      sweep_with_diagnostics: Path) -> None:
    """The sentences of the page come from Finding objects whose numbers tests (and programs) read
    without parsing the text."""
    from bbvi_kit.report.findings import run_findings
    from bbvi_kit.report.sweep_findings import sweep_findings
    from bbvi_kit.results import group_runs, load_run, load_sweep

    run = load_run(dirs["run"], [])
    found = run_findings(run)
    (collapse,) = [f for f in found if f.topic == "diagnostic:posterior_collapse" and "active_units" in f.numbers]
    assert collapse.level == "warning" and collapse.numbers["active_units"] == 12
    assert collapse.numbers["num_units"] == 100 and collapse.numbers["warn_below"] == 0.5
    (bound,) = [f for f in found if f.topic == "diagnostic:heldout_iwae" and "gap" in f.numbers]
    last = read_csv(dirs["run"] / "diagnostics" / "heldout_iwae.csv")[-1]
    assert bound.numbers["test_neg_iwae"] == float(last["test_neg_iwae"])
    assert bound.numbers["num_samples"] == 10 and bound.numbers["step"] == 30
    (test,) = [f for f in found if f.topic == "test"]
    assert test.level == "info" and test.numbers["last_step"] == 30
    assert [f.text for f in found if f.topic == "rate"] == run_report["page"].sentences("rate")

    failed = [f for f in run_findings(load_run(dirs["failed"], [])) if f.topic == "status"]
    assert [(f.level, f.numbers) for f in failed] == [("problem", {"step": 10.0})]

    sweep = load_sweep(sweep_with_diagnostics, [])
    found = sweep_findings(sweep, group_runs([r for r in sweep.runs if len(r.metrics)]))
    snr = {f.text[:6]: f for f in found if f.topic == "diagnostic:snr" and "slope" in f.numbers}
    assert snr["SNR(φ)"].level == "warning" and snr["SNR(φ)"].numbers["slope"] == pytest.approx(-0.5)
    assert snr["SNR(θ)"].level == "info" and snr["SNR(θ)"].numbers["slope"] == pytest.approx(0.5)
    assert (snr["SNR(φ)"].numbers["k_first"], snr["SNR(φ)"].numbers["k_last"]) == (1, 2)
    collapsed = [f for f in found if f.topic == "diagnostic:posterior_collapse" and f.level == "warning"]
    assert [(f.numbers["active_units"], f.numbers["step"]) for f in collapsed] == [(12, 30), (12, 30)]
    (best,) = [f for f in found if f.topic == "sweep"]
    assert best.numbers["difference"] > 0


def test_a_third_party_diagnostic_brings_its_own_findings(dirs: dict[str, Path], tmp_path: Path) -> None:
    """A diagnostic plugin registered here, unknown to the report, supplies its headline column and
    a finding of its own through the Diagnostic hooks; the report finds it by the CSV's name."""
    from bbvi_kit import Diagnostic, register_diagnostic
    from bbvi_kit.findings import Finding
    from bbvi_kit.results import last_finite

    name = f"wiggle_{uuid.uuid4().hex[:8]}"

    @register_diagnostic(name)
    class Wiggle(Diagnostic):
        def measure(self, context: Any) -> dict[str, float]:  # never run here
            return {}

        @classmethod
        def headline(cls, table: Any) -> str | None:
            return "amplitude"

        @classmethod
        def findings(cls, table: Any, run: Any, label: str = "") -> list[Finding]:
            step, value = last_finite(table, "amplitude")
            level = "warning" if value > 1 else "good"
            return [Finding(f"the wiggle is {value:g} at n = {step:g}, for {run.setting('model', 'name')}", level,
                            "anything", {"amplitude": value})]

    run = shutil.copytree(dirs["run"], tmp_path / "run")
    write_diagnostic(run, name, [{"step": s, "epoch": 0, "first_column": 1.0, "amplitude": s / 10, "time": s}
                                 for s in (10, 20, 30)])
    page = Page(build_report(run))
    assert sorted(page.sentences(f"diagnostic:{name}")) == [  # the Findings list: warnings first
        f"Diagnostic {name}: amplitude went from 1 at n = 10 to 3 at n = 30 (×3).",  # its headline, not first_column
        "The wiggle is 3 at n = 30, for gaussian_vae"]
    assert ("warning", f"diagnostic:{name}", "The wiggle is 3 at n = 30, for gaussian_vae") in page.findings
    assert f'alt="diagnostic {name}"' in page.text
