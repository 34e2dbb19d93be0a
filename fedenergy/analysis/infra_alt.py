"""A run's energy under the infrastructure model it did not use (every headline result is given
under both, docs/constants.md §2b): the infrastructure recomputed from the ledger's bytes and
call times (:func:`fedenergy.physics.infra.calls_infra_j`), the rest of the ledger as it is."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from fedenergy.ledger import Ledger
from fedenergy.physics.infra import (
    DEFAULT_MODEL,
    INFRA_KWH_PER_GB,
    AccessPower,
    calls_infra_j,
    other_model,
)
from fedenergy.physics.network import get_link, link_table, transfer_time_s

INFRA_DOMAIN = "infrastructure"


def run_infra(ledger: Ledger, run_id: str) -> tuple[str, float]:
    """The infrastructure model and per-byte intensity a run recorded (older runs: per-byte)."""
    run = next((r for r in ledger.runs() if r["run_id"] == run_id), None)
    cfg = json.loads(run["config_json"]) if run and run.get("config_json") else {}
    kwh = cfg.get("infra_kwh_per_gb", INFRA_KWH_PER_GB)
    return str(cfg.get("infra_model", DEFAULT_MODEL)), float(kwh)


def other_infra(ledger: Ledger, run_id: str, upto: int | None = None) -> dict:
    """``model`` (the one the run did not use), ``infrastructure_j`` under it, and the run's
    metered ``total_j`` with its infrastructure replaced by that (rounds up to ``upto``; None:
    all); ``calls_skipped``: calls on a link this process does not know (their recorded
    infrastructure is kept)."""
    used, kwh = run_infra(ledger, run_id)
    model = other_model(used)
    calls: dict[tuple, dict] = defaultdict(lambda: {"down": 0, "up": 0, "s": 0.0})
    for r in ledger.energy_rows(run_id):
        if upto is not None and r["round"] > upto:
            continue
        c = calls[(r["round"], r["node_id"], r["call"])]
        c["link"] = r["link"]
        if r["phase"] == "download":
            c["down"] += r["bytes"]
        elif r["phase"] == "upload":
            c["up"] += r["bytes"]
        elif r["phase"] in (r["call"], "startup"):  # the gap the download's connection holds
            c["s"] += r["seconds"]
    recorded: dict[tuple, float] = defaultdict(float)
    total = 0.0
    for comp in ledger.components(run_id):
        if comp["joules"] is None or (upto is not None and comp["round"] > upto):
            continue
        total += comp["joules"]
        if comp["domain"] == INFRA_DOMAIN:
            recorded[(comp["round"], comp["node_id"], comp["call"])] += comp["joules"]
    known, links, skipped = [], [], 0
    for key, c in calls.items():
        try:
            links.append(get_link(c.get("link") or ""))
            known.append(key)
        except ValueError:
            skipped += 1
    if known:
        table = link_table(links)
        down = np.array([calls[k]["down"] for k in known], dtype=np.float64)
        up = np.array([calls[k]["up"] for k in known], dtype=np.float64)
        secs = np.array([calls[k]["s"] for k in known], dtype=np.float64)
        down_s = np.where(down > 0, transfer_time_s(down, table.down_bps), 0.0)
        up_s = np.where(up > 0, transfer_time_s(up, table.up_bps), 0.0)
        terms = AccessPower(table.infra_w, table.infra_j_per_byte)
        new = calls_infra_j(model, kwh, terms, down, up, down_s, secs, up_s)
    else:
        new = 0.0
    old = sum(recorded[k] for k in known)
    return {
        "model": model,
        "used": used,
        "infrastructure_j": new + sum(recorded.values()) - old,
        "total_j": total - old + new,
        "calls_skipped": skipped,
    }
