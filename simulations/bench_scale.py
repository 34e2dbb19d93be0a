"""Scale: fedenergy against plain Flower FedAvg at 1,000 and 10,000 virtual nodes, and the cost
of one selection over 100,000 nodes.

Federation part, per node count N (default 1,000 and 10,000): 100 nodes train per round
(fraction 100/N), 3 rounds, no client-side evaluation, digits task with IID partitions (with
10,000 nodes most partitions hold 0 or 1 example; the point is the framework, not the model),
Flower's Simulation Engine with one CPU per virtual client.

* ``flower``: fedenergy's handlers in a ClientApp without mods, Flower's own FedAvg ServerApp
  (``fraction_train = 100/N``, waiting for all N nodes), the server evaluating the global model
  each round as fedenergy does. No profile query, no ledger.
* ``fedenergy``: ``fedenergy.sim.engine.simulate`` (energy mod, EnergyAwareStrategy with the
  random selector, ledger) with ``fraction = 100/N`` and **lazy discovery**
  (``discovery="lazy"``, the mode meant for large fleets): no up-front profile QUERY; every
  node starts unknown and is learned from its first reply's energy report. ``--discovery
  query`` measures the QUERY-everyone mode instead (Flower's ``InMemoryLinkState`` scans every
  stored message for each node, so N queued QUERY messages cost O(N^2) per sweep of the
  simulation engine: minutes at 1,000 nodes on a loaded 2-core machine, far longer at 10,000).

Printed per N: whole-process wall time of each (Ray start-up and shutdown included), their ratio
(``wall_ratio_vs_flower``), the phase split (fedenergy: start -> round 0 committed, i.e. Ray
start + registration (+ the profile query with ``--discovery query``) + the server's round-0
evaluation; rounds after it), and the peak RSS of the whole process tree (driver, Ray daemons,
actors; psutil, sampled every 0.2 s; shared pages are counted once per process, so it
over-counts). Runs of each N alternate flower/fedenergy. With ``--project-above M``, node counts
above M run Flower only and fedenergy's wall time is *projected* (marked so in the output and
JSON): Flower's measured wall + fedenergy's extra wall over Flower at the largest count that ran
x N / that count. A linear extrapolation, neither bound: it was meant for the query mode, whose
cost grows faster than linearly; with lazy discovery there is no reason left to project.

Selection part (``selection_ms_100k``): a FleetState of 100,000 NodeInfo (the mixed fleet's
devices and links, Dirichlet-sized data), a real EnergyAwareStrategy (its ``forecaster()``, with
the digits model as this round's global model) and the selectors: ``fleet.online(round)`` (the
candidate list), ``RandomSelector`` and ``UtilityPerJouleSelector`` picking 100, in round 1 (no
history: every node is unexplored) and round 5 (after 4 rounds of history on 400 nodes).
``selection_ms_100k`` is the slowest selector's select() plus online() (its first call in a
round, with the node order recomputed as after ``add``), each the median of --sel-reps.
As a cross-check the utility selection is also run once with a forecast the selectors cannot
vectorise (one forecast call per node) and must choose the same nodes.

    python simulations/bench_scale.py [--nodes 1000 10000] [--per-round 100] [--rounds 3]
        [--discovery lazy|query] [--sel-nodes 100000] [--no-federation] [--profile DIR]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "simulations"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_overhead import machine_load, run_plain, run_stack  # noqa: E402

from fedenergy.settings import Settings  # noqa: E402


# -- selection over many nodes -------------------------------------------------------------------
def build_strategy(n: int, seed: int = 0):
    """A real EnergyAwareStrategy over a FleetState of ``n`` nodes (mixed fleet)."""
    import numpy as np
    from flwr.app import ArrayRecord, ConfigRecord

    # Messages built outside a Flower run need a task identity (forecasts size one).
    from flwr.supercore.task_identity import TaskIdentity

    from fedenergy.ledger import Ledger
    from fedenergy.server import EnergyAwareStrategy, FleetState, NodeInfo
    from fedenergy.server.build import make_aggregator
    from fedenergy.sim.fleet import load_fleet
    from fedenergy.sim.tasks import get_task

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    profiles = load_fleet("mixed").assign(n, seed)
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 200, n)
    ids = rng.choice(2**62, size=n, replace=False)  # Flower's node ids are random uint64s
    import psutil

    rss0 = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    fleet = FleetState(
        (
            NodeInfo(
                int(ids[i]),
                i,
                p.device.id,
                p.link.id,
                num_examples=int(sizes[i]),
                availability=p.availability,
                failure_prob=p.failure_prob,
                battery_initial=p.battery_initial,
                recharge_per_round=p.recharge_per_round,
            )
            for i, p in enumerate(profiles)
        ),
        seed,
        0.059,
    )
    build_s = time.perf_counter() - t0
    fleet_mb = (psutil.Process().memory_info().rss - rss0) / 2**20
    fleet.flops_per_example = 5 * 3 * 2 * 2410.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-sel-"))
    strategy = EnergyAwareStrategy(
        make_aggregator("fedavg"), fleet, Ledger(tmp / "ledger.sqlite"), "bench", {}
    )
    arrays = ArrayRecord(get_task("digits").make_model().state_dict())
    # what configure_train does before selecting: this round's model and its message sizes
    strategy.outbox.begin_round(arrays, ConfigRecord({"lr": 0.1}))
    return strategy, fleet, build_s, fleet_mb


def time_selection(n: int, k: int, reps: int) -> dict:
    import numpy as np

    from fedenergy.server import RandomSelector, UtilityPerJouleSelector

    strategy, fleet, build_s, fleet_mb = build_strategy(n)
    selectors = {"random": RandomSelector(0, 0), "utility": UtilityPerJouleSelector(seed=0)}
    out: dict = {"nodes": n, "k": k, "fleet_build_s": build_s, "fleet_mb": fleet_mb}

    forecaster = strategy.forecaster()  # what configure_train hands the selectors

    def per_node(nid: int):  # the same forecast, but opaque: selectors call it once per node
        return forecaster.forecast(nid)

    def timed(fn, reps=reps):
        times, result = [], None
        for _ in range(reps):
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times), result

    for rnd in (1, 5):
        if rnd == 5:  # give 400 nodes a history: 4 rounds of 100 trained, with losses
            ordered = fleet.ordered()
            for r in range(1, 5):
                for nid in ordered[(r - 1) * 100 : r * 100]:
                    fleet.observe_train(nid, r, 1.0 + (nid % 7) / 10)
                # and a radio state: their last transfers 7-28 s before now on the run's clock
                # (within LTE's tail for some, beyond it for others)
                rows = fleet.rows(ordered[(r - 1) * 100 : r * 100])
                fleet.cols.set_rows("radio_end", rows, np.full(len(rows), -7.0 * (5 - r)))

        # the first call of a round (FleetState keeps the round's answer for the second), with
        # the node order recomputed as after add() (lazy discovery learns nodes every round)
        def first_online(rnd=rnd):
            fleet._order, fleet._online = None, {}
            return fleet.online(rnd)

        online_ms, cands = timed(first_online)
        out[f"round{rnd}"] = {"online_ms": online_ms, "candidates": len(cands)}
        for name, sel in selectors.items():
            ms, chosen = timed(
                lambda sel=sel, rnd=rnd, cands=cands: sel.select(rnd, cands, k, fleet, forecaster)
            )
            out[f"round{rnd}"][f"{name}_ms"] = ms
            assert len(chosen) == k
        ms, chosen2 = timed(
            lambda rnd=rnd, cands=cands: selectors["utility"].select(
                rnd, cands, k, fleet, per_node
            ),
            reps=1,
        )
        assert chosen2 == chosen  # the vectorised forecasts choose what per-node ones do
        out[f"round{rnd}"]["utility_per_node_forecast_ms"] = ms
    worst = max(
        out[r][f"{s}_ms"] + out[r]["online_ms"] for r in ("round1", "round5") for s in selectors
    )
    out["selection_ms"] = worst
    out["random_selection_ms"] = max(
        out[r]["random_ms"] + out[r]["online_ms"] for r in ("round1", "round5")
    )
    fc_ms, _ = timed(lambda: [forecaster.forecast(nid) for nid in list(fleet.nodes)[:1000]])
    out["forecast_us_per_node"] = fc_ms  # ms per 1000 calls == µs per call
    return out


def profile_selection(n: int, k: int, path: Path) -> str:
    import cProfile
    import io
    import pstats

    from fedenergy.server import UtilityPerJouleSelector

    strategy, fleet, _, _ = build_strategy(n)
    prof = cProfile.Profile()
    prof.enable()
    cands = fleet.online(1)
    UtilityPerJouleSelector(seed=0).select(1, cands, k, fleet, strategy.forecaster())
    prof.disable()
    prof.dump_stats(str(path))
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(20)
    return buf.getvalue()


def _s(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} s"


# -- federations ------------------------------------------------------------------------------
def scale_settings(
    n: int,
    per_round: int,
    rounds: int,
    seed: int,
    discovery: str = "lazy",
    partitioner: str = "iid",
) -> Settings:
    return Settings(
        task="digits",
        nodes=n,
        rounds=rounds,
        fraction=per_round / n,
        fraction_evaluate=0.0,
        partitioner=partitioner,
        seed=seed,
        round_timeout_s=1800.0,
        discovery=discovery,
    ).validate()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--per-round", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--discovery",
        choices=("lazy", "query"),
        default="lazy",
        help="fedenergy's node discovery (lazy: no up-front profile query; the large-fleet mode)",
    )
    ap.add_argument(
        "--partitioner",
        choices=("iid", "sampled"),
        default="iid",
        help="the digits pool's split, the same on both sides (sampled: every node draws "
        "max(1, 1437 // N) rows with replacement, so none is empty at any N)",
    )
    ap.add_argument("--reps", type=int, default=1, help="flower/fedenergy pairs per node count")
    ap.add_argument("--num-cpus", type=int, default=0, help="Ray CPUs (0: all)")
    ap.add_argument("--sel-nodes", type=int, default=100_000)
    ap.add_argument("--sel-reps", type=int, default=3)
    ap.add_argument("--no-federation", action="store_true", help="only the selection benchmark")
    ap.add_argument("--no-selection", action="store_true", help="skip the selection benchmark")
    ap.add_argument(
        "--project-above",
        type=int,
        default=0,
        help="node counts above this run Flower only; fedenergy's wall is extrapolated linearly "
        "from the largest measured count (0: run everything, the default)",
    )
    ap.add_argument("--profile", metavar="DIR", help="write cProfile stats of the selection here")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    a = ap.parse_args(argv)
    cpus = a.num_cpus or os.cpu_count() or 1
    load0 = machine_load()
    doc: dict = {
        "per_round": a.per_round,
        "rounds": a.rounds,
        "seed": a.seed,
        "discovery": a.discovery,
        "partitioner": a.partitioner,
        "cpus": os.cpu_count(),
        "nodes": {},
    }
    sel = None if a.no_selection else time_selection(a.sel_nodes, a.per_round, a.sel_reps)
    doc["selection"] = sel
    if sel is not None:
        n_sel = a.sel_nodes
        key = f"selection_ms_{n_sel // 1000}k" if n_sel % 1000 == 0 else f"selection_ms_{n_sel}"
        doc[key] = sel["selection_ms"]
        print(
            f"selection over {a.sel_nodes} nodes, k={a.per_round} (median of {a.sel_reps}); "
            f"FleetState built in {sel['fleet_build_s']:.2f} s; forecast "
            f"{sel['forecast_us_per_node']:.1f} µs/node"
        )
        for r in ("round1", "round5"):
            x = sel[r]
            print(
                f"  {r}: online() {x['online_ms']:8.1f} ms ({x['candidates']} online)  "
                f"random {x['random_ms']:8.1f} ms  utility {x['utility_ms']:8.1f} ms "
                f"(per-node forecasts {x['utility_per_node_forecast_ms']:8.1f} ms, same picks)"
            )
        print(f"  selection_ms (worst selector + online): {sel['selection_ms']:.1f} ms (goal < 50)")
    if a.profile:
        Path(a.profile).mkdir(parents=True, exist_ok=True)
        print(profile_selection(a.sel_nodes, a.per_round, Path(a.profile) / "selection.prof"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    measured: dict | None = None  # the largest node count where fedenergy ran
    for n in [] if a.no_federation else sorted(a.nodes):
        s = scale_settings(n, a.per_round, a.rounds, a.seed, a.discovery, a.partitioner)
        project = a.project_above and n > a.project_above and measured is not None
        runs: dict[str, list[dict]] = {"flower": [], "fedenergy": []}
        for rep in range(a.reps):
            order = ["flower", "fedenergy"] if rep % 2 == 0 else ["fedenergy", "flower"]
            for name in order:
                if name == "flower":
                    r = run_plain(s, with_mod=False, num_cpus=cpus)
                elif project:
                    continue
                else:
                    r = run_stack(s, cpus, tmp / f"n{n}-rep{rep}")
                runs[name].append(r)
                print(
                    f"  {n} nodes {name:<9} wall {r['total_s']:7.1f} s  peak rss "
                    f"{r['peak_rss_mb']:6.0f} MB ({r['peak_procs']} processes)",
                    flush=True,
                )
        fl, fe = runs["flower"], runs["fedenergy"]
        flower_wall = statistics.median(x["total_s"] for x in fl)
        if project:
            # fedenergy's extra wall over Flower at the largest count that ran, scaled linearly
            # with the node count
            extra = max(0.0, measured["extra_s"]) * n / measured["n"]
            wall = flower_wall + extra
            d = {
                "projected": True,
                "projection": (
                    f"linear extrapolation: Flower's measured wall at {n} + fedenergy's extra "
                    f"wall at {measured['n']} ({measured['extra_s']:.1f} s) x {n}/"
                    f"{measured['n']} (discovery {a.discovery}; see the docstring)"
                ),
                "wall_ratio_vs_flower": wall / flower_wall,
                "wall_s": wall,
                "peak_rss_mb": None,
                "query_phase_s": None,
                "rounds_s": None,
                "failed_calls": None,
            }
        else:
            query_s = statistics.median(
                x["round0_s"] - y["ready_s"] for x, y in zip(fe, fl, strict=True)
            )
            d = {
                "projected": False,
                "wall_ratio_vs_flower": statistics.median(
                    x["total_s"] / y["total_s"] for x, y in zip(fe, fl, strict=True)
                ),
                "wall_s": statistics.median(x["total_s"] for x in fe),
                "peak_rss_mb": max(x["peak_rss_mb"] for x in fe),
                "query_phase_s": query_s,
                "rounds_s": statistics.median(x["rounds_s"] for x in fe),
                "failed_calls": fe[0]["failed_calls"],
            }
            measured = {
                "n": n,
                "extra_s": statistics.median(
                    x["total_s"] - y["total_s"] for x, y in zip(fe, fl, strict=True)
                ),
            }
        d.update(
            {
                "flower_peak_rss_mb": max(x["peak_rss_mb"] for x in fl),
                "flower_wall_s": flower_wall,
                "runs": runs,
            }
        )
        doc["nodes"][str(n)] = d
        tag = " (PROJECTED, fedenergy not run)" if project else ""
        rss = f"{d['peak_rss_mb']:.0f} MB" if d["peak_rss_mb"] is not None else "not run"
        print(
            f"{n} nodes: fedenergy ({a.discovery} discovery) {d['wall_s']:.1f} s vs Flower "
            f"{flower_wall:.1f} s -> "
            f"wall ratio {d['wall_ratio_vs_flower']:.2f}{tag} (goal <= 1.3); start to round 0 "
            f"committed {_s(d['query_phase_s'])}; peak RSS {rss} (Flower "
            f"{d['flower_peak_rss_mb']:.0f} MB)",
            flush=True,
        )
    doc["load_avg_1m"] = [load0, machine_load()]
    print(f"load average {load0:.1f} -> {doc['load_avg_1m'][1]:.1f} on {os.cpu_count()} cores")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
