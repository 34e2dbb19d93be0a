"""Variants of the best energy-aware strategy against the FedAvg runs of a finished benchmark.

Reads the per-seed FedAvg totals and targets from an ``energy_to_accuracy.py --json`` file and
runs the best strategy (utility per joule, per-link compression, 0.4x FedAvg's participants, 30
local epochs, the benchmark's profile discovery) with the given setting changes on the same
fleets and seeds, printing each run and the mean saving per fleet (1 / mean(total / the seed's
FedAvg total)).

    python simulations/e2a_variants.py '{"exploration": 0.1}' \
        [--from docs/benchmark-results/energy_to_accuracy_declared.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedenergy.server.session import RunStopped  # noqa: E402
from fedenergy.settings import Settings  # noqa: E402
from fedenergy.sim.engine import simulate  # noqa: E402

BEST = dict(
    task="digits",
    nodes=40,
    rounds=30,
    fraction=0.25 * 0.4,
    fraction_evaluate=0.0,
    partitioner="dirichlet",
    dirichlet_alpha=0.5,
    selector="utility",
    compression="per-link",
    local_epochs=30,
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("changes", help="settings to change, as JSON, e.g. '{\"exploration\": 0.1}'")
    p.add_argument(
        "--from", dest="source", default="docs/benchmark-results/energy_to_accuracy_declared.json"
    )
    p.add_argument("--out", default="runs/e2a-variants")
    a = p.parse_args()
    changes = json.loads(a.changes)
    doc = json.loads(Path(a.source).read_text())
    tag = ",".join(f"{k}={v}" for k, v in changes.items()) or "best"
    for fleet, res in doc.items():
        fedavg = res["fedavg"]["per_seed"]
        ratios = []
        for seed, target in zip(res["seeds"], res["targets"], strict=True):
            out = Path(a.out) / tag / fleet / f"seed{seed}"
            s = Settings(
                **BEST,
                fleet=res.get("fleet", fleet),  # a fleet file's path, when one was run
                seed=seed,
                target_accuracy=target,
                discovery=res.get("discovery", "lazy"),  # JSONs before 'declared': lazy
                out=str(out),
            )
            try:
                summary = simulate(replace(s, **changes))
            except RunStopped as err:  # e.g. too many short rounds: no saving to report
                print(f"{tag} {fleet} seed {seed}: stopped, not counted: {err}", flush=True)
                continue
            ratio = summary["total_j"] / fedavg[res["seeds"].index(seed)]["total_j"]
            ratios.append(ratio)
            print(
                f"{tag} {fleet} seed {seed}: {summary['total_j']:.1f} J, "
                f"{summary['rounds']} rounds, accuracy {summary['final_accuracy']:.4f} "
                f"(target {target:.4f}), saving {1 / ratio:.1f}x",
                flush=True,
            )
        if not ratios:
            print(f"{tag} {fleet}: every seed stopped", flush=True)
            continue
        n = len(res["seeds"])
        part = "" if len(ratios) == n else f" ({len(ratios)} of {n} seeds; the others stopped)"
        print(f"{tag} {fleet}: mean saving {1 / statistics.fmean(ratios):.2f}x{part}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
