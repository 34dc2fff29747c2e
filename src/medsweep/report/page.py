"""One renderer for every page medsweep writes: a page is a list of blocks, rendered to Markdown
or HTML from the same blocks (compact tables with 3 significant digits, figures first)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np
import pandas as pd

DASH = "—"
DIGITS = 3


@dataclass
class Heading:
    """A section title; ``anchor`` becomes the HTML id."""

    text: str
    level: int = 2
    anchor: str = ""


@dataclass
class Text:
    """A paragraph; ``css`` is ``meta`` (grey), ``note`` (amber) or ``lead`` (the headline)."""

    text: str
    css: str = ""


@dataclass
class Bullets:
    """A bulleted list of plain lines."""

    items: list[str]


@dataclass
class Link:
    """A paragraph holding one link (relative path) with a label."""

    href: str
    label: str
    before: str = ""


@dataclass
class Table:
    """A table: floats get ``digits`` significant digits, missing values a dash."""

    frame: pd.DataFrame
    index: bool = False
    caption: str = ""
    css: str = ""
    digits: int = DIGITS


@dataclass
class Figure:
    """An image by its path relative to the page."""

    src: str
    caption: str = ""


@dataclass
class Gallery:
    """Small figures side by side (thumbnails), each with its caption."""

    items: list[Figure]
    title: str = ""


@dataclass
class Details:
    """A collapsible group of blocks (expanded in Markdown)."""

    summary: str
    blocks: list
    open: bool = False


@dataclass
class Page:
    """A page: title, metadata lines and blocks."""

    title: str
    meta: list[str] = field(default_factory=list)
    blocks: list = field(default_factory=list)


def format_value(value: object, digits: int = DIGITS) -> str:
    """Floats with ``digits`` significant digits (fixed notation for ordinary sizes); a dash for
    missing values; other values as text."""
    if value is None:
        return DASH
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return DASH
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if v == 0:
            return "0"
        if 1e-4 <= abs(v) < 1e6:
            decimals = max(digits - 1 - math.floor(math.log10(abs(v))), 0)
            return f"{v:.{decimals}f}"
        return f"{v:.{digits - 1}e}"
    try:
        if pd.isna(value):
            return DASH
    except (TypeError, ValueError):
        pass
    return str(value)


def display_frame(frame: pd.DataFrame, index: bool = False, digits: int = DIGITS) -> pd.DataFrame:
    """Every cell as its display text."""
    table = frame.reset_index() if index else frame
    return table.apply(lambda column: column.map(lambda v: format_value(v, digits))).astype(str)


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table_md(block: Table) -> str:
    shown = display_frame(block.frame, block.index, block.digits)
    header = [str(c) for c in shown.columns]
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("| " + " | ".join("---" for _ in header) + " |")
    for row in shown.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    caption = f"{block.caption}\n\n" if block.caption else ""
    return caption + "\n".join(lines) + "\n"


def _block_md(block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}\n"
    if isinstance(block, Text):
        return (f"**{block.text}**" if block.css == "lead" else block.text) + "\n"
    if isinstance(block, Bullets):
        return "".join(f"- {item}\n" for item in block.items)
    if isinstance(block, Link):
        return f"{block.before}[{block.label}]({block.href})\n"
    if isinstance(block, Table):
        return _table_md(block)
    if isinstance(block, Figure):
        return f"![{block.caption}]({block.src})\n"
    if isinstance(block, Gallery):
        title = f"#### {block.title}\n\n" if block.title else ""
        cells = " ".join(f"![{f.caption}]({f.src})" for f in block.items)
        captions = "".join(f"- {f.caption}\n" for f in block.items)
        return f"{title}{cells}\n\n{captions}"
    if isinstance(block, Details):
        return f"**{block.summary}**\n\n" + "\n".join(_block_md(b) for b in block.blocks)
    raise TypeError(f"not a page block: {block!r}")


def render_markdown(page: Page) -> str:
    """The page as GitHub-flavoured Markdown."""
    parts = [f"# {page.title}\n"]
    if page.meta:
        parts.append("".join(f"- {line}\n" for line in page.meta))
    parts += [_block_md(b) for b in page.blocks]
    return "\n".join(parts)


STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto;
       max-width: 1100px; padding: 0 1rem; color: #222; line-height: 1.4; overflow-x: hidden; }
h1, h2, h3, h4, p, li, figcaption, summary, a { overflow-wrap: anywhere; }
h1 { font-size: 1.45rem; } h2 { font-size: 1.15rem; margin-top: 1.8rem;
  border-bottom: 1px solid #ddd; } h3 { font-size: 1rem; }
.table-wrap { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; margin: 0.4rem 0 0.9rem; font-size: 0.82rem; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.45rem; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; white-space: normal; }
caption { caption-side: top; text-align: left; color: #555; font-size: 0.85rem; }
.meta { color: #555; font-size: 0.88rem; } .note { color: #a15c00; }
.lead { font-size: 1.1rem; font-weight: 600; background: #f6f8fa; padding: 0.5rem 0.75rem;
        border-left: 4px solid #c0392b; }
.failed td { background: #fff0f0; }
figure { margin: 0.5rem 0; } figcaption { color: #555; font-size: 0.82rem; }
img { max-width: min(100%, 760px); height: auto; border: 1px solid #eee; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.6rem; }
.gallery figure { width: 200px; margin: 0; } .gallery img { width: 100%; image-rendering: pixelated; }
details { margin: 0.4rem 0; } summary { cursor: pointer; }
"""


