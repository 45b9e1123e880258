"""HTML building blocks: one self-contained page, escaped text, inline images, no scripts.

The page forbids itself every network request (a Content-Security-Policy allowing only inline styles and
`data:` images), so a report that would reach out fails visibly in the browser instead of leaking or
showing holes when opened offline.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from pathlib import Path

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0 auto;
       max-width: 960px; padding: 0 20px 40px; }
h1 { font-size: 24px; margin: 24px 0 4px; } h2 { font-size: 20px; border-bottom: 2px solid #0072B2;
padding-bottom: 4px; margin-top: 36px; } h3 { font-size: 16px; margin: 20px 0 6px; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.note { color: #555; font-size: 13px; } .muted { color: #777; }
ol.nn { margin: 4px 0 14px; padding-left: 24px; } ol.nn li { margin: 2px 0; }
pre { background: #f6f6f6; padding: 10px; overflow-x: auto; font-size: 12px; }
code { font-size: 13px; }
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def image(png_base64: str, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{png_base64}">'


def link(path: Path, text: str) -> str:
    """A file:// link to a run folder, so the reader can open the files behind a figure."""
    return f'<a href="{esc(path.resolve().as_uri())}">{esc(text)}</a>'


def table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int] | None = None) -> str:
    """Rows of already-escaped cells; columns in `numeric` are right-aligned."""
    numeric = numeric or set()
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(title: str, *parts: str, anchor: str = "") -> str:
    anchor_attr = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{anchor_attr}><h2>{esc(title)}</h2>{''.join(parts)}</section>"


def paragraph(text: str, css: str = "") -> str:
    """`text` is escaped here."""
    return f'<p class="{css}">{esc(text)}</p>' if css else f"<p>{esc(text)}</p>"


def details(summary: str, body: str) -> str:
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(body)}</pre></details>"


def document(title: str, subtitle: str, sections: Sequence[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"note\">{esc(subtitle)}</p>{''.join(sections)}</body></html>\n")
