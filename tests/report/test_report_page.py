"""One page model, two renderings: report.md and report.html hold the same sections, tables,
figures and links, cell for cell; numbers carry 3 significant digits."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from medsweep.report import Report, build_report
from medsweep.report.page import (
    Bullets,
    Details,
    Figure,
    Gallery,
    Heading,
    Link,
    Page,
    Table,
    Text,
    format_value,
    render_html,
    render_markdown,
)

# the fold scores the report fixture writes (tests/report/conftest.py), restated
FOCAL_VAL_AUROC = [0.92, 0.92, 0.95, 0.93, 0.98]
FOCAL_VAL_ACC = [0.85, 0.88, 0.88, 0.91, 0.93]
CE_VAL_AUROC = [0.90, 0.91, 0.92, 0.93, 0.94]


def _clean(text: str) -> str:
    return " ".join(text.split())


class _HtmlOutline(HTMLParser):
    """Headings, tables (header and body cells), image sources and link targets of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.headings: list[tuple[int, str]] = []
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self._heading: int | None = None
        self._cell: list[str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if re.fullmatch(r"h[1-6]", tag):
            self._heading, self._text = int(tag[1]), []
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(found["src"] or "")
        elif tag == "a":
            self.links.append(found["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if self._heading is not None and tag == f"h{self._heading}":
            self.headings.append((self._heading, _clean("".join(self._text))))
            self._heading = None
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(_clean("".join(self._cell)))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def html_outline(text: str) -> dict:
    parser = _HtmlOutline()
    parser.feed(text)
    parser.close()
    return {
        "headings": parser.headings,
        "tables": parser.tables,
        "images": parser.images,
        "links": parser.links,
    }


def _md_cells(line: str) -> list[str]:
    """Split a Markdown table row on its unescaped pipes; undo the escapes."""
    cells, current, chars = [], [], iter(line.strip()[1:-1] if line.strip() != "|" else "")
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == "|":
            cells.append(_clean("".join(current)))
            current = []
        else:
            current.append(char)
    cells.append(_clean("".join(current)))
    return cells


def markdown_outline(text: str) -> dict:
    headings, tables, table = [], [], None
    for line in text.splitlines():
        if line.startswith("|"):
            if table is None:
                table = []
                tables.append(table)
            if not re.fullmatch(r"\|( --- \|)+", line):
                table.append(_md_cells(line))
            continue
        table = None
        match = re.match(r"(#{1,6}) (.*)", line)
        if match:
            headings.append((len(match[1]), _clean(match[2])))
    return {
        "headings": headings,
        "tables": tables,
        "images": re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text),
        "links": re.findall(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)", text),
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, sweep_factory: Callable[..., Path]) -> Report:
    """The report of the three-configuration sweep, figures included."""
    root = sweep_factory(tmp_path_factory.mktemp("page") / "multirun")
    return build_report(root, wandb=False)


def test_markdown_and_html_hold_the_same_report(built: Report) -> None:
    md = markdown_outline((built.out_dir / "report.md").read_text())
    html = html_outline((built.out_dir / "report.html").read_text())
    assert md["headings"] == html["headings"]
    assert [text for _, text in md["headings"]] == [
        "Sweep report: multirun",
        "Summary",
        "Comparison with the baseline",
        "Missing folds",
        "Failed runs",
        "Configurations",
        "loss=focal",
        "loss=ce",
        "loss=bce",
    ]
    # summary, one comparison per metric, failed runs, one fold table per configuration
    assert len(md["tables"]) == len(html["tables"]) == 1 + len(built.metrics) + 1 + 3
    for i, (mine, theirs) in enumerate(zip(md["tables"], html["tables"], strict=True)):
        assert mine == theirs, f"table {i}"
    assert md["images"] == html["images"]
    assert len(md["images"]) == 15  # the fold-score plot and 14 runs' training curves
    assert all((built.out_dir / src).is_file() for src in md["images"])
    assert md["links"] == html["links"]
    lead = "Best on val/auroc: loss=focal — 0.940 ± 0.025; Δ vs baseline +0.020 [-0.009, +0.049]"
    assert f"**{lead}**" in (built.out_dir / "report.md").read_text()
    assert f'<p class="lead">{lead}</p>' in (built.out_dir / "report.html").read_text()
    meta = json.loads((built.out_dir / "report.json").read_text())
    assert meta["files"]["md"] == "report.md" and meta["files"]["html"] == "report.html"


def test_report_tables_show_the_fold_statistics(built: Report) -> None:
    for name in ("report.md", "report.html"):
        text = (built.out_dir / name).read_text()
        tables = (markdown_outline if name.endswith(".md") else html_outline)(text)["tables"]
        summary = tables[0]
        header, rows = summary[0], {row[0]: row for row in summary[1:]}
        assert [row[0] for row in summary[1:]] == ["loss=focal", "loss=ce", "loss=bce"]
        auroc = rows["loss=focal"][header.index("val/auroc")]
        mean, std = statistics.mean(FOCAL_VAL_AUROC), statistics.stdev(FOCAL_VAL_AUROC)
        assert auroc == f"{mean:.3f} ± {std:.3f}", name
        # the chosen metric's comparison: focal − ce, paired by fold
        stats = tables[1]
        row = dict(zip(stats[0], stats[1], strict=True))
        diff = statistics.mean(FOCAL_VAL_AUROC) - statistics.mean(CE_VAL_AUROC)
        assert (row["metric"], row["configuration"]) == ("val/auroc", "loss=focal")
        assert row["Δ mean"] == f"{diff:+.3f}"
        # a configuration's fold table: plain floats with 3 significant digits
        focal = next(t for t in tables if t[0][0] == "fold" and t[1][1] == "0.850")
        std_row = next(r for r in focal if r[0] == "Std")
        assert std_row[focal[0].index("val/acc")] == f"{statistics.stdev(FOCAL_VAL_ACC):.3g}"
        assert std_row[focal[0].index("val/acc")] == "0.0308"
        failed = next(t for t in tables if t[0][:2] == ["run", "configuration"])
        assert failed[1][-1] == "ValueError: loss is nan at epoch 3"


def test_every_block_renders_the_same_in_markdown_and_html() -> None:
    frame = pd.DataFrame(
        {
            "name": ["a|b", "x<y & z", "back\\slash", None],
            "score": [0.91234, 12.3456, float("nan"), 1e-6],
            "n": [1, 20, 300, 4000],
        }
    )
    page = Page(
        "Everything",
        ["meta line"],
        [
            Text("The headline", "lead"),
            Heading("Tables", anchor="tables"),
            Table(frame, caption="A caption"),
            Table(frame.set_index("name"), index=True, digits=2),
            Heading("Figures", 3),
            Figure("figures/a.png", "first"),
            Gallery([Figure("g/1.png", "one"), Figure("g/2.png", "two")], title="Thumbnails"),
            Details("Folded", [Heading("Inside", 4), Table(frame[["n"]]), Figure("f/b.png")]),
            Bullets(["one", "two"]),
            Link("other/page.html", "another page", "See: "),
        ],
    )
    md, html = markdown_outline(render_markdown(page)), html_outline(render_html(page))
    assert md == html
    assert md["headings"] == [
        (1, "Everything"),
        (2, "Tables"),
        (3, "Figures"),
        (4, "Thumbnails"),
        (4, "Inside"),
    ]
    assert md["tables"][0] == [
        ["name", "score", "n"],
        ["a|b", "0.912", "1"],
        ["x<y & z", "12.3", "20"],
        ["back\\slash", "—", "300"],
        ["—", "1.00e-06", "4000"],
    ]
    assert md["tables"][1][1] == ["a|b", "0.91", "1"]  # two significant digits asked for
    assert md["images"] == ["figures/a.png", "g/1.png", "g/2.png", "f/b.png"]
    assert md["links"] == ["other/page.html"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.91234, "0.912"),
        (0.0123456, "0.0123"),
        (12.345, "12.3"),
        (-0.5, "-0.500"),
        (2.5e-7, "2.50e-07"),
        (3.2e8, "3.20e+08"),
        (0.0, "0"),
        (7, "7"),
        (True, "yes"),
        (math.nan, "—"),
        (None, "—"),
        (math.inf, "∞"),
        ("text", "text"),
    ],
)
def test_numbers_carry_three_significant_digits(value: object, shown: str) -> None:
    assert format_value(value) == shown
