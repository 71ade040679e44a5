"""Kill a run or a sweep at each of its file-creation points in turn, then resume it.

``python tests/kill_points.py WORKDIR [REGEX]`` (WORKDIR holds ``recipe.yaml`` and its plugin
files; REGEX, if given, picks the points by their path relative to ``WORKDIR/runs/<name>``)
imports bbvi-kit once and then forks one child per trial, which is what makes a few dozen
trials take seconds instead of minutes. A forked child is equivalent to a fresh
``bbvi-kit run`` process here: it runs the same ``cli.main``, the recipe seeds every random
number generator, the model's parameters are built from that seed, and the parent never
trained or ran a torch operation before forking.

A file-creation point is each ``mkdir``, each ``open`` for writing or creating, and each
``rename``/``replace``, of a path under ``WORKDIR/runs``. The first child runs the recipe
uninterrupted and counts them (T points). Child N is sent SIGKILL just before its N-th point
(N = 1..T), so it leaves the files exactly as a kill between points N-1 and N would; then
another child runs ``bbvi-kit run --resume`` on what it left (the run or sweep directory, if it
exists). The result, written as JSON to stdout, gives for each N what was left and how the
resume ended, and the rows of every CSV file of the resumed and the uninterrupted runs.
"""

from __future__ import annotations

import builtins
import csv
import io
import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
# Everything a run imports, imported once here (a child imports nothing of its own but the recipe's
# plugin file): torch's compiler stack (the optimizers import it), Pyro, the plugins, the figures.
import matplotlib.pyplot  # noqa: E402, F401
import sklearn.datasets  # noqa: E402, F401
import torch._dynamo  # noqa: E402, F401

import bbvi_kit.plots  # noqa: E402, F401
import bbvi_kit.report  # noqa: E402, F401
import bbvi_kit.runner  # noqa: E402, F401
import bbvi_kit.sweep_runner  # noqa: E402, F401
import bbvi_kit_plugins.gaussian_vae  # noqa: E402, F401
from bbvi_kit import cli  # noqa: E402


def _hook_creation_points(under: str, kill_at: int, seen: list[str]) -> None:
    """List every file-creation point under ``under`` in ``seen`` (its path); SIGKILL this
    process just before the ``kill_at``-th (0: never)."""

    def point(path: object) -> None:
        if isinstance(path, (str, os.PathLike)) and os.path.abspath(os.fspath(path)).startswith(under + os.sep):
            seen.append(os.path.abspath(os.fspath(path)))
            if len(seen) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
    real_replace, real_rename = os.replace, os.rename

    def open_(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202
        if any(c in mode for c in "wxa+"):
            point(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):  # noqa: ANN001, ANN202
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            point(path)
        return real_os_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):  # noqa: ANN001, ANN202
        point(path)
        return real_mkdir(path, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):  # noqa: ANN001, ANN202
        point(dst)
        return real_replace(src, dst, *args, **kwargs)

    def rename(src, dst, *args, **kwargs):  # noqa: ANN001, ANN202
        point(dst)
        return real_rename(src, dst, *args, **kwargs)

    builtins.open, io.open, os.open, os.mkdir, os.replace, os.rename = open_, open_, os_open, mkdir, replace, rename


def _child(args: list[str], under: str, kill_at: int = 0, points_file: str | None = None) -> tuple[int, str]:
    """Run ``bbvi-kit ARGS`` in a forked child; returns its exit status (-9 when killed) and the
    last line it wrote to stderr."""
    err_file = os.path.join(os.path.dirname(under), "stderr.txt")
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(os.open(err_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
            seen: list[str] = []
            _hook_creation_points(under, kill_at, seen)
            try:
                cli.main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            if points_file is not None:
                with open(points_file, "w") as fh:
                    json.dump(seen, fh)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    lines = Path(err_file).read_text().strip().splitlines()
    return (-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)), lines[-1] if lines else ""


def _rows(folder: Path) -> dict[str, list[dict[str, str]]]:
    """Every CSV file under ``folder`` (not set-aside copies) as rows without the wall-clock column."""
    out = {}
    for path in sorted(folder.rglob("*.csv")):
        table = list(csv.DictReader(path.read_text().splitlines()))
        out[path.relative_to(folder).as_posix()] = [
            {k: v for k, v in row.items() if k not in ("time", "run_dir")} for row in table]
    return out


def _statuses(folder: Path) -> list[str]:
    return sorted(json.loads(p.read_text()).get("status", "") for p in folder.rglob("run.json"))


def main(workdir: Path, pick: str | None = None) -> dict:
    os.chdir(workdir)
    runs = workdir / "runs"
    under = str(runs)
    points_file = str(workdir / "points.json")
    code, err = _child(["run", "recipe.yaml"], under, points_file=points_file)
    assert code == 0, err
    points = json.loads(Path(points_file).read_text())
    (made,) = (runs / "faulty").iterdir()
    reference = _rows(made)
    shutil.rmtree(runs)
    chosen = [n for n, path in enumerate(points, start=1)
              if pick is None or re.search(pick, os.path.relpath(path, runs / "faulty"))]
    trials = []
    for n in chosen:
        killed, _ = _child(["run", "recipe.yaml"], under, kill_at=n)
        left = sorted((runs / "faulty").iterdir()) if (runs / "faulty").is_dir() else []
        trial = {"point": n, "path": os.path.relpath(points[n - 1], runs), "killed": killed,
                 "left": [p.name for p in left]}
        if left:
            (target,) = left
            trial["files"] = sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))
            trial["resume"], trial["resume_says"] = _child(["run", "--resume", str(target)], under)
            trial["rows_equal"] = _rows(target) == reference
            trial["statuses"] = _statuses(target)
        trials.append(trial)
        shutil.rmtree(runs, ignore_errors=True)
    return {"points": len(points), "trials": trials}


if __name__ == "__main__":
    json.dump(main(Path(sys.argv[1]).resolve(), sys.argv[2] if len(sys.argv) > 2 else None), sys.stdout)
