"""The report's HTML (:mod:`bbvi_kit.report.html`): PNGs embedded as ``data:`` URIs that decode to
the bytes given, their size read from the IHDR chunk, the figure's shown size, and the template's
macros escaping every hostile string (tags, quotes, ampersands) while passing markup through."""

from __future__ import annotations

import base64
import re
import struct
import zlib

import jinja2
import pytest

from bbvi_kit.findings import Finding
from bbvi_kit.report.html import CSS, Markup, data_uri, figure, macros, png_size

HOSTILE = "<script>alert(\"x\")</script> & 'q'"
ESCAPED = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27;"


def png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of the given size, built by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x00" * ((width + 7) // 8) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_a_data_uri_decodes_to_the_png_bytes_given() -> None:
    data = png(3, 2) + bytes(range(256))  # every byte value
    uri = data_uri(data)
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    assert base64.b64decode(uri[len(prefix):], validate=True) == data
    assert data_uri(b"") == prefix


def test_png_size_reads_width_and_height_from_the_ihdr_chunk() -> None:
    assert png_size(png(640, 480)) == (640, 480)
    assert png_size(png(70000, 1)) == (70000, 1)  # more than two bytes


@pytest.mark.parametrize("data", [b"", b"GIF89a" + b"\x00" * 30, b"\x89PNG\r\n\x1a\n" + b"\x00" * 10],
                         ids=["empty", "not-png", "cut-short"])
def test_png_size_of_what_is_not_a_whole_png_header_is_zero(data: bytes) -> None:
    assert png_size(data) == (0, 0)


def test_a_figure_embeds_the_png_and_shows_it_at_100_pixels_per_inch() -> None:
    data = png(220, 110)
    html = str(figure(data, "alt text", "the caption", dpi=110))
    src = re.search(r'src="data:image/png;base64,([^"]*)"', html)
    assert src is not None and base64.b64decode(src.group(1)) == data
    assert 'width="200"' in html and 'height="100"' in html  # 220 * 100/110, 110 * 100/110
    assert "<figcaption>the caption</figcaption>" in html
    assert html.startswith("<figure>") and html.endswith("</figure>")


def test_a_figure_drawn_below_100_dpi_is_never_enlarged() -> None:
    html = str(figure(png(50, 40), "a", dpi=50))
    assert 'width="50"' in html and 'height="40"' in html


def test_a_figure_without_a_readable_size_or_caption_has_neither_attribute() -> None:
    html = str(figure(b"not a png", "a"))
    assert "width=" not in html and "height=" not in html and "figcaption" not in html


def test_a_figures_alt_and_caption_are_escaped() -> None:
    html = str(figure(png(1, 1), HOSTILE, HOSTILE))
    assert "<script>" not in html
    assert f'alt="{ESCAPED}"' in html
    assert f"<figcaption>{ESCAPED}</figcaption>" in html


def test_findings_are_escaped_in_text_level_and_topic() -> None:
    html = str(macros().findings([Finding(HOSTILE, level='x" onclick="y', topic="a&b")]))
    assert "<script>" not in html and 'onclick="y"' not in html
    assert f">{ESCAPED}</li>" in html
    assert 'class="finding x&quot; onclick=&quot;y"' in html and 'data-topic="a&amp;b"' in html


def test_no_findings_say_so() -> None:
    assert str(macros().findings([])) == "<p>Nothing to report.</p>"


def test_text_from_files_is_escaped_but_markup_passes_through() -> None:
    m = macros()
    assert str(m.paragraph(HOSTILE)) == f"<p>{ESCAPED}</p>"
    assert str(m.pre("a < b && c > d")) == "<pre>a &lt; b &amp;&amp; c &gt; d</pre>"
    assert str(m.paragraph(Markup("<b>bold</b>"))) == "<p><b>bold</b></p>"
    assert str(m.heading("x", id='"><script>')) == '<h3 id="&quot;&gt;&lt;script&gt;">x</h3>'


def test_non_string_values_are_written_as_escaped_text() -> None:
    class Hostile:
        def __str__(self) -> str:
            return "<img src=x onerror=alert(1)>"

    html = str(macros().paragraph(Hostile()))
    assert html == "<p>&lt;img src=x onerror=alert(1)&gt;</p>"
    assert str(macros().paragraph(3.5)) == "<p>3.5</p>"


def test_table_cells_escape_attribute_values() -> None:
    html = str(macros().cell("v", cls="num", attrs={"data-value": '1" onmouseover="x'}))
    assert html == '<td class="num" data-value="1&quot; onmouseover=&quot;x">v</td>'


def test_the_template_is_joined_into_lines_without_indentation() -> None:
    html = str(macros().list_items(["a", "b"], cls="c"))
    assert html == '<ul class="c"><li>a</li><li>b</li></ul>'


def test_a_missing_value_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(jinja2.UndefinedError):
        str(macros().figure("uri", "alt"))


def test_the_style_sheet_is_markup_and_not_escaped() -> None:
    assert isinstance(CSS, Markup) and len(CSS) > 0
    assert str(macros().paragraph(CSS)) == f"<p>{CSS}</p>"
