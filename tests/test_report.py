"""``bbvi-kit report``: a self-contained HTML page for a run or a sweep (bbvi_kit.report).

Run and sweep directories come from real tiny runs of the quickstart recipe; diagnostics that
are not written yet by their plugins (posterior_collapse, snr, a made-up one) are added as CSV
files with known values, so the findings they should produce are known. The last tests open the
pages in a real headless Chromium (skipped where it or playwright is missing; CI installs it with
.ci/install-browser).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import io
import json
import math
import os
import re
import shutil
import uuid
from html.parser import HTMLParser
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
    write_report,
)
from conftest import call_cli
from flaky_plugin import FLAKY_PLUGIN

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
TINY = ["training.iterations=30", "training.progress=false", "model.hidden=[8]", "training.eval_every=10",
        "training.device=cpu"]
HELDOUT = "diagnostics=[{name: heldout_iwae, num_samples: 10, max_examples: 50}]"
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]



def only_child(folder: Path) -> Path:
    (child,) = [p for p in folder.iterdir() if p.is_dir()]
    return child


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run with heldout_iwae; a K sweep (K in {1, 2} x seeds {0, 1}); a sweep of a good point
    and a point whose model raises after the tenth step (``failed``: that run's directory)."""
    tmp = tmp_path_factory.mktemp("report")
    assert call_cli(["run", QUICKSTART, *TINY, HELDOUT, "--out", tmp / "runs"]) == 0
    assert call_cli(["run", QUICKSTART, *TINY, "sweep.objective.num_particles=[1,2]", "training.seeds=[0,1]",
                     "--out", tmp / "sweeps"]) == 0
    name = f"flaky_vae_{uuid.uuid4().hex[:8]}"
    (tmp / "flaky.py").write_text(FLAKY_PLUGIN.replace("{name}", name), encoding="utf-8")
    (tmp / "flaky.yaml").write_text(
        f"name: flaky\nplugins: [flaky.py]\nmodel: {{name: {name}, hidden: [8], latent_dim: 2}}\n"
        "training: {iterations: 20, seeds: [0], progress: false, device: cpu, batch_size: 64, eval_every: 10}\n"
        "sweep: {model.fail_at: [0, 15]}\n", encoding="utf-8")
    assert call_cli(["run", tmp / "flaky.yaml", "--out", tmp / "failed_sweeps"]) == 1
    failed_sweep = only_child(tmp / "failed_sweeps" / "flaky")
    return {
        "tmp": tmp,
        "run": only_child(tmp / "runs" / "quickstart"),
        "sweep": only_child(tmp / "sweeps" / "quickstart"),
        "failed_sweep": failed_sweep,
        "failed": failed_sweep / "p01-fail_at=15-seed0",
    }


