"""Federated versus centralized: energy and CO2e to the same accuracy (``fedenergy compare``).

The federated side is read from a ledger: cumulative joules of rounds 0 (the profile query)
through the first round whose server accuracy reaches the target. The centralized side is
fedenergy.analysis.centralized. Both are converted to kWh and kgCO2e with fedenergy.analysis.carbon.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from fedenergy.analysis.carbon import co2e_with_infra, ledger_carbon, run_catalog
from fedenergy.analysis.centralized import (
    DEFAULT_COUNTRY,
    DEFAULT_DATACENTER,
    DEFAULT_MAX_EPOCHS,
    run_centralized,
)
from fedenergy.analysis.infra_alt import other_infra
from fedenergy.ledger import NETWORK_PHASES, Ledger
from fedenergy.physics.catalog import Catalog
from fedenergy.plan import plan_run
from fedenergy.settings import Settings

COMPARISON_FILE = "comparison.json"


def target_round(rounds: list[dict], target: float) -> tuple[int, bool]:
    """First round whose server accuracy reaches ``target``; (last round, False) if none."""
    for r in rounds:
        if r["accuracy"] is not None and r["accuracy"] >= target:
            return r["round"], True
    return (rounds[-1]["round"] if rounds else 0), False


def _modeled_round_seconds(rows: list[dict], catalog: Catalog) -> dict[int, float]:
    """Per round, the slowest node's download + compute + upload time (links' nominal rates,
    the links of the run's ``catalog``)."""
    per: dict[tuple[int, str], float] = defaultdict(float)
    for r in rows:
        if r["phase"] in NETWORK_PHASES:
            try:
                link = catalog.link(r["link"])
            except (ValueError, TypeError):
                continue
            t = link.download_time_s if r["phase"] == "download" else link.upload_time_s
            per[(r["round"], r["node_id"])] += t(r["bytes"])
        else:
            per[(r["round"], r["node_id"])] += r["seconds"]
    out: dict[int, float] = defaultdict(float)
    for (rnd, _), s in per.items():
        out[rnd] = max(out[rnd], s)
    return dict(out)


