"""Report files of a run directory, rebuilt from its ledger (and comparison.json when present).

Writes into the run directory:
  report.html        self-contained: the regime, accuracy against energy (one curve per run,
                     inline SVG), the per-device breakdown by phase, the tables, the energy per
                     phase plot embedded as a data: URI (fedenergy.analysis.html_sections)
  report.md          the same tables in Markdown, linking the PNGs
  *.png              fedenergy.analysis.plots
  ledger_energy.csv, ledger_components.csv, ledger_rounds.csv, ledger.json   ledger export
"""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Sequence
from pathlib import Path

from fedenergy.analysis import html_sections
from fedenergy.analysis.compare import COMPARISON_FILE, side_table
from fedenergy.analysis.html_sections import fmt_cell as _fmt
from fedenergy.analysis.plots import write_plots
from fedenergy.analysis.runs import RunRef, RunView, load_view
from fedenergy.ledger import Ledger

EXPORT_TABLES = ("energy", "components", "rounds")


def export_ledger(ledger: Ledger, run_id: str, out_dir: Path) -> list[Path]:
    """CSV per table (energy rows with node device/link, components, rounds) and one JSON."""
    data = {
        "energy": ledger.energy_rows(run_id),
        "components": ledger.components(run_id),
        "rounds": ledger.rounds(run_id),
    }
    paths = []
    for name in EXPORT_TABLES:
        rows = data[name]
        path = out_dir / f"ledger_{name}.csv"
        with path.open("w", newline="") as fh:
            cols = list(rows[0]) if rows else []
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
        paths.append(path)
    run = next(r for r in ledger.runs() if r["run_id"] == run_id)
    doc = {
        "run": {
            **{k: v for k, v in run.items() if not k.endswith("_json")},
            "config": json.loads(run["config_json"]),
            "fleet": json.loads(run["fleet_json"]),
            "versions": json.loads(run["versions_json"]),
        },
        **data,
    }
    path = out_dir / "ledger.json"
    path.write_text(json.dumps(doc, indent=1))
    return [*paths, path]


def _tables(summary: dict, comparison: dict | None) -> list[tuple[str, list[str], list[list]]]:
    """(title, header, rows) of every table of the report."""
    out = []
    if comparison is not None:
        out.append(
            (
                f"Federated versus centralized to accuracy {comparison['target_accuracy']:.4f} "
                f"({comparison['target_source']})",
                ["", "federated", "centralized"],
                [list(r) for r in side_table(comparison)],
            )
        )
        r = comparison["ratio"]
        out.append(
            (
                "Ratio federated / centralized",
                ["energy", "CO2e"],
                [[_fmt(r["energy"]), _fmt(r["co2e"])]],
            )
        )
    s = summary
    out.append(
        (
            f"Energy of run {s['run_id']} ({s['status']}), whole run",
            ["", "joules", "kWh", "kgCO2e"],
            [
                ["total", _fmt(s["total_j"]), _fmt(s.get("kwh")), _fmt(s.get("co2e_kg"))],
                ["compute", _fmt(s["compute_j"]), "", ""],
                ["network", _fmt(s["network_j"]), "", ""],
                *[[f"domain: {k}", _fmt(v), "", ""] for k, v in sorted(s["by_domain"].items())],
                *[[f"phase: {k}", _fmt(v), "", ""] for k, v in sorted(s["by_phase"].items())],
            ],
        )
    )
    classes = comparison["federated"]["per_device_class"] if comparison else s["per_device_class"]
    out.append(
        (
            "Per device class (device/link)" + (", federated to target" if comparison else ""),
            ["class", "compute J", "network J", "total J"],
            [
                [k, _fmt(v["compute_j"]), _fmt(v["network_j"]), _fmt(v["total_j"])]
                for k, v in classes.items()
            ],
        )
    )
    out.append(
        (
            "Per round (round 0 = profile query)",
            ["round", "accuracy", "joules", "trained", "failed"],
            [
                [r["round"], _fmt(r["accuracy"]), _fmt(r["joules"]), r["succeeded"], r["failed"]]
                for r in s["per_round"]
            ],
        )
    )
    if comparison is not None:
        cen = comparison["centralized"]
        out.append(
            (
                f"Centralized per epoch ({cen['device']}, PUE {cen['pue']}, {cen['country']})",
                ["epoch", "accuracy", "cumulative J"],
                [
                    [e["epoch"], _fmt(e["accuracy"]), _fmt(e["cumulative_j"])]
                    for e in cen["per_epoch"]
                ],
            )
        )
    return out


