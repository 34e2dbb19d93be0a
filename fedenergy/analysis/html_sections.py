"""The HTML report's sections on its runs: the regime, accuracy against energy (one curve per
run), the runs side by side, and the per-device (device type x link) breakdown by phase."""

from __future__ import annotations

from html import escape

from fedenergy.analysis.regime import differing_settings
from fedenergy.analysis.runs import RunView
from fedenergy.analysis.svg import (
    Curve,
    accuracy_energy_svg,
    legend_html,
    stacked_bars_svg,
)

STYLE = (
    ".legend{list-style:none;padding:0;columns:2}.legend li{margin:.15em 0}"
    ".swatch{display:inline-block;width:1.6em;height:.7em;margin-right:.4em}"
    "#regime-table th,#regime-table td{text-align:left}svg{max-width:100%;height:auto}"
)


def fmt_cell(v) -> str:
    """A table cell: ``-`` for None, 4 significant digits for floats."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(table_id: str, header: list[str], rows: list[tuple[dict, list]]) -> str:
    """A table whose rows carry attributes (``class``, ``data-*``) beside their cells."""
    out = [f'<table id="{table_id}"><tr>' + "".join(f"<th>{escape(h)}</th>" for h in header)]
    out.append("</tr>")
    for attrs, cells in rows:
        a = "".join(f' {k}="{escape(str(v))}"' for k, v in attrs.items())
        out.append(f"<tr{a}>" + "".join(f"<td>{escape(fmt_cell(c))}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def regime_section(views: list[RunView]) -> str:
    """The regime of the report's first run, and what the other runs change."""
    main = views[0]
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in main.regime.rows()
    )
    out = [
        '<section id="regime"><h2>Regime</h2>',
        f'<table id="regime-table">{rows}</table>',
    ]
    if len(views) > 1:
        diff = differing_settings([v.regime for v in views])
        out.append(
            f"<p>The regime of run <b>{escape(main.label)}</b>; the report covers "
            f"{len(views)} runs, which differ in: {escape(', '.join(diff) or 'nothing recorded')}"
            ".</p>"
        )
    out.append("</section>")
    return "\n".join(out)


def curves_section(views: list[RunView], comparison: dict | None) -> str:
    """Accuracy against cumulative energy: one curve per run, and the centralized baseline
    with the target accuracy when the first run has a comparison."""
    curves = [v.curve() for v in views]
    target = None
    if comparison is not None:
        # the compared run as the comparison counts it (facility joules: PUE included for
        # datacenter devices), so both sides of it share one energy axis
        fed = comparison["federated"]["per_round"]
        curves[0] = Curve(
            views[0].label,
            tuple((r["cumulative_j"], r["accuracy"]) for r in fed if r["accuracy"] is not None),
        )
        cen = comparison["centralized"]
        curves.append(
            Curve(
                f"centralized on {cen['device']} (per epoch)",
                tuple((e["cumulative_j"], e["accuracy"]) for e in cen["per_epoch"]),
                marker="square",
            )
        )
        target = comparison["target_accuracy"]
    note = "one curve per run; a point per round, round 0 (the profile query) first"
    if target is not None:
        note += (
            f"; dashed line: target accuracy {target:.4f}; joules at the facility (PUE included "
            "for datacenter devices), as the comparison counts them"
        )
    return "\n".join(
        [
            '<section id="accuracy-energy"><h2>Accuracy against cumulative energy</h2>',
            f"<p>{escape(note)}.</p>",
            accuracy_energy_svg(curves, target),
            legend_html([c.label for c in curves]),
            "</section>",
        ]
    )


def runs_section(views: list[RunView]) -> str:
    """The runs side by side (only for a report of several runs)."""
    if len(views) < 2:
        return ""
    diff = differing_settings([v.regime for v in views])
    header = ["run", *diff, "total J", "compute J", "network J", "rounds", "final accuracy"]
    rows = [
        (
            {"class": "run-row", "data-run": v.label},
            [
                v.label,
                *[v.regime.config.get(k) for k in diff],
                v.summary["total_j"],
                v.summary["compute_j"],
                v.summary["network_j"],
                v.summary["rounds"],
                v.summary["final_accuracy"],
            ],
        )
        for v in views
    ]
    return '<section id="runs"><h2>Runs</h2>' + _table("runs-table", header, rows) + "</section>"


def _device_table(view: RunView, table_id: str) -> str:
    header = ["device / link", "nodes", *[f"{p} J" for p in view.phases], "total J", "unmetered"]
    rows = [
        (
            {"class": "device-row", "data-device": d.device, "data-link": d.link},
            [
                d.label,
                len(d.nodes),
                *[d.by_phase.get(p, 0.0) for p in view.phases],
                d.total_j,
                f"{d.unmetered_rows} rows" if d.unmetered_rows else "",
            ],
        )
        for d in view.classes
    ]
    return _table(table_id, header, rows)


def devices_section(views: list[RunView]) -> str:
    """Joules per device type and link, by phase: a chart and a table for the first run, the
    tables of the other runs folded below."""
    main = views[0]
    bars = [(d.label, dict(d.by_phase)) for d in main.classes]
    out = [
        '<section id="devices"><h2>Per device (device type × link), by phase</h2>',
        f"<p>Run <b>{escape(main.label)}</b>: all calls, failed ones included; energy a node "
        "could not count is listed as unmetered rows, never as 0 J.</p>",
        stacked_bars_svg(bars, main.phases),
        _device_table(main, "device-breakdown"),
    ]
    for i, v in enumerate(views[1:], start=1):
        out.append(
            f'<details class="run-devices" data-run="{escape(v.label)}">'
            f"<summary>{escape(v.label)}</summary>{_device_table(v, f'device-breakdown-{i}')}"
            "</details>"
        )
    out.append("</section>")
    return "\n".join(out)