def _table_html(block: Table) -> str:
    shown = display_frame(block.frame, block.index, block.digits)
    head = "".join(f"<th>{escape(str(c))}</th>" for c in shown.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
        for row in shown.itertuples(index=False)
    )
    caption = f"<caption>{escape(block.caption)}</caption>" if block.caption else ""
    css = f' class="{escape(block.css)}"' if block.css else ""
    return (
        f'<div class="table-wrap"><table{css}>{caption}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _figure_html(block: Figure) -> str:
    caption = f"<figcaption>{escape(block.caption)}</figcaption>" if block.caption else ""
    return (
        f'<figure><img src="{escape(block.src)}" alt="{escape(block.caption)}">{caption}</figure>'
    )


def _block_html(block) -> str:
    if isinstance(block, Heading):
        anchor = f' id="{escape(block.anchor)}"' if block.anchor else ""
        return f"<h{block.level}{anchor}>{escape(block.text)}</h{block.level}>"
    if isinstance(block, Text):
        css = f' class="{escape(block.css)}"' if block.css else ""
        return f"<p{css}>{escape(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Link):
        return (
            f'<p>{escape(block.before)}<a href="{escape(block.href)}">{escape(block.label)}</a></p>'
        )
    if isinstance(block, Table):
        return _table_html(block)
    if isinstance(block, Figure):
        return _figure_html(block)
    if isinstance(block, Gallery):
        title = f"<h4>{escape(block.title)}</h4>" if block.title else ""
        return title + '<div class="gallery">' + "".join(map(_figure_html, block.items)) + "</div>"
    if isinstance(block, Details):
        flag = " open" if block.open else ""
        inner = "".join(_block_html(b) for b in block.blocks)
        return f"<details{flag}><summary>{escape(block.summary)}</summary>{inner}</details>"
    raise TypeError(f"not a page block: {block!r}")


def render_html(page: Page) -> str:
    """The page as one self-contained HTML file (figures by relative path)."""
    meta = "".join(f"<li>{escape(line)}</li>" for line in page.meta)
    body = "\n".join(_block_html(b) for b in page.blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(page.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f'<h1>{escape(page.title)}</h1>\n<ul class="meta">{meta}</ul>\n{body}\n</body>\n</html>\n'
    )


def write_page(page: Page, stem) -> dict[str, object]:
    """Write ``stem.md`` and ``stem.html``; return both paths."""
    from pathlib import Path

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, html = stem.with_suffix(".md"), stem.with_suffix(".html")
    md.write_text(render_markdown(page))
    html.write_text(render_html(page))
    return {"md": md, "html": html}


def blocks_markdown(blocks: Sequence) -> str:
    """Blocks as Markdown, without a page around them."""
    return "\n".join(_block_md(b) for b in blocks)
