"""Reference benchmark: energy to reach FedAvg's accuracy, per strategy, on two fleets.

For each fleet, FedAvg (uniform random participation, no compression) runs a fixed number of
rounds; its final server-side accuracy is the target. Every other strategy then runs on the same
fleet, data (digits, Dirichlet(0.5) label skew) and seed until it reaches that target (or the
round cap). Printed per strategy: total joules (all phases, all nodes, failed calls included),
the ratio to FedAvg, rounds, final accuracy. A plot of accuracy against cumulative energy goes
to --plot-dir; --json writes the same figures.

    python simulations/energy_to_accuracy.py [--rounds 20] [--nodes 40] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedenergy.settings import Settings  # noqa: E402
from fedenergy.simulate import simulate  # noqa: E402

STRATEGIES = {
    "fedavg": dict(selector="random", compression="fixed", codec="none"),
    "greedy+per-link": dict(selector="greedy", compression="per-link"),
    "utility": dict(selector="utility", compression="fixed", codec="none"),
    "utility+per-link": dict(selector="utility", compression="per-link"),
    "utility+accuracy-aware": dict(selector="utility", compression="accuracy-aware"),
    # the energy-aware strategy may also decide HOW MANY train: 0.4x FedAvg's participants
    "utility+per-link, 0.4k": dict(selector="utility", compression="per-link", fraction_scale=0.4),
}


def cumulative(summary: dict) -> list[tuple[float, float]]:
    """(cumulative joules, accuracy) after each round, round 0 (the profile query) included."""
    out, total = [], 0.0
    for r in summary["per_round"]:
        total += r["joules"]
        out.append((total, r["accuracy"]))
    return out


def run_fleet(fleet: str, args: argparse.Namespace, out_dir: Path) -> dict:
    base = Settings(
        task="digits",
        nodes=args.nodes,
        rounds=args.rounds,
        fraction=args.fraction,
        fraction_evaluate=0.0,
        fleet=fleet,
        seed=args.seed,
        partitioner="dirichlet",
        dirichlet_alpha=0.5,
    )
    results: dict[str, dict] = {}
    target = None
    for name, kw in STRATEGIES.items():
        if args.only and name not in args.only and name != "fedavg":
            continue
        kw = dict(kw)
        scale = kw.pop("fraction_scale", 1.0)
        s = replace(base, out=str(out_dir / fleet / name), fraction=base.fraction * scale, **kw)
        if name != "fedavg":
            s = replace(s, rounds=args.rounds * args.cap_factor, target_accuracy=target)
        t0 = time.monotonic()
        summary = simulate(s)
        wall = time.monotonic() - t0
        if name == "fedavg":
            target = summary["final_accuracy"]
        acc = summary["final_accuracy"]
        query_j = summary["per_round"][0]["joules"]  # round 0: the profile query
        results[name] = {
            "total_j": summary["total_j"],
            "query_j": query_j,
            "compute_j": summary["compute_j"],
            "network_j": summary["network_j"],
            "rounds": summary["rounds"],
            "final_accuracy": acc,
            "reached_target": acc is not None and acc >= target,
            "failed_calls": sum(r["failed"] for r in summary["per_round"]),
            "wall_s": round(wall, 1),
            "curve": cumulative(summary),
        }
        print(
            f"  [{fleet}] {name:<24} {summary['total_j']:10.1f} J  rounds {summary['rounds']:3d}"
            f"  acc {acc:.4f}  ({wall:.0f} s)",
            flush=True,
        )
    ref = results["fedavg"]["total_j"]
    ref_train = ref - results["fedavg"]["query_j"]
    for r in results.values():
        r["ratio_vs_fedavg"] = r["total_j"] / ref
        r["savings_x"] = ref / r["total_j"]
        # the one-off profile query (round 0) costs every strategy the same; without it:
        r["savings_x_excl_query"] = ref_train / max(r["total_j"] - r["query_j"], 1e-12)
    return {"target_accuracy": target, "strategies": results}


def plot(fleet: str, res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in res["strategies"].items():
        xs, ys = zip(*r["curve"], strict=True)
        ax.plot(xs, ys, marker=".", label=f"{name} ({r['total_j']:.0f} J)")
    ax.axhline(res["target_accuracy"], color="grey", ls="--", lw=1, label="target (FedAvg final)")
    ax.set_xscale("log")
    ax.set_xlabel("cumulative energy, all nodes and phases (J, log scale)")
    ax.set_ylabel("server-side accuracy")
    ax.set_title(f"Accuracy against energy — fleet '{fleet}'")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fleets", nargs="+", default=["reference", "cellular"])
    p.add_argument("--nodes", type=int, default=40)
    p.add_argument("--rounds", type=int, default=20, help="FedAvg's fixed number of rounds")
    p.add_argument("--fraction", type=float, default=0.25)
    p.add_argument("--cap-factor", type=int, default=2, help="round cap = rounds x this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", default=None, help="strategies to run besides fedavg")
    p.add_argument("--out", default="runs/energy_to_accuracy")
    p.add_argument("--plot-dir", default=None, help="where the PNG plots go (default --out)")
    p.add_argument("--json", default=None, help="write the figures as JSON here")
    args = p.parse_args()
    out_dir = Path(args.out)
    plot_dir = Path(args.plot_dir or args.out)
    plot_dir.mkdir(parents=True, exist_ok=True)
    all_results = {}
    for fleet in args.fleets:
        print(
            f"fleet {fleet}: {args.nodes} nodes, {args.fraction:g} per round, FedAvg "
            f"{args.rounds} rounds",
            flush=True,
        )
        res = run_fleet(fleet, args, out_dir)
        all_results[fleet] = res
        plot(fleet, res, plot_dir / f"energy_to_accuracy_{fleet}.png")
    print()
    print(
        f"{'fleet':<10} {'strategy':<24} {'total J':>10} {'vs FedAvg':>10} {'saving':>8} "
        f"{'excl. query':>11} {'rounds':>6} {'accuracy':>8} {'target':>6}"
    )
    for fleet, res in all_results.items():
        for name, r in res["strategies"].items():
            print(
                f"{fleet:<10} {name:<24} {r['total_j']:10.1f} {r['ratio_vs_fedavg']:10.3f} "
                f"{r['savings_x']:7.1f}x {r['savings_x_excl_query']:10.1f}x "
                f"{r['rounds']:6d} {r['final_accuracy']:8.4f} "
                f"{'yes' if r['reached_target'] else 'NO':>6}"
            )
    if args.json:
        doc = {
            f: {
                "target_accuracy": r["target_accuracy"],
                **{
                    n: {k: v for k, v in s.items() if k != "curve"}
                    for n, s in r["strategies"].items()
                },
            }
            for f, r in all_results.items()
        }
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
