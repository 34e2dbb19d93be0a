"""Which regime do the defaults land in, and which settings flip the answer?

Runs ``fedenergy compare`` (federated simulation + centralized baseline, same target accuracy)
for a few settings and prints the federated/centralized ratios of energy and CO2e:

    .venv/bin/python simulations/compare_regimes.py [--nodes 20] [--rounds 5] [--out runs/regimes]

Each federated run is written to OUT/<variant>/ (ledger, comparison.json, report); a variant
whose ledger already exists there is re-compared without re-simulating (--fresh to re-run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from fedenergy.analysis.compare import compare_run, write_comparison
from fedenergy.settings import Settings

MIXED = [  # the shipped `mixed` fleet's groups (simulations/fleets/mixed.toml)
    ("phone", "lte", 0.3),
    ("phone", "wifi", 0.1),
    ("rpi4", "wifi", 0.2),
    ("rpi5", "wifi", 0.1),
    ("jetson-orin-nano", "wifi", 0.1),
    ("laptop", "wifi", 0.1),
    ("laptop", "ethernet", 0.1),
]


def fleet_toml(name: str, groups: list[tuple[str, str, float]], country: str = "WORLD") -> str:
    lines = [f'name = "{name}"']
    for dev, link, frac in groups:
        lines += [
            "[[group]]",
            f'device = "{dev}"',
            f'link = "{link}"',
            f"fraction = {frac}",
            f'country = "{country}"',
        ]
    return "\n".join(lines) + "\n"


# name -> (fleet groups or None for `mixed`, fleet country, Settings overrides, compare kwargs)
VARIANTS = {
    "default": (None, "WORLD", {}, {}),
    "default, centralized on cpu-server": (None, "WORLD", {}, {"datacenter": "cpu-server"}),
    "infra-kwh-per-gb 0": (None, "WORLD", {"infra_kwh_per_gb": 0.0}, {}),
    "all phones on LTE": ([("phone", "lte", 1.0)], "WORLD", {}, {}),
    "all laptops on Ethernet": ([("laptop", "ethernet", 1.0)], "WORLD", {}, {}),
    "all rpi4 on Wi-Fi": ([("rpi4", "wifi", 1.0)], "WORLD", {}, {}),
    "nodes in FRA, datacenter in IND": (MIXED, "FRA", {}, {"country": "IND"}),
    "nodes in IND, datacenter in FRA": (MIXED, "IND", {}, {"country": "FRA"}),
    "task synthetic (610-parameter model)": (None, "WORLD", {"task": "synthetic"}, {}),
}
SHARED_RUN = {"default, centralized on cpu-server": "default"}  # same federated run


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def run_variant(name: str, base: Settings, out: Path, fresh: bool) -> dict:
    groups, country, overrides, kwargs = VARIANTS[name]
    run_dir = out / slug(SHARED_RUN.get(name, name))
    settings = dataclasses.replace(base, out=str(run_dir), **overrides)
    if groups is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "fleet.toml"
        path.write_text(fleet_toml(slug(name), groups, country))
        settings = dataclasses.replace(settings, fleet=str(path))
    ledger = run_dir / "ledger.sqlite"
    if fresh or not ledger.is_file():
        from fedenergy.sim.engine import simulate

        if ledger.is_file():
            ledger.unlink()
        simulate(settings)
    comp = compare_run(ledger, **kwargs, measure=False)
    write_comparison(out / slug(name), comp)
    return comp


def what_if(comp: dict, ledger_path: Path, model_scale: float, data_scale: float) -> tuple:
    """ANALYTIC re-pricing of a saved comparison (no new training): every federated message and
    FLOP x ``model_scale`` (the update is the model), every raw-data upload x ``data_scale``
    (centralized compute x ``model_scale * data_scale``). Same rounds and epochs to target.
    Returns (federated J, centralized J)."""
    from collections import defaultdict

    from fedenergy.ledger import Ledger
    from fedenergy.physics.call import radio_energy
    from fedenergy.physics.devices import get_device
    from fedenergy.physics.infra import infrastructure_energy_j
    from fedenergy.physics.network import get_link

    f, z = comp["federated"], comp["centralized"]
    kwh_gb = comp["settings"]["infra_kwh_per_gb"]
    calls: dict = defaultdict(lambda: {"down": 0, "up": 0, "s": 0.0, "j": 0.0})
    with Ledger(ledger_path) as ledger:
        for r in ledger.energy_rows(f["run_id"]):
            if r["round"] > f["rounds"]:
                continue
            c = calls[(r["round"], r["node_id"], r["call"], r["link"], r["device"])]
            if r["phase"] == "download":
                c["down"] += r["bytes"]
            elif r["phase"] == "upload":
                c["up"] += r["bytes"]
            else:
                c["s"] += r["seconds"]
                c["j"] += r["joules"]
    fed = 0.0
    for (_, _, _, link, _), c in calls.items():
        d, u = int(c["down"] * model_scale), int(c["up"] * model_scale)
        e = radio_energy(get_link(link), d, u, c["s"] * model_scale)
        fed += e.download_j + e.upload_j + infrastructure_energy_j(d + u, kwh_gb)
        fed += c["j"] * model_scale
    cen = 0.0
    for up in z["uploads"]:
        b = int(up["bytes"] * data_scale)
        cen += radio_energy(get_link(up["link"]), 0, b, 0.0).upload_j
        cen += infrastructure_energy_j(b, kwh_gb)
    cen += z["compute_j"] * model_scale * data_scale * get_device(z["device"]).pue
    return fed, cen


WHAT_IFS = {  # name -> (model_scale, data_scale), applied to the default run
    "what-if: model x100 (241k params)": (100.0, 1.0),
    "what-if: samples x48 (CIFAR-sized input)": (1.0, 48.0),
    "what-if: model x0.1, samples x48": (0.1, 48.0),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="runs/regimes")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--only", nargs="*", default=None, help="variant names to run")
    a = p.parse_args(argv)
    base = Settings(nodes=a.nodes, rounds=a.rounds)
    out = Path(a.out)
    head = (
        f"{'variant':38} {'fed J':>8} {'cen J':>8} {'fed gCO2e':>10} {'cen gCO2e':>10} "
        f"{'E ratio':>8} {'CO2e ratio':>10}  target / rounds / epochs"
    )
    print(head)
    results = {}
    for name in a.only or VARIANTS:
        c = run_variant(name, base, out, a.fresh)
        f, z = c["federated"], c["centralized"]
        results[name] = {
            "federated_j": f["total_j"],
            "centralized_j": z["total_j"],
            "federated_co2e_kg": f["co2e_kg"],
            "centralized_co2e_kg": z["co2e_kg"],
            "ratio": c["ratio"],
        }
        flag = "" if f["reached"] and z["reached"] else " (target NOT reached on a side)"
        print(
            f"{name:38} {f['total_j']:8.4g} {z['total_j']:8.4g} {1000 * f['co2e_kg']:10.4g} "
            f"{1000 * z['co2e_kg']:10.4g} {c['ratio']['energy']:8.3g} {c['ratio']['co2e']:10.3g}"
            f"  {c['target_accuracy']:.4f} / {f['rounds']} / {z['epochs']}{flag}",
            flush=True,
        )
    default = out / slug("default")
    if (default / "comparison.json").is_file() and not a.only:
        comp = json.loads((out / slug("default") / "comparison.json").read_text())
        print("analytic re-pricing of the default run (same rounds/epochs; not re-trained):")
        for name, (ms, ds) in WHAT_IFS.items():
            fj, cj = what_if(comp, default / "ledger.sqlite", ms, ds)
            results[name] = {"federated_j": fj, "centralized_j": cj, "ratio": {"energy": fj / cj}}
            print(f"{name:38} {fj:8.4g} {cj:8.4g} {'':>10} {'':>10} {fj / cj:8.3g}")
    (out / "regimes.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
