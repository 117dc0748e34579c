"""What every part of a report page shares: escaping, number formats, tables and the CSS.

The page (`gradleak.sweep.html`) and each cell kind's section of it
(`gradleak.sweep.image_html`, `gradleak.sweep.text_html`) build on these, so a kind's
section needs nothing from the page and the page reaches the sections through the cell
kinds without an import loop.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from typing import Any

from gradleak.sweep.axes import format_value
from gradleak.sweep.summary import Setting

KEY_CHARS = 12  # cell keys are SHA-256 hex; a prefix identifies them in tables

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.note{color:#555;font-size:.9em}.warn{color:#a00}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figcaption{font-size:.85em;color:#444;max-width:520px}
.strip{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start;margin-bottom:1em}
.strip figure img{max-width:100%;image-rendering:pixelated}
pre{white-space:pre-wrap;margin:0;font-size:.85em;max-height:12em;overflow:auto}
code{font-size:.9em}
td.seq{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;font-size:.85em}
mark.hit{background:#c8f0c8}span.miss{background:#f6c8c8;text-decoration:underline dotted}
"""


def e(value: Any) -> str:
    """`value` as text, HTML-escaped (quotes too: safe inside attributes)."""
    return html.escape(str(value), quote=True)


def num(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] = ()) -> str:
    """A table of already-escaped cells."""
    head = "<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>" if any(header) else ""
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i < len(numeric) and numeric[i]
                                    else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def setting_label(setting: Setting) -> str:
    return ", ".join(f"{name}={format_value(v)}" for name, v in setting.values) or "all cells"


def page(title: str, parts: Sequence[str]) -> str:
    """A whole self-contained page: inline CSS, no script, `parts` already HTML."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(p for p in parts if p) + "\n</body></html>\n")


__all__ = ["CSS", "KEY_CHARS", "data_uri", "e", "num", "page", "setting_label", "table"]
