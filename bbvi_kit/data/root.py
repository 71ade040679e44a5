"""Where dataset files live: one data root shared by every file-based dataset plugin.

The root is, in order of precedence:

1. the plugin's ``root`` option (``~`` is expanded; a relative path is relative to the working
   directory);
2. the environment variable ``BBVI_KIT_DATA`` when it is set and not empty;
3. ``~/.cache/bbvi_kit/data``.

Each dataset looks for its own files under the root in the layout torchvision uses
(``ROOT/celeba``, ``ROOT/cifar-100-python``, ``ROOT/MNIST/raw``, ``ROOT/FashionMNIST/raw``), so one
root serves torchvision and bbvi-kit alike.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "BBVI_KIT_DATA"
DEFAULT_DATA_ROOT = "~/.cache/bbvi_kit/data"


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
