"""Charts as inline SVG drawn by pygal on the server: no chart code in the browser, and no script tag
(pygal's tooltips load from a CDN, so ``js`` is empty). Each chart has a title and a text description
beside it in the page, for screen readers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pygal
from markupsafe import Markup
from pygal.style import Style

STYLE = Style(background="transparent", plot_background="#ffffff", foreground="#1f2933",
              foreground_strong="#111827", foreground_subtle="#52606d", colors=("#1d4ed8", "#b45309", "#047857"),
              font_family="system-ui, sans-serif")
_COMMON: dict[str, Any] = {"style": STYLE, "js": [], "disable_xml_declaration": True, "show_legend": False,
                           "explicit_size": False}


def _svg(chart: pygal.graph.graph.Graph) -> Markup:
    return Markup(chart.render(is_unicode=True))


def runs_per_hour(hours: Sequence[tuple[str, int]]) -> Markup:
    """A bar chart of runs started per hour (``("YYYY-MM-DDTHH", n)``, oldest first)."""
    chart = pygal.Bar(title="Runs started per hour (UTC)", height=220, width=720, x_label_rotation=0,
                      show_minor_x_labels=False, **_COMMON)
    chart.x_labels = [h[11:13] for h, _ in hours]
    chart.x_labels_major = [h[11:13] for h, _ in hours][::6]
    chart.add("runs", [n for _, n in hours])
    return _svg(chart)


def trend(name: str, values: Sequence[float]) -> Markup:
    """A line of a KPI's readings, oldest first (empty below two readings)."""
    if len(values) < 2:
        return Markup("")
    chart = pygal.Line(title=name, height=160, width=360, show_x_labels=False, dots_size=2, **_COMMON)
    chart.add(name, list(values))
    return _svg(chart)


def spend_per_agent(rows: Sequence[dict[str, Any]], *, top: int = 20) -> Markup:
    """A horizontal bar chart of the ``top`` agents by known spend (USD)."""
    priced = sorted((r for r in rows if r.get("priced_cost_usd")), key=lambda r: -r["priced_cost_usd"])[:top]
    if not priced:
        return Markup("")
    chart = pygal.HorizontalBar(title=f"Spend per agent, top {len(priced)} (USD)", height=40 + 24 * len(priced),
                                width=720, **_COMMON)
    chart.x_labels = [r["name"] for r in priced]
    chart.add("USD", [round(r["priced_cost_usd"], 4) for r in priced])
    return _svg(chart)


def spend_per_day(days: Sequence[dict[str, Any]]) -> Markup:
    """A bar chart of the known spend (USD) of each day's runs."""
    if not days:
        return Markup("")
    chart = pygal.Bar(title="Spend per day (USD, priced runs)", height=220, width=720, x_label_rotation=30,
                      **_COMMON)
    chart.x_labels = [d["day"][5:] for d in days]
    chart.add("USD", [round(d["cost_usd"], 4) for d in days])
    return _svg(chart)
