"""Report pages made from real tiny runs, and a reader of their HTML: the fixtures of
``tests/unit/report/test_report.py`` and of the browser test in ``tests/integration``
(registered for the whole suite through ``pytest_plugins`` in ``tests/conftest.py``; session-scoped,
so a worker builds the runs once).

Run and sweep directories come from real tiny runs of the quickstart recipe; diagnostics that
are not written yet by their plugins (posterior_collapse, snr, a made-up one) are added as CSV
files with known values, so the findings they should produce are known."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import math
import re
import shutil
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bbvi_kit.report import write_report
from tests.support import REPO
from tests.support.cli import call_cli
from tests.support.flaky_plugin import FLAKY_PLUGIN

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
TINY = ["training.iterations=30", "training.progress=false", "model.hidden=[8]", "training.eval_every=10",
        "training.device=cpu"]
HELDOUT = "diagnostics=[{name: heldout_iwae, num_samples: 10, max_examples: 50}]"


def only_child(folder: Path) -> Path:
    (child,) = [p for p in folder.iterdir() if p.is_dir()]
    return child


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def run_page(run_report: dict[str, Any]) -> Page:
    return run_report["page"]



@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def sweep_page(sweep_with_diagnostics: Path) -> Page:
    return Page(write_report(sweep_with_diagnostics).read_text(encoding="utf-8"))
