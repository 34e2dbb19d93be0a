"""Run summaries computed from a ledger (so `fedenergy report` can rebuild them later).

Every joule figure is a metered total (measured + modeled). Energy a node could not count is
``unmetered`` (NULL joules in the ledger): it is never added as 0 J; the summary counts it
instead (``unmetered``: calls and nodes; ``by_provenance["unmetered"]``: calls, not joules).
"""

from __future__ import annotations

from collections import defaultdict

from fedenergy.analysis.infra_alt import other_infra
from fedenergy.ledger import NETWORK_PHASES, Ledger
from fedenergy.report import UNMETERED


def summarize(ledger: Ledger, run_id: str) -> dict:
    """Totals (metered), per-phase, per-domain, per-device-class and per-round figures of one
    run, its status (with the reason of a failed run) and what was unmetered."""
    totals = ledger.totals(run_id)
    rounds = ledger.rounds(run_id)
    rows = ledger.energy_rows(run_id)
    by_device: dict[str, dict[str, float]] = defaultdict(
        lambda: {"compute_j": 0.0, "network_j": 0.0}
    )
    per_node: dict[str, float] = defaultdict(float)
    for r in rows:
        key = f"{r['device'] or 'unknown'}/{r['link'] or 'unknown'}"
        j = r["joules"] or 0.0  # None: unmetered, counted below, not added
        by_device[key]["network_j" if r["phase"] in NETWORK_PHASES else "compute_j"] += j
        per_node[r["node_id"]] += j
    by_domain: dict[str, float] = defaultdict(float)
    provenance: dict = defaultdict(float)
    unmetered: set[tuple] = set()  # (round, node, call) with an unmetered component
    for c in ledger.components(run_id):
        if c["provenance"] == UNMETERED or c["joules"] is None:
            unmetered.add((c["round"], c["node_id"], c["call"]))
            continue
        by_domain[c["domain"]] += c["joules"]
        provenance[c["provenance"]] += c["joules"]
    if unmetered:
        provenance[UNMETERED] = {"calls": len(unmetered)}
    fed_rounds = [r for r in rounds if r["round"] > 0]
    final_acc = next(
        (r["accuracy"] for r in reversed(fed_rounds) if r["accuracy"] is not None), None
    )
    run = next((r for r in ledger.runs() if r["run_id"] == run_id), {})
    carbon = _carbon(ledger, run_id)
    return {
        "run_id": run_id,
        "status": run.get("status"),
        "reason": run.get("reason"),  # why a failed run failed (None otherwise)
        "total_j": totals["total_j"],  # metered: unmetered energy is counted in "unmetered"
        "compute_j": totals["compute_j"],
        "network_j": totals["network_j"],
        "by_phase": totals["by_phase"],
        "by_domain": dict(by_domain),
        "by_provenance": dict(provenance),
        # the run's total with its infrastructure under the model it did not use
        "infra_other": other_infra(ledger, run_id),
        "unmetered": {
            "calls": len(unmetered),
            "nodes": len({n for _, n, _ in unmetered}),
            "train_calls": sum(1 for *_, call in unmetered if call == "train"),
        },
        "kwh": carbon.get("kwh"),
        "co2e_kg": carbon.get("co2e_kg"),
        "carbon": carbon,
        "per_device_class": {
            k: {**v, "total_j": v["compute_j"] + v["network_j"]}
            for k, v in sorted(by_device.items())
        },
        "rounds": len(fed_rounds),
        "final_accuracy": final_acc,
        "nodes": len({r["node_id"] for r in rows}),
        "bytes": sum(r["bytes"] for r in rows),
        # spent by calls whose result was not used (errors, timeouts, rejected reports)
        "wasted_j": sum(r["joules"] or 0.0 for r in rows if r["status"] != "ok"),
        # replies refused by validation (docs/robustness.md), and outliers of accepted reports
        "rejections": len(rejections := ledger.rejections(run_id)),
        "rejection_reasons": [
            {k: x[k] for k in ("round", "node_id", "call", "reason")} for x in rejections[:20]
        ],
        "flags": len(flags := ledger.flags(run_id)),
        "flag_examples": [
            {k: x[k] for k in ("round", "node_id", "call", "flag")} for x in flags[:20]
        ],
        "resumes": [
            {"resumed_at": x["resumed_at"], "from_round": x["from_round"]}
            for x in ledger.resumes(run_id)
        ],
        "per_round": [
            {
                "round": r["round"],
                "accuracy": r["accuracy"],
                "loss": r["loss"],
                "joules": r["joules"],
                "selected": r["selected"],
                "succeeded": r["succeeded"],
                "failed": r["failed"],
            }
            for r in rounds
        ],
    }


def _carbon(ledger: Ledger, run_id: str) -> dict:
    """kWh (PUE included) and kgCO2e of the run (fedenergy.analysis.carbon); {} if unavailable."""
    from fedenergy.analysis.carbon import ledger_carbon

    try:
        c = ledger_carbon(ledger, run_id)
    except (StopIteration, KeyError, ValueError):
        return {}
    c.pop("per_round_facility_j", None)
    return c
