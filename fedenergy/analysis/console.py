"""The terminal view of a run: its live round lines, its summary and a federated/centralized
comparison (rich tables)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from fedenergy.server.rounds import RoundOutcome


def print_summary(console: Console, s: dict) -> None:
    """The run summary as tables: totals by domain and phase, per device class, per round; what
    was unmetered (the totals are then labelled metered) and why a failed run failed."""
    t = Table(title=f"Energy of run {s['run_id']} ({s['status']})")
    for col in ("", "joules", "share"):
        t.add_column(col, justify="right" if col else "left")
    total = s["total_j"] or 1.0
    unmetered = s.get("unmetered") or {}
    label = "metered total" if unmetered.get("calls") else "total"
    t.add_row(label, f"{s['total_j']:.4g}", "100 %")
    compute = "compute (metered)" if unmetered.get("calls") else "compute"
    t.add_row(compute, f"{s['compute_j']:.4g}", f"{100 * s['compute_j'] / total:.1f} %")
    t.add_row("network", f"{s['network_j']:.4g}", f"{100 * s['network_j'] / total:.1f} %")
    if s.get("wasted_j"):
        share = f"{100 * s['wasted_j'] / total:.1f} %"
        t.add_row("  wasted (failed calls)", f"{s['wasted_j']:.4g}", share)
    for dom, j in sorted(s["by_domain"].items()):
        t.add_row(f"  by domain: {dom}", f"{j:.4g}", f"{100 * j / total:.1f} %")
    for phase, j in sorted(s["by_phase"].items()):
        t.add_row(f"  by phase: {phase}", f"{j:.4g}", f"{100 * j / total:.1f} %")
    console.print(t)
    d = Table(title="Per device class (device/link)")
    for col in ("class", "compute J", "network J", "total J"):
        d.add_column(col, justify="left" if col == "class" else "right")
    for k, v in s["per_device_class"].items():
        d.add_row(k, f"{v['compute_j']:.4g}", f"{v['network_j']:.4g}", f"{v['total_j']:.4g}")
    console.print(d)
    r = Table(title="Per round")
    for col in ("round", "accuracy", "joules", "trained", "failed"):
        r.add_column(col, justify="right")
    for row in s["per_round"]:
        acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
        r.add_row(
            str(row["round"]),
            acc,
            f"{row['joules']:.4g}",
            str(row["succeeded"]),
            str(row["failed"]),
        )
    console.print(r)
    prov = ", ".join(
        f"{k} {v:.4g} J" for k, v in s["by_provenance"].items() if isinstance(v, (int, float))
    )
    console.print(f"provenance: {prov}")
    if s.get("experiment"):  # the host's own energy over a simulation, beside the modeled one
        from fedenergy.sim.experiment_energy import describe

        console.print(describe(s["experiment"]), soft_wrap=True)
    alt = s.get("infra_other")
    if alt:
        console.print(
            f"infrastructure model {alt['used']}; under the {alt['model']} model: total "
            f"{alt['total_j']:.4g} J (infrastructure {alt['infrastructure_j']:.4g} J)",
            soft_wrap=True,
        )
    if unmetered.get("calls"):
        console.print(
            f"compute unmetered for {unmetered['calls']} calls of {unmetered['nodes']} nodes "
            "(replies without an energy report: not counted in the totals, which are metered)",
            soft_wrap=True,
        )
    if s.get("rejections") or s.get("flags"):
        console.print(
            f"validation: {s.get('rejections', 0)} replies rejected, {s.get('flags', 0)} accepted "
            "reports flagged as outliers (ledger tables rejections, flags)",
            soft_wrap=True,
        )
    if s.get("resumes"):
        rounds = ", ".join(str(x["from_round"]) for x in s["resumes"])
        console.print(f"resumed after round(s): {rounds}")
    if s.get("reason"):
        console.print(f"run {s['status']}: {escape(s['reason'])}", soft_wrap=True)


def print_comparison(console: Console, comp: dict) -> None:
    """Federated against centralized, side by side, with the ratio and the notes."""
    from fedenergy.analysis.compare import side_table

    t = Table(
        title=f"Federated vs centralized to accuracy {comp['target_accuracy']:.4f} "
        f"({comp['target_source']})"
    )
    for col in ("", "federated", "centralized"):
        t.add_column(col, justify="right" if col else "left")
    for row in side_table(comp):
        t.add_row(*row)
    console.print(t)
    r, cen = comp["ratio"], comp["centralized"]
    fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    console.print(
        f"federated / centralized: energy x{fmt(r['energy'])}, CO2e x{fmt(r['co2e'])} "
        f"(centralized on {cen['device']}, PUE {cen['pue']:g}, {cen['country']})"
    )
    if r.get("co2e_other_infra") is not None:  # comparisons written before it lack it
        console.print(
            f"  with infrastructure under the {comp['federated']['infra_model_other']} model: "
            f"energy x{fmt(r['energy_other_infra'])}, CO2e x{fmt(r['co2e_other_infra'])}"
        )
    m = cen.get("measured_host", {})
    if "machine_j" in m:
        console.print(
            f"centralized training on this host: {m['machine_j']:.4g} J, {m['provenance']} "
            "(information only, not added)"
        )
    for n in comp.get("notes", []):
        console.print(f"note: {n}", soft_wrap=True)


def round_printer(
    console: Console, rounds: int | None, queried: bool = False
) -> Callable[[RoundOutcome], None]:
    """The live line of each committed round of a run of ``rounds`` rounds (None: unknown);
    round 0 is labelled the profile query when the run ``queried`` its nodes up front."""
    start, cumulative = time.monotonic(), [0.0]

    def progress(o: RoundOutcome) -> None:
        cumulative[0] += o.joules
        acc = "-" if o.accuracy is None else f"{o.accuracy:.4f}"
        of = "" if rounds is None else f"/{rounds}"
        label = f"round {o.server_round}{of}" if o.server_round else "round 0"
        if o.server_round == 0 and queried:
            label = "profile query"
        console.print(
            f"{label:>13}: acc {acc}  {o.joules:8.4g} J  total {cumulative[0]:8.4g} J  "
            f"ok {o.succeeded}/{o.selected}  [{time.monotonic() - start:4.0f} s]",
            soft_wrap=True,
        )

    return progress
