"""The report's single HTML page: tables and figures (by relative path) in one file."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import pandas as pd

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.85rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.meta { color: #555; font-size: 0.9rem; } .note { color: #a15c00; }
.failed td { background: #fff0f0; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.25rem 0; }
details { margin: 0.5rem 0; } summary { cursor: pointer; }
"""


def table_html(table: pd.DataFrame, index: bool = False, css_class: str = "") -> str:
    """Render a DataFrame as an HTML table (cells escaped, missing values as a dash)."""
    classes = ["report-table"] + ([css_class] if css_class else [])
    return table.to_html(index=index, escape=True, na_rep="—", border=0, classes=classes)


def figure_html(src: str, caption: str = "") -> str:
    """Embed one figure by its path relative to the page."""
    caption_html = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{escape(src)}" alt="{escape(caption)}">{caption_html}</figure>'


def paragraph(text: str, css_class: str = "") -> str:
    """Wrap plain text in an escaped paragraph."""
    attr = f' class="{css_class}"' if css_class else ""
    return f"<p{attr}>{escape(text)}</p>"


def details_html(summary: str, body: str, open_: bool = False) -> str:
    """Wrap content in a collapsible block."""
    flag = " open" if open_ else ""
    return f"<details{flag}><summary>{escape(summary)}</summary>{body}</details>"


def section_html(title: str, body: str, level: int = 2, anchor: str = "") -> str:
    """Give content a heading."""
    attr = f' id="{escape(anchor)}"' if anchor else ""
    return f"<section{attr}><h{level}>{escape(title)}</h{level}>{body}</section>"


def page_html(title: str, meta: Sequence[str], sections: Sequence[str]) -> str:
    """Assemble the full page from a title, lines of metadata and section blocks."""
    meta_html = "".join(f"<li>{escape(line)}</li>" for line in meta)
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f'<h1>{escape(title)}</h1>\n<ul class="meta">{meta_html}</ul>\n{body}\n</body>\n</html>\n'
    )
