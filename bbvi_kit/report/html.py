"""The report's HTML: a Jinja2 template (``templates/report.html.j2``, with autoescaping) whose
macros write every part of the page, and the embedding of PNG figures as ``data:`` URIs.

Every value that is not already markup is escaped with :func:`html.escape` (``finalize``), so
what reaches the page from a file (a recipe, an error message, a column name) is text, never
markup. The template is written indented, one element a line; the loader joins its lines and
drops the indentation, so the page is one line, as it always was.
"""

from __future__ import annotations

import base64
import html
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

__all__ = ["CSS", "Markup", "data_uri", "figure", "macros", "png_size"]


def _joined_lines(name: str) -> tuple[str, None, Any]:
    text = resources.files("bbvi_kit.report").joinpath("templates").joinpath(name).read_text(encoding="utf-8")
    return "".join(line.strip() for line in text.splitlines()), None, lambda: True


def _escape(value: Any) -> Any:
    """Every expression's value as escaped text (:func:`html.escape` with quotes); markup as it is."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


_ENVIRONMENT = jinja2.Environment(loader=jinja2.FunctionLoader(_joined_lines), autoescape=True,
                                  finalize=_escape, undefined=jinja2.StrictUndefined)

CSS = Markup(resources.files("bbvi_kit.report").joinpath("templates").joinpath("report.css").read_text(encoding="utf-8"))
"""The page's style sheet, inline in its ``<style>``."""


def macros() -> Any:
    """The template's macros (``findings``, ``figure``, ``details``, ``table``, ``page``, ...),
    each returning markup."""
    return _ENVIRONMENT.get_template("report.html.j2").module


def data_uri(png: bytes) -> str:
    """``png`` as a ``data:image/png;base64`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height of a PNG, from its IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        return 0, 0
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def figure(png: bytes, alt: str, caption: str = "", dpi: float = 110) -> Markup:
    """A figure with the PNG embedded; shown at about 100 CSS pixels per inch of the figure
    (``dpi``: the resolution it was drawn at), never wider than the page."""
    width, height = png_size(png)
    scale = min(1.0, 100.0 / dpi)
    return macros().figure(data_uri(png), alt, caption, round(width * scale), round(height * scale))
