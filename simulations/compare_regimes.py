"""Which regime do the defaults land in, and which settings flip the answer?

Runs ``fedenergy compare`` (federated simulation + centralized baseline, same target accuracy)
for a few settings and prints the federated/centralized ratios of energy and CO2e:

    .venv/bin/python simulations/compare_regimes.py [--nodes 20] [--rounds 5] [--out runs/regimes]

With ``--tasks digits cnn:10x3 ...`` it runs one row per workload instead, each at its own size
(``TASK:NODESxROUNDS``, or the size in ``TASK_SIZES``), on each fleet of ``--task-fleets``
(``TASK_FLEETS``; default the `mixed` fleet), and writes workloads.json.

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
from fedenergy.physics.infra import other_model
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

# task -> (nodes, rounds) of its `--tasks` row: sized so that digits, cnn, chars and resnet
# together run in well under 20 min on the 2-core machine (a ResNet training call alone is
# ~267 GFLOP, a chars call ~75 GFLOP; docs/workloads.md)
TASK_SIZES = {
    "digits": (20, 5),
    "synthetic": (20, 5),
    "cnn": (20, 5),
    "chars": (10, 5),
    "resnet": (4, 3),
}


# `--task-fleets` names -> fleet groups (None: the default `mixed` fleet)
TASK_FLEETS = {
    "mixed": None,
    "phones-lte": [("phone", "lte", 1.0)],
    "laptops-ethernet": [("laptop", "ethernet", 1.0)],
}


def task_variant(spec: str, fleet: str = "mixed") -> tuple[str, tuple]:
    """``TASK`` or ``TASK:NODESxROUNDS`` on fleet ``fleet`` (a TASK_FLEETS name) -> (variant
    name, variant)."""
    from fedenergy.sim.tasks import get_task

    task, _, size = spec.partition(":")
    get_task(task)  # an unknown task fails here, before any run
    if size:
        n, _, r = size.lower().partition("x")
        if not (n.isdigit() and r.isdigit() and int(n) > 0 and int(r) > 0):
            raise ValueError(f"size {size!r} of {spec!r}: expected NODESxROUNDS, e.g. 10x3")
        nodes, rounds = int(n), int(r)
    elif task in TASK_SIZES:
        nodes, rounds = TASK_SIZES[task]
    else:
        raise ValueError(f"no default size for task {task!r}: give TASK:NODESxROUNDS")
    if fleet not in TASK_FLEETS:
        raise ValueError(f"unknown fleet {fleet!r}; known: {', '.join(TASK_FLEETS)}")
    name = f"task {task}, {nodes} nodes x {rounds} rounds"
    if fleet != "mixed":
        name += f", {fleet}"
    overrides = {"task": task, "nodes": nodes, "rounds": rounds}
    return name, (TASK_FLEETS[fleet], "WORLD", overrides, {})


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def run_variant(
    name: str, base: Settings, out: Path, fresh: bool, done: set[Path], variants: dict = VARIANTS
) -> dict:
    """Compare variant ``name``; its federated run is simulated unless its ledger exists (with
    ``fresh``: unless this invocation simulated it already, ``done``: a run shared by two
    variants is simulated once, so the comparison first written for it stays valid)."""
    groups, country, overrides, kwargs = variants[name]
    run_dir = out / slug(SHARED_RUN.get(name, name))
    settings = dataclasses.replace(base, out=str(run_dir), **overrides)
    if groups is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "fleet.toml"
        path.write_text(fleet_toml(slug(name), groups, country))
        settings = dataclasses.replace(settings, fleet=str(path))
    ledger = run_dir / "ledger.sqlite"
    if run_dir not in done and (fresh or not ledger.is_file()):
        from fedenergy.sim.engine import simulate

        if ledger.is_file():
            ledger.unlink()
        simulate(settings)
    done.add(run_dir)
    comp = compare_run(ledger, **kwargs, measure=False)
    write_comparison(out / slug(name), comp)
    return comp


def _transfer_delta(link, wait_w: float, kwh_gb: float, down: int, up: int, scale: float) -> tuple:
    """What scaling one call's bytes by ``scale`` adds, on the run's clock (the same gaps, so
    promotions and tails as recorded): radio transfer energy, the device's base over the longer
    transfers and infrastructure, each infrastructure model. Returns (run's model, other) J:
    the one call model (physics/call.py) at the scaled bytes minus at the recorded ones."""
    from fedenergy.physics.call import call_energy
    from fedenergy.physics.infra import DEFAULT_MODEL, other_model

    out = []
    for model in (DEFAULT_MODEL, other_model(DEFAULT_MODEL)):
        a, b = (
            call_energy(link, int(d), int(u), kwh_gb, wait_w=wait_w, infra_model=model)
            for d, u in ((down * scale, up * scale), (down, up))
        )
        out.append(a.network_j + a.wait_j - b.network_j - b.wait_j)
    return tuple(out)


WORK = ("train", "evaluate")  # the calls that carry the model, and their compute phases


def what_if(comp: dict, ledger_path: Path, model_scale: float, data_scale: float) -> dict:
    """ANALYTIC re-pricing of a saved comparison (no new training), on the run's own clock:
    every train and evaluate message x ``model_scale`` (the model is most of it; the few KB of
    headers are scaled too, a slight overstatement) and the training and
    evaluation joules x ``model_scale`` (an upper bound: the per-step overhead does not grow
    with the model); the start-up phase, promotions and tails as recorded; every raw-data
    upload x ``data_scale``, centralized compute x ``model_scale * data_scale``. Same rounds and
    epochs to target. Each total is the comparison's plus what the scaling adds, so (1, 1)
    returns the comparison's totals. Returns federated and centralized J under the run's
    infrastructure model and under the other one (``*_other``)."""
    from collections import defaultdict

    from fedenergy.analysis.carbon import facility_factor
    from fedenergy.ledger import Ledger
    from fedenergy.physics.compute import DEVICE
    from fedenergy.physics.devices import get_device
    from fedenergy.physics.infra import DEFAULT_MODEL
    from fedenergy.physics.network import get_link

    f, z, st = comp["federated"], comp["centralized"], comp["settings"]
    if st.get("infra_model", DEFAULT_MODEL) != DEFAULT_MODEL:
        raise ValueError("what_if re-prices runs on the default infrastructure model")
    kwh_gb, whole = st["infra_kwh_per_gb"], st.get("boundary", DEVICE) == DEVICE

    def wait_w(device: str) -> float:
        return get_device(device).idle_power_w if whole else 0.0

    calls: dict = defaultdict(lambda: {"down": 0, "up": 0})  # (round, node, call) -> bytes
    work_j = 0.0  # training and evaluation (not the start-up)
    with Ledger(ledger_path) as ledger:
        for r in ledger.energy_rows(f["run_id"]):
            if r["round"] > f["rounds"] or r["joules"] is None:
                continue
            c = calls[(r["round"], r["node_id"], r["call"])]
            c["link"], c["device"] = r["link"], r["device"]
            if r["phase"] in ("download", "upload"):
                c["down" if r["phase"] == "download" else "up"] += r["bytes"]
            elif r["phase"] in WORK and r["phase"] == r["call"]:
                work_j += r["joules"]
    if not calls:
        raise ValueError(f"{ledger_path} holds no rows of run {f['run_id']} (a stale comparison?)")
    fed, fed_other = f["total_j"], f["total_j_other_infra"]
    fed += (model_scale - 1.0) * work_j
    fed_other += (model_scale - 1.0) * work_j
    for (_, _, call), c in calls.items():
        if call not in WORK:  # profile queries and the run-end tails carry no model
            continue
        d, o = _transfer_delta(
            get_link(c["link"]), wait_w(c["device"]), kwh_gb, c["down"], c["up"], model_scale
        )
        fed, fed_other = fed + d, fed_other + o
    cen, cen_other = z["total_j"], z["total_j_other_infra"]
    extra = (
        z["compute_j"] * (model_scale * data_scale - 1.0) * facility_factor(get_device(z["device"]))
    )
    cen, cen_other = cen + extra, cen_other + extra
    for up in z["uploads"]:
        d, o = _transfer_delta(
            get_link(up["link"]), wait_w(up["device"]), kwh_gb, 0, up["bytes"], data_scale
        )
        cen, cen_other = cen + d, cen_other + o
    return {
        "federated_j": fed,
        "centralized_j": cen,
        "federated_j_other": fed_other,
        "centralized_j_other": cen_other,
    }


WHAT_IFS = {  # name -> (model_scale, data_scale), applied to the default run
    "what-if: model x100 (241k params)": (100.0, 1.0),
    "what-if: samples x48 (CIFAR-sized input)": (1.0, 48.0),
    "what-if: model x0.1, samples x48": (0.1, 48.0),
}


def print_what_ifs(run_dir: Path, w: int = 38) -> dict[str, dict]:
    """Each of :data:`WHAT_IFS` applied to the comparison saved in ``run_dir`` (its
    ``comparison.json`` and ledger): one printed line (name column ``w`` wide) and one result
    each, by name."""
    comp = json.loads((run_dir / "comparison.json").read_text())
    results = {}
    for name, (ms, ds) in WHAT_IFS.items():
        wi = what_if(comp, run_dir / "ledger.sqlite", ms, ds)
        fj, cj = wi["federated_j"], wi["centralized_j"]
        fo, zo = wi["federated_j_other"], wi["centralized_j_other"]
        results[name] = {
            **wi,
            "ratio": {"energy": fj / cj},
            "ratio_other_infra": {"energy": fo / zo},
        }
        print(
            f"{name:{w}} {fj:8.4g} {cj:8.4g} {'':>10} {'':>10} {fj / cj:8.3g} {'':>10}"
            f" | {fo:8.4g} {zo:8.4g} {fo / zo:8.3g}"
        )
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="runs/regimes")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--only", nargs="*", default=None, help="variant names to run")
    p.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        metavar="TASK[:NxR]",
        help="one row per workload (and fleet) instead of the variants (writes "
        "workloads.json); size NODESxROUNDS, default from TASK_SIZES",
    )
    p.add_argument(
        "--task-fleets",
        nargs="+",
        default=["mixed"],
        metavar="FLEET",
        help=f"fleets of the --tasks rows ({', '.join(TASK_FLEETS)}); default mixed",
    )
    a = p.parse_args(argv)
    variants = VARIANTS
    if a.tasks:
        try:
            variants = dict(task_variant(t, f) for t in a.tasks for f in a.task_fleets)
        except (KeyError, ValueError) as e:
            p.error(str(e))
    base = Settings(nodes=a.nodes, rounds=a.rounds)
    out = Path(a.out)
    other = other_model(base.infra_model)
    w = max(38, *(len(n) for n in a.only or variants))  # the name column
    head = (
        f"{'variant':{w}} {'fed J':>8} {'cen J':>8} {'fed gCO2e':>10} {'cen gCO2e':>10} "
        f"{'E ratio':>8} {'CO2e ratio':>10} | {'fed J':>8} {'cen J':>8} {'E ratio':>8} "
        f"{'CO2e ratio':>10}  target / rounds / epochs"
    )
    print(f"{'':{w}} infrastructure {base.infra_model:>48} | {other:>37}")
    print(head)
    results, done = {}, set()
    for name in a.only or variants:
        c = run_variant(name, base, out, a.fresh, done, variants)
        f, z = c["federated"], c["centralized"]
        fo, zo = f["total_j_other_infra"], z["total_j_other_infra"]
        results[name] = {
            "task": c["settings"]["task"],
            "nodes": c["settings"]["nodes"],
            "rounds": c["settings"]["rounds"],
            "target_accuracy": c["target_accuracy"],
            "rounds_to_target": f["rounds"],
            "epochs_to_target": z["epochs"],
            "federated_j": f["total_j"],
            "centralized_j": z["total_j"],
            "federated_co2e_kg": f["co2e_kg"],
            "centralized_co2e_kg": z["co2e_kg"],
            "ratio": c["ratio"],
            "infra_model_other": other,
            "federated_j_other_infra": fo,
            "centralized_j_other_infra": zo,
            "federated_co2e_kg_other_infra": f["co2e_kg_other_infra"],
            "centralized_co2e_kg_other_infra": z["co2e_kg_other_infra"],
            "ratio_other_infra": {
                "energy": fo / zo,
                "co2e": f["co2e_kg_other_infra"] / z["co2e_kg_other_infra"],
            },
        }
        flag = "" if f["reached"] and z["reached"] else " (target NOT reached on a side)"
        print(
            f"{name:{w}} {f['total_j']:8.4g} {z['total_j']:8.4g} {1000 * f['co2e_kg']:10.4g} "
            f"{1000 * z['co2e_kg']:10.4g} {c['ratio']['energy']:8.3g} {c['ratio']['co2e']:10.3g}"
            f" | {fo:8.4g} {zo:8.4g} {fo / zo:8.3g} "
            f"{results[name]['ratio_other_infra']['co2e']:10.3g}"
            f"  {c['target_accuracy']:.4f} / {f['rounds']} / {z['epochs']}{flag}",
            flush=True,
        )
    default = out / slug("default")
    if (default / "comparison.json").is_file() and not a.only and not a.tasks:
        print("analytic re-pricing of the default run (same rounds/epochs; not re-trained):")
        results.update(print_what_ifs(default, w))
    out.mkdir(parents=True, exist_ok=True)
    name = "workloads.json" if a.tasks else "regimes.json"
    (out / name).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