def federated_side(ledger: Ledger, run_id: str, target: float) -> dict:
    """Energy, carbon and breakdown of a ledger run up to the round that reaches ``target``."""
    rounds = ledger.rounds(run_id)
    upto, reached = target_round(rounds, target)
    catalog = run_catalog(next(x for x in ledger.runs() if x["run_id"] == run_id))
    carbon = ledger_carbon(ledger, run_id, upto, catalog)
    rows = [r for r in ledger.energy_rows(run_id) if r["round"] <= upto]
    by_phase: dict[str, float] = defaultdict(float)
    by_class: dict[str, dict[str, float]] = defaultdict(
        lambda: {"compute_j": 0.0, "network_j": 0.0, "total_j": 0.0}
    )
    for r in rows:
        if r["joules"] is None:  # unmetered (not known): the sums are metered totals
            continue
        by_phase[r["phase"]] += r["joules"]
        c = by_class[f"{r['device']}/{r['link']}"]
        c["network_j" if r["phase"] in NETWORK_PHASES else "compute_j"] += r["joules"]
        c["total_j"] += r["joules"]
    secs = _modeled_round_seconds(rows, catalog)
    per_round, cum = [], 0.0
    fac_by_round = carbon.pop("per_round_facility_j")
    for r in rounds:
        cum += fac_by_round.get(r["round"], 0.0)
        per_round.append(
            {
                "round": r["round"],
                "accuracy": r["accuracy"],
                "joules": r["joules"],
                "cumulative_j": cum,
            }
        )
    ledger_j = sum(r["joules"] for r in rounds if r["round"] <= upto)
    final = next((r["accuracy"] for r in rounds if r["round"] == upto), None)
    alt = other_infra(ledger, run_id, upto)
    walls = [r["committed_at"] for r in rounds if r["round"] <= upto]
    run = next(x for x in ledger.runs() if x["run_id"] == run_id)
    return {
        "run_id": run_id,
        "target_accuracy": target,
        "reached": reached,
        "rounds": upto,
        "rounds_in_run": max((r["round"] for r in rounds), default=0),
        "accuracy": final,
        "ledger_j": ledger_j,
        "compute_j": carbon["compute_j"],
        "network_j": carbon["radio_j"],
        "infrastructure_j": carbon["infrastructure_j"],
        "pue_overhead_j": carbon["facility_j"] - carbon["it_j"],
        "total_j": carbon["facility_j"],
        # the same, infrastructure under the model the run did not use (physics.infra)
        "infra_model_other": alt["model"],
        "total_j_other_infra": carbon["facility_j"]
        - carbon["infrastructure_j"]
        + alt["infrastructure_j"],
        "kwh": carbon["kwh"],
        "co2e_kg": carbon["co2e_kg"],
        # infrastructure is priced at the world-average intensity (analysis.carbon), so under
        # the other model only its share of the CO2e changes
        "co2e_kg_other_infra": co2e_with_infra(
            carbon["co2e_kg"], carbon["infrastructure_j"], alt["infrastructure_j"]
        ),
        "carbon": {
            k: carbon[k]
            for k in ("it_j", "facility_j", "kwh", "co2e_kg", "by_country_kg", "world_fallback_for")
        },
        "bytes": sum(r["bytes"] for r in rows),
        "time_s": sum(s for rnd, s in secs.items()),
        "wall_s": (max(walls) - run["started_at"]) if walls else 0.0,
        "by_phase": dict(sorted(by_phase.items())),
        "per_device_class": dict(sorted(by_class.items())),
        "per_round": per_round,
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def build_comparison(fed: dict, cen: dict, target: float, target_source: str, meta: dict) -> dict:
    notes = []
    if not fed["reached"]:
        notes.append(
            f"the federated run never reached the target {target:.4f}; its whole run "
            f"({fed['rounds']} rounds) is counted"
        )
    if not cen["reached"]:
        notes.append(
            f"the centralized baseline did not reach {target:.4f} in {cen['max_epochs']} epochs"
        )
    for side, d in (("federated", fed), ("centralized", cen)):
        fb = d["carbon"]["world_fallback_for"]
        if fb:
            notes.append(
                f"{side}: world-average grid intensity used for {', '.join(fb)} "
                "(no country given or not in the table)"
            )
    return {
        "target_accuracy": target,
        "target_source": target_source,
        **meta,
        "federated": fed,
        "centralized": cen,
        "ratio": {
            "energy": _ratio(fed["total_j"], cen["total_j"]),
            "co2e": _ratio(fed["co2e_kg"], cen["co2e_kg"]),
            # both sides with their infrastructure under the other model (physics.infra)
            "energy_other_infra": _ratio(fed["total_j_other_infra"], cen["total_j_other_infra"]),
            "co2e_other_infra": _ratio(fed["co2e_kg_other_infra"], cen["co2e_kg_other_infra"]),
        },
        "notes": notes,
    }


def compare_run(
    ledger_path: str | Path,
    target_accuracy: float | None = None,
    datacenter: str = DEFAULT_DATACENTER,
    country: str = DEFAULT_COUNTRY,
    max_epochs: int = DEFAULT_MAX_EPOCHS,
    run_id: str | None = None,
    measure: bool = True,
) -> dict:
    """Compare a saved federated run (its ledger) with the centralized baseline on its settings."""
    with Ledger(ledger_path) as ledger:
        runs = ledger.runs()
        if not runs:
            raise ValueError(f"{ledger_path} holds no run")
        run = next((r for r in runs if r["run_id"] == run_id), runs[-1]) if run_id else runs[-1]
        cfg = json.loads(run["config_json"])
        settings = Settings(**{k: v for k, v in cfg.items() if k in Settings.__dataclass_fields__})
        rounds = [r for r in ledger.rounds(run["run_id"]) if r["round"] > 0]
        final = next((r["accuracy"] for r in reversed(rounds) if r["accuracy"] is not None), None)
        if target_accuracy is None:
            if final is None:
                raise ValueError("the federated run has no server accuracy to use as target")
            target, source = float(final), "federated final accuracy"
        else:
            target, source = float(target_accuracy), "--target-accuracy"
        fed = federated_side(ledger, run["run_id"], target)
    plan = plan_run(settings)
    cen = run_centralized(plan, target, datacenter, country, max_epochs, measure=measure)
    meta = {
        "settings": settings.as_dict(),
        "datacenter": {"device": datacenter, "country": cen["country"]},
        "ledger": str(ledger_path),
    }
    return build_comparison(fed, cen, target, source, meta)


def compare(
    settings: Settings,
    target_accuracy: float | None = None,
    datacenter: str = DEFAULT_DATACENTER,
    country: str = DEFAULT_COUNTRY,
    max_epochs: int = DEFAULT_MAX_EPOCHS,
    on_round=None,
    verbose: bool = False,
    measure: bool = True,
) -> dict:
    """Run the federation (ledger in ``settings.out``), then the baseline; write the files."""
    from fedenergy.sim.engine import simulate

    simulate(settings, on_round=on_round, verbose=verbose)
    out = Path(settings.out)
    comp = compare_run(
        out / "ledger.sqlite", target_accuracy, datacenter, country, max_epochs, measure=measure
    )
    write_comparison(out, comp)
    return comp


def write_comparison(out_dir: str | Path, comparison: dict) -> Path:
    path = Path(out_dir) / COMPARISON_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(comparison, indent=2, sort_keys=False, default=str))
    return path


SIDE_ROWS = (
    ("compute J", "compute_j"),
    ("network (radio) J", "network_j"),
    ("infrastructure J", "infrastructure_j"),
    ("PUE overhead J", "pue_overhead_j"),
    ("total J", "total_j"),
    ("total J, other infra model", "total_j_other_infra"),
    ("kWh", "kwh"),
    ("kgCO2e", "co2e_kg"),
    ("accuracy", "accuracy"),
)


def side_table(comp: dict) -> list[tuple[str, str, str]]:
    """Rows (label, federated, centralized) of the side-by-side table, formatted."""
    fed, cen = comp["federated"], comp["centralized"]

    def f(v) -> str:
        if v is None:
            return "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    rows = [(label, f(fed.get(k)), f(cen.get(k))) for label, k in SIDE_ROWS]
    rows.append(("rounds / epochs", f"{fed['rounds']} rounds", f"{cen['epochs']} epochs"))
    rows.append(("time s (modeled)", f(fed["time_s"]), f(cen["time_s"])))
    rows.append(
        ("target reached", "yes" if fed["reached"] else "NO", "yes" if cen["reached"] else "NO")
    )
    return rows
