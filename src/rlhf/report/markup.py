"""Small HTML pieces for the report: escaping, number formatting, tables, figures, notices.

Every function that puts text into the page escapes it; callers pass raw strings and values.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

from rlhf.report.load import is_number


def esc(text: Any) -> str:
    """HTML-escaped text (quotes too, so it is safe in attributes)."""
    return html.escape(str(text), quote=True)


def fmt(value: Any) -> str:
    """A value for a table cell: numbers to four significant digits, the rest as compact text."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if is_number(value) else "-"


def mean_stderr(stat: Any) -> str:
    """`mean ± stderr` of a `{mean, stderr, n}` record."""
    if not isinstance(stat, dict) or not is_number(stat.get("mean")):
        return "-"
    if is_number(stat.get("stderr")):
        return f"{fmt(stat['mean'])} ± {fmt(stat['stderr'])}"
    return fmt(stat["mean"])


@dataclass(frozen=True)
class Text:
    """A table cell shown as preformatted text: whitespace and line breaks kept (prompts, answers)."""

    value: Any


def table(headers: list[str], rows: list[list[Any]], css: str = "", widths: list[str] | None = None) -> str:
    """An HTML table; each cell is escaped, numbers right-aligned, `Text` cells preformatted.
    `widths`: CSS widths of the columns ("" for automatic), for tables with `table-layout: fixed`."""
    widths = widths or [""] * len(headers)
    head = "".join(
        f'<th style="width: {w}">{esc(h)}</th>' if w else f"<th>{esc(h)}</th>"
        for h, w in zip(headers, widths)
    )
    body = []
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, Text):
                text = cell.value if isinstance(cell.value, str) else fmt(cell.value)
                cells.append(f'<td class="text">{esc(text)}</td>')
            elif is_number(cell):
                cells.append(f'<td class="num">{esc(fmt(cell))}</td>')
            else:
                cells.append(f"<td>{esc(fmt(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    klass = f' class="{css}"' if css else ""
    return (
        f"<table{klass}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody></table>"
    )


def key_values(data: dict[str, Any]) -> str:
    """A two-column table of a dict's entries."""
    return table(["", "value"], [[key, value] for key, value in data.items()])


def figure(uri: str, alt: str, caption: str) -> str:
    return f'<figure><img src="{uri}" alt="{esc(alt)}"><figcaption>{caption}</figcaption></figure>'


def missing(text: str) -> str:
    return f'<p class="missing">{text}</p>'


def details(label: str, text: str) -> str:
    return f'<details><summary>{esc(label)}</summary><pre class="config">{esc(text)}</pre></details>'
