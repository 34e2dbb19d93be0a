"""Reference benchmark: energy to reach FedAvg's accuracy, per strategy, on two fleets.

For each fleet, FedAvg (uniform random participation, no compression) runs a fixed number of
rounds; its final server-side accuracy is the target. Every other strategy then runs on the same
fleet, data (digits, Dirichlet(0.5) label skew) and seed until it reaches that target (or the
round cap). Printed per strategy: total joules (all phases, all nodes, failed calls included),
the ratio to FedAvg, rounds, final accuracy, and joules by link. With several ``--seeds`` every
seed repeats all of it (its own FedAvg target) and the table gives means, with the saving's
range over seeds. A plot of accuracy against cumulative energy (first seed) goes to
--plot-dir; --json writes the same figures (per fleet and strategy: ``total_j``,
``ratio_vs_fedavg``, ``rounds``, ``final_accuracy``, ``reached_target``, ``per_seed``).

How the coordinator learns what each node is (``--discovery``):

* ``declared`` (default): every SuperNode declared its device and link when it was registered
  (``flwr supernode register --name "... fe:DEVICE/LINK"``; here the Simulation Engine's nodes
  are named from the fleet spec): known before any message, at no energy cost per run;
* ``lazy``: nothing is declared; a node's profile comes with its first reply, so the
  energy-aware strategies pay for first contacts with nodes they could not know were costly;
* ``query``: every strategy pays a round-0 QUERY of every node; the saving without it is
  printed too ("excl.query").

FedAvg ignores profiles (uniform sampling): its runs are the same in all three modes except for
the query's own joules.

``--fleets`` takes fleet names and paths to a user's fleet files (``my/fleet.toml``): a file's
runs, plot and JSON entry are named by its file name (``fleet``), made safe for a directory name
and unique (``fleet-2`` for a second ``fleet.toml``); the JSON entry records the path.

    python simulations/energy_to_accuracy.py [--rounds 15] [--nodes 40] [--seeds 0 1 2]
        [--discovery declared|lazy|query] [--only NAME ...] [--json PATH] [--plot-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "simulations"))

import e2a_regimes as regimes  # noqa: E402

from fedenergy.settings import Settings  # noqa: E402
from fedenergy.sim.engine import simulate  # noqa: E402
from fedenergy.sim.fleet import resolve_fleet_path  # noqa: E402

STRATEGIES = {
    "fedavg": dict(selector="random", compression="fixed", codec="none"),
    # FedAvg with the energy-aware strategies' local work, to separate what E alone buys
    "fedavg, E=30": dict(selector="random", compression="fixed", codec="none", local_epochs=30),
    "utility+per-link": dict(selector="utility", compression="per-link"),
    # the energy-aware strategy may also decide HOW MANY train (0.4x FedAvg's participants) and
    # how much local work each does: compute is ~0.1 % of a call's joules on this task (the
    # ledger's compute_j against network_j), so more local epochs per round trade almost free
    # compute for rounds of communication
    "greedy+per-link, 0.4k, E=30": dict(
        selector="greedy", compression="per-link", fraction_scale=0.4, local_epochs=30
    ),
    "utility+per-link, 0.4k, E=30": dict(
        selector="utility", compression="per-link", fraction_scale=0.4, local_epochs=30
    ),
    # weigh energy more in the utility score (utility / joules**2); the same on every fleet
    "utility(w=2)+per-link, 0.4k, E=30": dict(
        selector="utility",
        compression="per-link",
        fraction_scale=0.4,
        local_epochs=30,
        energy_weight=2.0,
    ),
    "utility(w=2)+accuracy-aware, 0.4k, E=30": dict(
        selector="utility",
        compression="accuracy-aware",
        fraction_scale=0.4,
        local_epochs=30,
        energy_weight=2.0,
    ),
    # priced local work (docs/strategies.md): per node the epochs (1, 5, 15, 30) and uplink
    # codec (none, int8, stc:0.09) of most forecast progress per joule; utility per priced joule
    # chooses who trains; per-link gives the downlink codecs
    "utility+priced, 0.4k": dict(
        selector="utility", compression="per-link", fraction_scale=0.4, local_work="priced"
    ),
}


def cumulative(summary: dict) -> list[tuple[float, float]]:
    """(cumulative joules, accuracy) after each round, round 0 (the profile query) included."""
    out, total = [], 0.0
    for r in summary["per_round"]:
        total += r["joules"]
        out.append((total, r["accuracy"]))
    return out


def joules_by_link(ledger: Path) -> dict[str, float]:
    """Joules per link of the nodes that spent them (failed calls included; "unknown" for a
    node the coordinator never learned)."""
    con = sqlite3.connect(ledger)
    try:
        rows = con.execute(
            "SELECT COALESCE(n.link, 'unknown'), SUM(e.joules) FROM energy e LEFT JOIN nodes n "
            "ON e.run_id=n.run_id AND e.node_id=n.node_id GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
    finally:
        con.close()
    return {link: round(j, 3) for link, j in rows}


def is_fleet_path(spec: str) -> bool:
    """Whether a --fleets entry names a file (as fedenergy.sim.fleet reads it) or a fleet."""
    return spec.endswith(".toml") or "/" in spec


def fleet_labels(specs: list[str]) -> list[tuple[str, str]]:
    """(fleet as simulate takes it, label) per --fleets entry, in order. A name is its own
    label; a path's label is its file name without ``.toml``, any character outside
    ``[A-Za-z0-9._-]`` made ``-``, and the path made absolute (the runs' settings keep it).
    A label met before gets ``-2``, ``-3``, ... Raises ValueError for a missing fleet file."""
    out, taken = [], set()
    for spec in specs:
        if is_fleet_path(spec):
            path = resolve_fleet_path(spec).resolve()
            base = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip(".-") or "fleet"
            spec = str(path)
        else:
            base = spec
        label, n = base, 1
        while label in taken:
            n += 1
            label = f"{base}-{n}"
        taken.add(label)
        out.append((spec, label))
    return out


def selected(strategies: dict[str, dict], only: list[str] | None) -> list[str]:
    """The names of ``strategies`` that ``--only`` keeps (all without it), FedAvg always."""
    return [n for n in strategies if not only or n in only or n == "fedavg"]


def run_fleet(
    fleet: str,
    args: argparse.Namespace,
    out_dir: Path,
    seed: int,
    label: str | None = None,
    task: str = "digits",
    size: tuple[int, int, float] | None = None,
    strategies: dict[str, dict] | None = None,
    infra_models: tuple[str, ...] = ("per-byte",),
) -> dict:
    """Every strategy on one fleet with one seed (FedAvg first: its final accuracy is the
    target); ``label`` names the fleet in directories and lines (default: ``fleet``).
    ``size``: (nodes, FedAvg rounds, fraction), default ``args``'. Each strategy but FedAvg
    runs once per model of ``infra_models`` (its choices follow that model's forecasts; the
    first model's run also keeps its total under the other); FedAvg's choices ignore energy,
    so its one run is read under both."""
    label = label or fleet
    nodes, rounds, fraction = size or (args.nodes, args.rounds, args.fraction)
    base = Settings(
        task=task,
        nodes=nodes,
        rounds=rounds,
        fraction=fraction,
        fraction_evaluate=0.0,
        fleet=fleet,
        seed=seed,
        partitioner="dirichlet",
        dirichlet_alpha=0.5,
        discovery=args.discovery,
    )
    results: dict[str, dict] = {}
    target = None
    chosen = strategies or STRATEGIES
    runs = [
        (name, chosen[name], model)
        for name in selected(chosen, args.only)
        for model in (infra_models[:1] if name == "fedavg" else infra_models)
    ]
    for name, kw, model in runs:
        kw = dict(kw)
        scale = kw.pop("fraction_scale", 1.0)
        key = name if model == infra_models[0] else f"{name} @{model}"
        out = out_dir / label / f"seed{seed}" / key.replace(" @", "@")
        s = replace(base, out=str(out), fraction=base.fraction * scale, infra_model=model, **kw)
        if name != "fedavg":
            s = replace(s, rounds=rounds * args.cap_factor, target_accuracy=target)
        t0 = time.monotonic()
        summary = simulate(s)
        wall = time.monotonic() - t0
        if name == "fedavg":
            target = summary["final_accuracy"]
        acc = summary["final_accuracy"]
        query_j = summary["per_round"][0]["joules"]  # round 0: the profile query
        results[key] = {
            "infra_model": model,
            "total_j": summary["total_j"],
            # the same run, network infrastructure under the other model (physics.infra)
            "infra_model_other": summary["infra_other"]["model"],
            "total_j_other_infra": summary["infra_other"]["total_j"],
            "query_j": query_j,
            "compute_j": summary["compute_j"],
            "network_j": summary["network_j"],
            "rounds": summary["rounds"],
            "final_accuracy": acc,
            "reached_target": acc is not None and acc >= target,
            "failed_calls": sum(r["failed"] for r in summary["per_round"]),
            "wall_s": round(wall, 1),
            "curve": cumulative(summary),
            "initial_accuracy": summary["per_round"][0]["accuracy"],  # the untrained model
            "by_link_j": joules_by_link(Path(s.out) / "ledger.sqlite"),
        }
        links = ", ".join(f"{k} {v:.0f}" for k, v in results[key]["by_link_j"].items())
        where = label if task == "digits" else f"{task} {label}"
        print(
            f"  [{where} seed {seed}] {key:<40} {summary['total_j']:8.1f} J  "
            f"({summary['infra_other']['model']} infra: "
            f"{summary['infra_other']['total_j']:.1f} J)  rounds {summary['rounds']:3d}"
            f"  acc {acc:.4f}  ({wall:.0f} s)  by link: {links}",
            flush=True,
        )
    fed = results["fedavg"]
    ref_train = fed["total_j"] - fed["query_j"]
    for r in results.values():
        # against FedAvg's joules under the model this run was accounted in
        same = r["infra_model"] == fed["infra_model"]
        ref = fed["total_j"] if same else fed["total_j_other_infra"]
        r["ratio_vs_fedavg"] = r["total_j"] / ref
        r["savings_x"] = ref / r["total_j"]
        # the one-off profile query (round 0) costs every strategy the same; without it
        # (FedAvg's query joules are known under its own model only):
        r["savings_x_excl_query"] = (
            ref_train / max(r["total_j"] - r["query_j"], 1e-12) if same else None
        )
    return {"target_accuracy": target, "strategies": results}


def combine(per_seed: list[dict]) -> dict:
    """One fleet's figures over seeds: per strategy the mean total joules, the mean ratio to the
    same seed's FedAvg (its saving is 1 / that), min and max saving, mean rounds and accuracy,
    whether every seed reached its target, and every seed's own figures."""
    names = list(per_seed[0]["strategies"])
    out: dict[str, dict] = {}
    for name in names:
        runs = [p["strategies"][name] for p in per_seed]
        ratios = [r["ratio_vs_fedavg"] for r in runs]
        mean_ratio = statistics.fmean(ratios)
        out[name] = {
            "total_j": statistics.fmean(r["total_j"] for r in runs),
            "infra_model_other": runs[0]["infra_model_other"],
            "total_j_other_infra": statistics.fmean(r["total_j_other_infra"] for r in runs),
            "ratio_vs_fedavg": mean_ratio,
            "savings_x": 1.0 / mean_ratio,
            "savings_x_min": min(r["savings_x"] for r in runs),
            "savings_x_max": max(r["savings_x"] for r in runs),
            "savings_x_excl_query": (
                statistics.fmean(r["savings_x_excl_query"] for r in runs)
                if all(r["savings_x_excl_query"] is not None for r in runs)
                else None
            ),
            "rounds": statistics.fmean(r["rounds"] for r in runs),
            "final_accuracy": statistics.fmean(r["final_accuracy"] for r in runs),
            "reached_target": all(r["reached_target"] for r in runs),
            "seeds_reached": sum(bool(r["reached_target"]) for r in runs),
            "curve": runs[0]["curve"],
            "per_seed": [{k: v for k, v in r.items() if k != "curve"} for r in runs],
        }
    return {
        "target_accuracy": statistics.fmean(p["target_accuracy"] for p in per_seed),
        "targets": [p["target_accuracy"] for p in per_seed],
        "strategies": out,
    }


def run_regimes(
    args: argparse.Namespace,
    tasks: list[tuple[str, tuple[int, int, float]]],
    fleets: list[tuple[str, str]],
    out_dir: Path,
    plot_dir: Path,
) -> int:
    """``--tasks``: every task x fleet x seed, its cells under both infrastructure models;
    the table, the best strategy per cell, and the JSON (rewritten after every fleet)."""
    models = regimes.INFRA_MODELS if args.infra_runs == "separate" else regimes.INFRA_MODELS[:1]
    doc = regimes.start_doc(args, args.json, args.append)  # ValueError: checked in main
    names = selected(regimes.REGIME_STRATEGIES, args.only)
    t_start = time.monotonic()
    for i, (task, size) in enumerate(tasks, 1):
        nodes, rounds, fraction = size
        doc["sizes"][task] = {"nodes": nodes, "rounds": rounds, "fraction": fraction}
        doc["strategies"][task], doc["infra_runs"][task] = names, args.infra_runs
        doc["regimes"][task] = {}
        for fleet, label in fleets:
            print(
                f"[{i}/{len(tasks)}] task {task}, fleet {label}: {nodes} nodes, {fraction:g} per "
                f"round, FedAvg {rounds} rounds ({time.monotonic() - t_start:.0f} s so far)",
                flush=True,
            )
            per_seed = [
                run_fleet(
                    fleet,
                    args,
                    out_dir / task,
                    seed,
                    label,
                    task,
                    size,
                    regimes.REGIME_STRATEGIES,
                    models,
                )
                for seed in args.seeds
            ]
            shared = len(models) == 1
            cells = {m: regimes.cell(per_seed, m, shared) for m in regimes.INFRA_MODELS}
            doc["regimes"][task][label] = cells
            curves = {"targets": cells["per-byte"]["targets"], "strategies": {}}
            for name, r in per_seed[0]["strategies"].items():
                if " @" not in name:  # the runs accounted under the per-byte model
                    curves["strategies"][name] = {"curve": r["curve"], "per_seed": [r]}
            plot(f"{label}, task {task}", curves, plot_dir / f"e2a_{task}_{label}.png")
            if args.json:  # as far as it has run
                regimes.write_json(args.json, doc)
    n = len(args.seeds)
    print()
    print(
        f"means over {n} seed(s) {args.seeds}; saving = 1 / mean(total J / the same seed's "
        f"FedAvg J under that infrastructure model), [min-max] over seeds; discovery "
        f"{args.discovery}; strategies run under each model ('separate') or under per-byte "
        "and read under both ('shared'): "
        + ", ".join(f"{t} {m}" for t, m in doc["infra_runs"].items())
    )
    print("\n".join(regimes.table_lines(doc)))
    print()
    print("\n".join(regimes.headline_lines(doc)))
    print(f"wall {time.monotonic() - t_start:.0f} s")
    return 0


def plot(fleet: str, res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in res["strategies"].items():
        xs, ys = zip(*r["curve"], strict=True)
        first = r["per_seed"][0]["total_j"]
        ax.plot(xs, ys, marker=".", label=f"{name} ({first:.0f} J)")
    ax.axhline(
        res["targets"][0], color="grey", ls="--", lw=1, label="target (FedAvg final, first seed)"
    )
    ax.set_xscale("log")
    ax.set_xlabel("cumulative energy, all nodes and phases (J, log scale)")
    ax.set_ylabel("server-side accuracy")
    ax.set_title(f"Accuracy against energy — fleet '{fleet}' (first seed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--fleets",
        nargs="+",
        default=["reference", "cellular"],
        help="fleet names or paths to fleet files (my/fleet.toml)",
    )
    p.add_argument("--nodes", type=int, default=40)
    p.add_argument("--rounds", type=int, default=20, help="FedAvg's fixed number of rounds")
    p.add_argument("--fraction", type=float, default=0.25)
    p.add_argument("--cap-factor", type=int, default=2, help="round cap = rounds x this")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="seeds (data split, fleet assignment, selection); figures are averaged over them",
    )
    p.add_argument(
        "--discovery",
        choices=("declared", "lazy", "query"),
        default="declared",
        help="how the coordinator learns node profiles (declared: from the SuperNodes' "
        "registration names, no message; lazy: from first replies, no up-front messages; "
        "query: every node is asked in round 0, which every strategy pays)",
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        metavar="TASK[:NxR[@F]]",
        help="energy to accuracy across regimes (simulations/e2a_regimes.py): each task "
        "(digits, cnn, chars, resnet, ...) at N nodes, R FedAvg rounds, fraction F (default "
        "per task), every fleet, both infrastructure models, its strategies",
    )
    p.add_argument(
        "--infra-runs",
        choices=("shared", "separate"),
        default="shared",
        help="with --tasks: the strategies run under the per-byte model and the power cell "
        "reads the same runs (shared), or they run again under the power model (separate)",
    )
    p.add_argument(
        "--append",
        action="store_true",
        help="with --tasks: keep the other tasks of the --json file (same seeds, discovery and "
        "round cap), replace the ones run now, and print the whole table",
    )
    p.add_argument("--only", nargs="*", default=None, help="strategies to run besides fedavg")
    p.add_argument("--out", default="runs/energy_to_accuracy")
    p.add_argument("--plot-dir", default=None, help="where the PNG plots go (default --out)")
    p.add_argument("--json", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    try:
        fleets = fleet_labels(args.fleets)
    except ValueError as err:
        p.error(str(err))
    out_dir = Path(args.out)
    plot_dir = Path(args.plot_dir or args.out)
    plot_dir.mkdir(parents=True, exist_ok=True)
    if args.tasks:
        try:
            tasks = [regimes.parse_task(t) for t in args.tasks]
            regimes.start_doc(args, args.json, args.append)
        except ValueError as err:
            p.error(str(err))
        return run_regimes(args, tasks, fleets, out_dir, plot_dir)
    all_results, specs = {}, {}
    for fleet, label in fleets:
        print(
            f"fleet {label}"
            + (f" ({fleet})" if fleet != label else "")
            + f": {args.nodes} nodes, {args.fraction:g} per round, FedAvg {args.rounds} rounds",
            flush=True,
        )
        res = combine([run_fleet(fleet, args, out_dir, seed, label) for seed in args.seeds])
        all_results[label], specs[label] = res, fleet
        plot(label, res, plot_dir / f"energy_to_accuracy_{label}.png")
    print()
    n = len(args.seeds)
    print(
        f"means over {n} seed(s) {args.seeds}; saving = 1 / mean(total J / the same seed's "
        f"FedAvg J), [min-max] over seeds; discovery {args.discovery}"
    )
    query = args.discovery == "query"  # only then is there a round-0 query to leave out
    print(
        f"{'fleet':<10} {'strategy':<40} {'total J':>9} {'other-infra J':>13} {'vs FedAvg':>9} "
        f"{'saving':>7} "
        f"{'[min-max]':>13} {'excl.query' if query else '':>10} {'rounds':>6} {'accuracy':>8} "
        f"{'target':>6}"
    )
    for fleet, res in all_results.items():
        for name, r in res["strategies"].items():
            span = f"[{r['savings_x_min']:.1f}-{r['savings_x_max']:.1f}]"
            excl_q = r["savings_x_excl_query"]
            excl = f"{excl_q:9.1f}x" if query and excl_q is not None else ""
            print(
                f"{fleet:<10} {name:<40} {r['total_j']:9.1f} {r['total_j_other_infra']:13.1f} "
                f"{r['ratio_vs_fedavg']:9.3f} {r['savings_x']:6.1f}x {span:>13} {excl:>10} "
                f"{r['rounds']:6.1f} {r['final_accuracy']:8.4f} "
                f"{str(r['seeds_reached']) + '/' + str(n):>6}"
            )
    if args.json:
        doc = {
            f: {
                "fleet": specs[f],  # the name or the fleet file's absolute path
                "target_accuracy": r["target_accuracy"],
                "targets": r["targets"],
                "seeds": args.seeds,
                "discovery": args.discovery,
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
