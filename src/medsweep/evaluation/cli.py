"""Terminal output of evaluations, shared by evaluate.py and ``medsweep evaluate``."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_evaluations(evaluations: list, console: Console | None = None) -> None:
    """One line per evaluation: AUROC and accuracy with CIs, and where its page is."""
    console = console or Console()
    table = Table(title="Evaluations", title_justify="left")
    for column in ("evaluation", "kind", "AUROC [95% CI]", "acc [95% CI]", "page"):
        table.add_column(column)
    for ev in evaluations:
        m = ev.metrics.set_index("metric")

        def cell(name: str, m=m) -> str:
            if name not in m.index:
                return "—"
            r = m.loc[name]
            return f"{r['estimate']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"

        table.add_row(
            ev.data.name or "default",
            ev.kind,
            cell("auroc"),
            cell("acc"),
            str(ev.files["index_html"]),
        )
    console.print(table)
