"""Scale: fedenergy against plain Flower FedAvg at 1,000 to 100,000 virtual nodes, and the cost
of one selection over 100,000 nodes.

Federation part, per node count N (default 1,000 and 10,000): 100 nodes train per round
(fraction 100/N), 3 rounds, no client-side evaluation, the digits task, Flower's Simulation
Engine with one CPU per virtual client. The digits pool (1,437 rows) is split with
``--partitioner``: ``iid`` (the default) leaves every node past the 1,437th without data, and at
100,000 nodes Flower's FedAvg then breaks (a round whose sampled nodes all hold 0 examples
divides by a total weight of 0 in ``aggregate_arrayrecords``); ``sampled`` gives every node
``max(1, 1437 // N)`` rows drawn with replacement (:mod:`fedenergy.sim.tasks.partition`), the
same split on both sides, so both aggregate at any N.

* ``flower``: fedenergy's handlers in a ClientApp without the energy mod, Flower's own FedAvg
  ServerApp (``fraction_train = 100/N``, waiting for all N nodes), the server evaluating the
  global model each round as fedenergy does. No profile query, no ledger.
* ``fedenergy``: ``fedenergy.sim.engine.simulate`` (energy mod, EnergyAwareStrategy with the
  random selector, ledger) with ``fraction = 100/N`` and **lazy discovery**
  (``discovery="lazy"``, the mode meant for large fleets): no up-front profile QUERY; every
  node starts unknown and is learned from its first reply's energy report. ``--discovery
  query`` measures the QUERY-everyone mode instead (N queued QUERY messages in Flower's link
  state: see below; minutes at 1,000 nodes, far longer at 10,000).

Printed per N: whole-process wall time of each (Ray start-up and shutdown included), their ratio
(``wall_ratio_vs_flower``) and that of the process trees' CPU, the phase split of both sides
(start -> round 0 done: registration (+ the profile query with ``--discovery query``) and the
server's round-0 evaluation, with Ray starting meanwhile in the engine's own thread; the rounds
after it, the actors' start-up included; ``query_phase_s`` is fedenergy's start -> round 0
minus Flower's start -> all nodes registered, as before), the peak RSS of the
whole process tree (driver, Ray daemons, actors; psutil, sampled every 0.2 s; shared pages are
counted once per process, so it over-counts) and its ratio (``rss_ratio_vs_flower``), and, for
both sides, Flower's delivery sweep (:mod:`linkstate_trace`): the Simulation Engine hands out
messages from one thread that asks the link state, node by node, for each node's next message,
and every such call walks all stored messages, so a sweep costs N x stored messages; at 100,000
nodes it, not either side's own code, sets the length of a round. Runs of each N alternate
flower/fedenergy (``--reps`` pairs). A run that raises is recorded with its error and the
innermost frames of its stack (``broke``), and the benchmark goes on.

Selection part (``selection_ms_100k``): a FleetState of 100,000 NodeInfo (the mixed fleet's
devices and links, Dirichlet-sized data), a real EnergyAwareStrategy (its ``forecaster()``, with
the digits model as this round's global model) and the selectors: ``fleet.online(round)`` (the
candidate list), ``RandomSelector`` and ``UtilityPerJouleSelector`` picking 100, in round 1 (no
history: every node is unexplored) and round 5 (after 4 rounds of history on 400 nodes).
``selection_ms_100k`` is the slowest selector's select() plus online() (its first call in a
round, with the node order recomputed as after ``add``), each the median of --sel-reps.
As a cross-check the utility selection is also run once with a forecast the selectors cannot
vectorise (one forecast call per node) and must choose the same nodes.

    python simulations/bench_scale.py [--nodes 1000 10000 100000] [--per-round 100] [--rounds 3]
        [--partitioner iid|sampled] [--discovery lazy|query] [--reps 1] [--sel-nodes 100000]
        [--no-federation] [--no-selection] [--profile DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "simulations"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_overhead import machine_load, run_plain, run_stack  # noqa: E402
from linkstate_trace import traced_linkstate  # noqa: E402

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


def run_side(name: str, settings: Settings, cpus: int, out_dir: Path) -> dict:
    """One run of ``name`` (flower | fedenergy) with Flower's delivery sweep traced; an
    exception is returned as ``error`` with the innermost frames of its stack, not raised."""
    with traced_linkstate(settings.nodes) as trace:
        try:
            if name == "flower":
                r = run_plain(settings, with_mod=False, num_cpus=cpus)
            else:
                r = run_stack(settings, cpus, out_dir)
        except Exception as err:  # noqa: BLE001  (what broke is the result)
            frames = traceback.extract_tb(err.__traceback__)[-4:]
            r = {
                "error": f"{type(err).__name__}: {err}",
                "stack": [f"{Path(f.filename).name}:{f.lineno} {f.name}: {f.line}" for f in frames],
            }
    r["linkstate"] = trace.as_dict()
    return r


def describe(r: dict) -> str:
    sweep = r["linkstate"]
    tail = f"{sweep['sweeps']:.0f} delivery sweeps, {sweep['get_message_ins_s']:.1f} s in them"
    if "error" in r:
        return f"FAILED: {r['error']} at {' <- '.join(reversed(r['stack']))}; {tail}"
    return (
        f"wall {r['total_s']:7.1f} s  peak rss {r['peak_rss_mb']:6.0f} MB "
        f"({r['peak_procs']} processes); {tail}"
    )


def summarize(runs: dict[str, list[dict]]) -> dict:
    """The figures of one node count: medians over the runs (ratios over the pairs)."""
    broke = {k: r["error"] for k, rs in runs.items() for r in rs if "error" in r}
    d: dict = {"broke": broke, "runs": runs}
    if broke:
        return d
    fl, fe = runs["flower"], runs["fedenergy"]
    pairs = list(zip(fe, fl, strict=True))

    def sweep(rs: list[dict]) -> float | None:
        per = [r["linkstate"]["s_per_sweep"] for r in rs if r["linkstate"]["s_per_sweep"]]
        return statistics.median(per) if per else None

    d.update(
        {
            "wall_ratio_vs_flower": statistics.median(
                x["total_s"] / y["total_s"] for x, y in pairs
            ),
            "rss_ratio_vs_flower": max(x["peak_rss_mb"] for x in fe)
            / max(y["peak_rss_mb"] for y in fl),
            # CPU of the whole process tree (less sensitive than wall to other load)
            "cpu_ratio_vs_flower": statistics.median(x["cpu_s"] / y["cpu_s"] for x, y in pairs),
            "wall_s": statistics.median(x["total_s"] for x in fe),
            "peak_rss_mb": max(x["peak_rss_mb"] for x in fe),
            "query_phase_s": statistics.median(x["round0_s"] - y["ready_s"] for x, y in pairs),
            "rounds_s": statistics.median(x["rounds_s"] for x in fe),
            "failed_calls": fe[0]["failed_calls"],
            "flower_wall_s": statistics.median(x["total_s"] for x in fl),
            "flower_peak_rss_mb": max(x["peak_rss_mb"] for x in fl),
            "flower_federation_s": statistics.median(x["federation_s"] for x in fl),
            # both sides' start -> round 0 done (Ray, registration, the server's round-0
            # evaluation; fedenergy's admission and ledger too) and the rounds after it
            "round0_s": statistics.median(x["round0_s"] for x in fe),
            "flower_round0_s": statistics.median(x["round0_s"] for x in fl),
            "flower_rounds_s": statistics.median(x["total_s"] - x["round0_s"] for x in fl),
            "flower_sweep_s": sweep(fl),
            "fedenergy_sweep_s": sweep(fe),
        }
    )
    return d


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
    for n in [] if a.no_federation else sorted(a.nodes):
        s = scale_settings(n, a.per_round, a.rounds, a.seed, a.discovery, a.partitioner)
        runs: dict[str, list[dict]] = {"flower": [], "fedenergy": []}
        for rep in range(a.reps):
            order = ["flower", "fedenergy"] if rep % 2 == 0 else ["fedenergy", "flower"]
            for name in order:
                r = run_side(name, s, cpus, tmp / f"n{n}-rep{rep}")
                runs[name].append(r)
                print(f"  {n} nodes {name:<9} {describe(r)}", flush=True)
        doc["nodes"][str(n)] = d = summarize(runs)
        if d["broke"]:
            print(f"{n} nodes: BROKE: " + "; ".join(f"{k}: {v}" for k, v in d["broke"].items()))
            continue
        print(
            f"{n} nodes: fedenergy ({a.discovery} discovery) {d['wall_s']:.1f} s vs Flower "
            f"{d['flower_wall_s']:.1f} s -> wall ratio {d['wall_ratio_vs_flower']:.2f} (goal <= "
            f"1.3), CPU ratio {d['cpu_ratio_vs_flower']:.2f}; start to round 0 done "
            f"{_s(d['round0_s'])} vs {_s(d['flower_round0_s'])}, "
            f"rounds {_s(d['rounds_s'])} vs {_s(d['flower_rounds_s'])}; peak RSS "
            f"{d['peak_rss_mb']:.0f} MB vs Flower {d['flower_peak_rss_mb']:.0f} MB -> ratio "
            f"{d['rss_ratio_vs_flower']:.2f} (goal <= 1.2); Flower's delivery sweep "
            f"{_s(d['flower_sweep_s'])} per sweep over {n} nodes",
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