def _notes(comparison: dict | None, summary: dict) -> list[str]:
    notes = []
    if comparison is not None:
        notes += comparison.get("notes", [])
        m = comparison["centralized"].get("measured_host", {})
        if "machine_j" in m:
            notes.append(
                f"centralized training on this host: {m['machine_j']:.4g} J over "
                f"{m['seconds']:.3g} s, {m['provenance']} — {m['note']}"
            )
        else:
            notes.append(f"centralized training on this host: not measured ({m.get('reason')})")
    c = summary.get("carbon") or {}
    if c.get("world_fallback_for"):
        notes.append(
            "run: world-average grid intensity used for " + ", ".join(c["world_fallback_for"])
        )
    notes.append(
        "CO2e: kWh x grid intensity of the node's country (data/grid_intensity.toml), x PUE for "
        "datacenter devices only; network infrastructure at the WORLD intensity."
    )
    return notes


# the PNG the HTML embeds; the others are drawn there as inline SVG (all are files for report.md)
EMBEDDED_PNGS = ("energy_per_phase",)


def _html(views: list[RunView], comparison: dict | None, pngs: list[Path]) -> str:
    summary = views[0].summary
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>fedenergy report {html.escape(summary['run_id'])}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;"
        "padding:.2em .6em;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%}" + html_sections.STYLE + "</style></head><body>",
        f"<h1>fedenergy report: run {html.escape(summary['run_id'])}</h1>",
        html_sections.regime_section(views),
        html_sections.curves_section(views, comparison),
        html_sections.runs_section(views),
        html_sections.devices_section(views),
    ]
    for title, header, rows in _tables(summary, comparison):
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>")
        parts += [f"<th>{html.escape(str(h))}</th>" for h in header]
        parts.append("</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row))
            parts.append("</tr>")
        parts.append("</table>")
    parts.append("<h2>Plots</h2>")
    for p in (p for p in pngs if p.stem in EMBEDDED_PNGS):
        b64 = base64.b64encode(p.read_bytes()).decode("ascii")
        parts.append(f"<p><img alt='{html.escape(p.stem)}' src='data:image/png;base64,{b64}'></p>")
    parts.append("<h2>Notes</h2><ul>")
    parts += [f"<li>{html.escape(n)}</li>" for n in _notes(comparison, summary)]
    parts.append("</ul></body></html>")
    return "\n".join(parts)


def _markdown(views: list[RunView], comparison: dict | None, pngs: list[Path]) -> str:
    main = views[0]
    summary = main.summary
    lines = [f"# fedenergy report: run {summary['run_id']}", "", "## Regime", ""]
    lines += ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in main.regime.rows()], ""]
    lines += ["## Per device (device type × link), by phase, J", ""]
    lines.append("| device / link | nodes | " + " | ".join(main.phases) + " | total |")
    lines.append("|" + "---|" * (len(main.phases) + 3))
    lines += [
        f"| {d.label} | {len(d.nodes)} | "
        + " | ".join(_fmt(d.by_phase.get(p, 0.0)) for p in main.phases)
        + f" | {_fmt(d.total_j)} |"
        for d in main.classes
    ]
    lines.append("")
    for title, header, rows in _tables(summary, comparison):
        lines += [f"## {title}", "", "| " + " | ".join(map(str, header)) + " |"]
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
        lines.append("")
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs] + ["", "## Notes", ""]
    lines += [f"- {n}" for n in _notes(comparison, summary)]
    return "\n".join(lines) + "\n"


def write_report(
    ledger_path: str | Path,
    out_dir: str | Path | None = None,
    run_id: str | None = None,
    others: Sequence[RunRef] = (),
    label: str | None = None,
) -> dict[str, Path | list[Path]]:
    """Rebuild plots, exports and reports of a run; returns the written paths by kind.
    ``others``: more runs whose accuracy-against-energy curves, totals and per-device tables
    the HTML report shows beside this one's (``label`` names this run there)."""
    ledger_path = Path(ledger_path)
    out = Path(out_dir) if out_dir is not None else ledger_path.parent
    out.mkdir(parents=True, exist_ok=True)
    main = load_view(RunRef(label or ledger_path.parent.name or "run", ledger_path, run_id))
    summary, rid = main.summary, main.summary["run_id"]
    views = [main, *(load_view(r) for r in others)]
    with Ledger(ledger_path) as ledger:
        exports = export_ledger(ledger, rid, out)
    comparison = None
    cpath = out / COMPARISON_FILE
    if cpath.is_file():
        comparison = json.loads(cpath.read_text())
        if comparison.get("federated", {}).get("run_id") != rid:
            comparison = None  # a comparison of another run: not this report's
    pngs = write_plots(summary, comparison, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    html_path = out / "report.html"
    html_path.write_text(_html(views, comparison, pngs))
    md_path = out / "report.md"
    md_path.write_text(_markdown(views, comparison, pngs))
    return {"html": html_path, "markdown": md_path, "plots": pngs, "exports": exports}