# -- reading the page ---------------------------------------------------------------------------
class Page(HTMLParser):
    """What the tests look at in a report: images, references, tables, findings, sections."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text = text
        self.images: list[dict[str, str]] = []
        self.references: list[str] = []  # every src / href
        self.tags: set[str] = set()
        self.kv: dict[str, tuple[str, str]] = {}  # summary of a run: key -> (shown, data-value)
        self.cells: list[dict[str, str]] = []  # every td with its attributes and text
        self.findings: list[tuple[str, str, str]] = []  # (level, topic, text)
        self.ids: set[str] = set()
        self._row_key: str | None = None
        self._cell: dict[str, str] | None = None
        self._finding: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        for key in ("src", "href"):
            if key in a:
                self.references.append(a[key])
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.images.append(a)
        elif tag == "tr":
            self._row_key = a.get("data-key")
        elif tag == "td":
            self._cell = dict(a, text="", row=self._row_key or "")
        elif tag == "li" and "finding" in a.get("class", ""):
            level = a["class"].split()[-1]
            self.findings.append((level, a.get("data-topic", ""), ""))
            self._finding = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data
        if self._finding is not None:
            self._finding.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            if self._cell["row"]:
                self.kv[self._cell["row"]] = (self._cell["text"], self._cell.get("data-value", ""))
            self._cell = None
        elif tag == "li" and self._finding is not None:
            level, topic, _ = self.findings[-1]
            self.findings[-1] = (level, topic, "".join(self._finding))
            self._finding = None

    def sentences(self, topic: str | None = None) -> list[str]:
        """The findings about ``topic``, each once (a diagnostic's are listed at the top of the
        page and again next to its figure), in page order."""
        return list(dict.fromkeys(t for _, top, t in self.findings if topic is None or top == topic))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def check_self_contained(page: Page) -> None:
    """Every image an embedded, valid PNG; nothing fetched from anywhere."""
    assert page.images, "no figure in the report"
    for img in page.images:
        src = img["src"]
        assert src.startswith("data:image/png;base64,"), src[:60]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(png)) as image:
            image.verify()
        with Image.open(io.BytesIO(png)) as image:
            assert image.size[0] > 200 and image.size[1] > 100
        assert img.get("alt")
    for ref in page.references:
        assert ref.startswith(("data:image/png;base64,", "#")), ref[:60]
    assert not re.search(r"https?://", page.text)
    assert not {"script", "link", "iframe", "object", "embed"} & page.tags
    assert "url(" not in page.text and "@import" not in page.text


def as_number(shown: str) -> float:
    return float(shown.replace("−", "-"))


# -- a run ----------------------------------------------------------------------------------------
def write_diagnostic(run_dir: Path, name: str, rows: list[dict[str, float]]) -> None:
    (run_dir / "diagnostics").mkdir(exist_ok=True)
    with open(run_dir / "diagnostics" / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def run_report(dirs: dict[str, Path]) -> dict[str, Any]:
    """``bbvi-kit report RUN`` on the run, to which two diagnostics the report has never seen are
    added first: ``made_up`` (a column and its _se, a column undefined at first as a difference
    is, a column that turns infinite) and ``posterior_collapse`` with 12 of 100 units active at
    the end and 8 per-unit columns of each kind."""
    run = dirs["run"]
    write_diagnostic(run, "made_up", [
        {"step": s, "epoch": 0, "wobble": 10.0 / s, "wobble_se": 0.1, "lagging": math.nan if s == 10 else s,
         "broken": math.inf if s == 30 else 1.0 + s, "time": s} for s in (10, 20, 30)])
    write_diagnostic(run, "posterior_collapse", [
        {"step": s, "epoch": 0, "active_units": a, "num_units": 100, "active_fraction": a / 100, "kl_total": 3.0,
         **{f"au_z_{j}": 0.5**j * s for j in range(8)}, **{f"kl_z_{j}": 0.1 * j for j in range(8)}, "time": s}
        for s, a in ((10, 40), (20, 20), (30, 12))])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = call_cli(["report", run])
    return {"code": code, "stdout": stdout.getvalue(),
            "page": Page((run / "report.html").read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def run_page(run_report: dict[str, Any]) -> Page:
    return run_report["page"]


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
        "quickstart", "gaussian_vae", "digits", "elbo")
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
@pytest.fixture(scope="module")
def sweep_with_diagnostics(dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The K sweep with an snr diagnostic that follows Rainforth et al. (SNR(phi) ~ 1/sqrt K,
    SNR(theta) ~ sqrt K) and posterior collapse at K = 2."""
    sweep = shutil.copytree(dirs["sweep"], tmp_path_factory.mktemp("sweep") / "sweep")
    for run in sorted(p for p in sweep.iterdir() if (p / "run.json").is_file()):
        info = json.loads((run / "run.json").read_text())
        k, seed = info["point"]["objective.num_particles"], info["seed"]
        write_diagnostic(run, "snr", [
            {"step": s, "epoch": 0, "snr_phi": 2 / math.sqrt(k) * (1 + 0.1 * seed) * (1 + 1 / s),
             "snr_theta": 3 * math.sqrt(k) * (1 + 0.1 * seed), "time": s} for s in (10, 20, 30)])
        active = 80 if k == 1 else 12
        write_diagnostic(run, "posterior_collapse", [
            {"step": s, "epoch": 0, "active_units": active, "num_units": 100, "active_fraction": active / 100,
             "time": s} for s in (10, 30)])
    return sweep


@pytest.fixture(scope="module")
def sweep_page(sweep_with_diagnostics: Path) -> Page:
    return Page(write_report(sweep_with_diagnostics).read_text(encoding="utf-8"))


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


# -- in a real browser ----------------------------------------------------------------------------
IMAGES_JS = """() => Array.from(document.images).map(img => ({
    alt: img.alt, complete: img.complete, natural: img.naturalWidth,
    shown: img.getBoundingClientRect().width, hidden: img.closest('details:not([open])') !== null}))"""


@pytest.mark.slow
def test_the_reports_show_their_figures_in_a_real_browser(run_page: Page, sweep_page: Page, tmp_path: Path) -> None:
    """Both pages in headless Chromium: every image decoded (complete, naturalWidth > 0) and laid
    out at a readable width (those in closed <details> once opened), nothing requested but the
    file itself; a full-page screenshot of each, every <details> open, to look at
    (into $BBVI_KIT_SCREENSHOTS when set)."""
    sync_api = pytest.importorskip("playwright.sync_api", exc_type=ImportError)
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is not installed (CI: .ci/install-browser)")
    shots = Path(os.environ.get("BBVI_KIT_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            for which, report in (("run", run_page), ("sweep", sweep_page)):
                path = tmp_path / f"{which}.html"
                path.write_text(report.text, encoding="utf-8")
                requests: list[str] = []
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                page.on("request", lambda request: requests.append(request.url))
                page.goto(path.as_uri(), wait_until="load")
                images = page.evaluate(IMAGES_JS)
                page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
                page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
                opened = page.evaluate("() => Array.from(document.images).map(i => i.getBoundingClientRect().width)")
                screenshot = shots / f"report_{which}.png"
                page.screenshot(path=str(screenshot), full_page=True)
                page.close()

                assert requests == [path.as_uri()]
                assert len(images) == len(report.images) == report.text.count("<img ")
                assert any(image["hidden"] for image in images) == (which == "sweep")  # each run's plots, folded
                for image, width in zip(images, opened):
                    assert image["complete"] and image["natural"] > 200, image
                    assert width > 200, image
                    if not image["hidden"]:
                        assert image["shown"] > 200, image
                with Image.open(screenshot) as shot:
                    assert shot.size[0] == 1300 and shot.size[1] > 2000
        finally:
            browser.close()


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
