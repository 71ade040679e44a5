"""Where dataset files live: one data root shared by every file-based dataset plugin.

The root is, in order of precedence:

1. the plugin's ``root`` option (``~`` is expanded; a relative path is relative to the working
   directory);
2. the environment variable ``BBVI_KIT_DATA`` when it is set and not empty;
3. ``~/.cache/bbvi_kit/data``.

Each dataset looks for its own files under the root in the layout torchvision uses
(``ROOT/celeba``, ``ROOT/cifar-100-python``, ``ROOT/MNIST/raw``, ``ROOT/FashionMNIST/raw``), so one
root serves torchvision and bbvi-kit alike.

A recipe may *read* from any folder, but it *writes* (downloads with ``download: true``, decoded-
image caches) only where the user chose outside any recipe (:func:`check_recipe_write`): below the
working folder, below the data root of ``$BBVI_KIT_DATA`` or the default, or below a folder named
on the command line with ``bbvi-kit --allow-write DIR`` (kept in ``$BBVI_KIT_ALLOW_WRITE`` so
that a sweep's worker processes see it too).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

from bbvi_kit.errors import InputError

DATA_ENV = "BBVI_KIT_DATA"
DEFAULT_DATA_ROOT = "~/.cache/bbvi_kit/data"
ALLOW_WRITE_ENV = "BBVI_KIT_ALLOW_WRITE"


def data_root(option: str | None) -> Path:
    """The data root: ``option`` if given, else ``$BBVI_KIT_DATA``, else ``~/.cache/bbvi_kit/data``.

    ``~`` is expanded in all three; the folder is not created and need not exist.
    """
    if option is not None and str(option).strip():
        return Path(option).expanduser()
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(DEFAULT_DATA_ROOT).expanduser()


def root_hint(root: Path) -> str:
    """A clause saying where ``root`` came from when it does not exist, for error messages."""
    if root.exists():
        return ""
    return f" (the data root {root} does not exist; set the dataset's root option or {DATA_ENV})"


def allow_writes_to(folders: Sequence[Path | str]) -> None:
    """Let recipes download into and cache below ``folders`` for the rest of this process and its
    children (what ``bbvi-kit --allow-write DIR`` does)."""
    known = [p for p in os.environ.get(ALLOW_WRITE_ENV, "").split(os.pathsep) if p]
    os.environ[ALLOW_WRITE_ENV] = os.pathsep.join([*known, *(str(Path(f).expanduser().resolve()) for f in folders)])


def _writable_places() -> list[Path]:
    named = [Path(p) for p in os.environ.get(ALLOW_WRITE_ENV, "").split(os.pathsep) if p.strip()]
    return [Path.cwd(), data_root(None), *named]


def check_recipe_write(target: Path, dataset: str, key: str, what: str) -> None:
    """Refuse, in one line naming the option, to let a recipe's ``data.<key>`` make bbvi-kit
    ``what`` (download, cache) into ``target`` when it lies (symbolic links followed) outside the
    working folder, the data root chosen outside the recipe, and every ``--allow-write`` folder."""
    resolved = target.expanduser().resolve()
    for place in _writable_places():
        base = place.expanduser().resolve()
        if resolved == base or base in resolved.parents:
            return
    raise InputError(
        f"dataset {dataset}: data.{key} {target} is outside the working folder and the data root "
        f"{data_root(None)}, and a recipe does not {what} there by itself; allow it with "
        f"'bbvi-kit --allow-write {target} run ...'"
    )


def download_cleanly(creates: Sequence[Path], fetch: Callable[[], object]) -> None:
    """Run ``fetch`` (a torchvision downloader); if it fails, remove each of the paths in
    ``creates`` (the folders and files the download makes, outermost first) that did not exist
    before it, so that a failed download leaves nothing behind, then re-raise."""
    new = [p for p in creates if not os.path.lexists(p)]
    try:
        fetch()
    except BaseException:
        for path in new:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                path.unlink(missing_ok=True)
        raise
