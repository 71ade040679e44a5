"""What a kill at each file-creation point of a run or a sweep leaves, then its resume.

``python tests/support/kill_points.py WORKDIR [REGEX]`` (WORKDIR holds ``recipe.yaml`` and its
plugin files; REGEX, if given, picks the points by their path relative to ``WORKDIR/runs/<name>``).

A file-creation point is each ``mkdir``, each ``open`` for writing or creating, and each
``rename``/``replace``, of a path under ``WORKDIR/runs``. One child runs the recipe uninterrupted
and, just before each chosen point N, copies the tree under ``WORKDIR/runs`` aside: that copy is
exactly what SIGKILL between points N-1 and N would leave on disk (what the process wrote but had
not flushed is in neither; the kernel releases its locks either way; nothing runs at exit in
either), and the run is deterministic (the recipe seeds every random number generator), so one
run gives every kill's leftovers. Then, for each copy, another child runs
``bbvi-kit run --resume`` on it (the run or sweep directory, if it exists). The children are
forked from this process, which imported bbvi-kit once and never ran a torch operation: a forked
child is equivalent to a fresh ``bbvi-kit run`` process here, and the whole takes seconds
instead of minutes. (Real SIGKILLs at random moments and at chosen steps, of real processes,
are ``tests/integration/test_resume.py``'s other tests.)

The result, written as JSON to stdout, gives for each N what was left and how the resume ended,
and whether the rows of every CSV file of the resumed run equal the uninterrupted run's.
"""

from __future__ import annotations

import builtins
import csv
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Callable

import torch

torch.set_num_threads(1)
# Everything a run imports, imported once here, and matplotlib warmed up (a child imports nothing of
# its own but the recipe's plugin file). This folder is on sys.path when this file runs as a script.
from fork_server import preload  # noqa: E402

preload()
from matplotlib.figure import Figure  # noqa: E402

from bbvi_kit import cli  # noqa: E402


def _savefig_without_rendering(self: Figure, fname: object, *args: object, **kwargs: object) -> None:
    """What ``Figure.savefig`` does to the file system, without rendering: it opens ``fname`` for
    writing (one file-creation point, as the real call) and writes a few bytes. Rendering (text
    layout, PNG encoding, PDF font subsetting) is about 1 s of each sweep resume here, 90 % of a
    trial, and is not what this driver checks: a resume is compared by its CSV rows and statuses.
    The figures are still built from the resumed run's files, and they go through the product's
    atomic saves (a temporary file, then a rename), so the file-creation points are the product's.
    Figure rendering is tested by tests/unit/plots and by the other resume tests' real runs."""
    with open(fname, "wb") as fh:  # type: ignore[call-overload]
        fh.write(b"figure not rendered by tests/support/kill_points.py\n")


Figure.savefig = _savefig_without_rendering  # type: ignore[method-assign]


def _hook_creation_points(under: str, seen: list[str], before: Callable[[int, str], None] | None = None) -> None:
    """List every file-creation point under ``under`` in ``seen`` (its path); call
    ``before(n, path)`` just before the n-th (1-based), with the hooks off while it runs."""
    busy = []

    def point(path: object) -> None:
        if busy or not isinstance(path, (str, os.PathLike)):
            return
        path = os.path.abspath(os.fspath(path))
        if path.startswith(under + os.sep):
            seen.append(path)
            if before is not None:
                busy.append(True)
                try:
                    before(len(seen), path)
                finally:
                    busy.pop()

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


def _child(args: list[str], under: str, points_file: str | None = None,
           before: Callable[[int, str], None] | None = None) -> tuple[int, str]:
    """Run ``bbvi-kit ARGS`` in a forked child, listing its file-creation points into
    ``points_file`` (and calling ``before`` at each, see :func:`_hook_creation_points`); returns
    its exit status and the last line it wrote to stderr."""
    err_file = os.path.join(os.path.dirname(under), "stderr.txt")
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(os.open(err_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
            seen: list[str] = []
            _hook_creation_points(under, seen, before)
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
    copies = workdir / "left"
    copies.mkdir()
    pattern = re.compile(pick) if pick is not None else None

    def copy_aside(n: int, path: str) -> None:
        """What a kill just before point ``n`` leaves: the tree under ``runs`` as it is now."""
        if pattern is None or pattern.search(os.path.relpath(path, runs / "faulty")):
            target = copies / str(n)
            if runs.is_dir():
                shutil.copytree(runs, target, symlinks=True)
            else:
                target.mkdir()

    points_file = str(workdir / "points.json")
    code, err = _child(["run", "recipe.yaml"], under, points_file=points_file, before=copy_aside)
    assert code == 0, err
    points = json.loads(Path(points_file).read_text())
    (made,) = (runs / "faulty").iterdir()
    reference = _rows(made)
    shutil.rmtree(runs)
    trials = []
    for n in sorted(int(p.name) for p in copies.iterdir()):
        os.rename(copies / str(n), runs)
        left = sorted((runs / "faulty").iterdir()) if (runs / "faulty").is_dir() else []
        trial = {"point": n, "path": os.path.relpath(points[n - 1], runs), "left": [p.name for p in left]}
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
