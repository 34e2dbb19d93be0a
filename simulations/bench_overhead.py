"""Cost of the energy mod: the same federation with and without it, and its CPU per call.

Two measurements, both printed and (with ``--json``) written:

1. **In-process, per call** (``cpu_ms_per_call``): ``energy_mod`` around a stub handler that
   returns a real-shaped reply (a fresh ArrayRecord of the task's model, metrics, work record)
   against the stub alone, interleaved, many repetitions, ``time.process_time``; the
   difference is the mod's own CPU per metered call (bytes both ways, profile, report, the
   fixed point on the reply size). Done for train, evaluate and query messages. Beside it, a
   real train handler with and without the mod, interleaved (``in_process_train_ratio``).
2. **Federation, A/B interleaved** (``wall_ratio``, ``cpu_ratio``): Flower's Simulation Engine,
   the same handlers (``fedenergy/sim/clientapp.py``) in a ClientApp *with*
   ``mods=[energy_mod]`` and one *without* mods, both driven by Flower's plain FedAvg ServerApp
   (our EnergyAwareStrategy rejects replies without reports), same seed, same sampled nodes
   (Python's ``random`` is seeded before every run, FedAvg samples with it), same
   train/evaluate config, same server evaluation. The only difference is the mod. Runs
   alternate plain/mod/plain/mod...
   ``wall_ratio`` is the median over pairs of the federation phase (ServerApp main after all
   nodes registered: rounds, client calls, aggregation); ``total_wall_ratio`` includes Ray's
   start-up and shutdown; ``cpu_ratio`` is the CPU time of the whole process tree (driver, Ray
   daemons, actors; sampled with psutil). With ``--stack`` a third variant, the full
   fedenergy run (``simulate``: mod + EnergyAwareStrategy + profile query + ledger), is
   interleaved too and reported as ``stack_total_wall_ratio`` against plain.
   ``estimated_wall_overhead`` = metered calls x the mod's CPU per train call / actors /
   the plain federation's wall: what the mod can add at most if it is on the critical path,
   a figure that, unlike the measured ratios, is not drowned by run-to-run noise.

Timing on a shared machine is noisy: the ratios are medians of interleaved pairs, and the
load average at start and end is recorded. Prints figures, asserts none.

    python simulations/bench_overhead.py [--nodes 20] [--rounds 5] [--reps 3] [--stack]
        [--calls 2000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fedenergy.settings import Settings  # noqa: E402


# -- process-tree sampling ------------------------------------------------------------------------
class TreeSampler:
    """Samples the RSS sum and per-process CPU time of this process and all its descendants
    (Ray's daemons and actors included) every ``interval`` seconds, in a thread.

    ``peak_rss_mb``: the largest sum seen (over-counts pages shared between processes).
    ``cpu_s``: per process, the last CPU time (user+system) seen minus the one at start; CPU
    spent after a process's last sample before it exits is missed (at most one interval each).
    """

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.root = psutil.Process()
        self.peak_rss = 0
        self.peak_procs = 0
        self._cpu: dict[tuple[int, float], float] = {}
        self._base: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _procs(self):
        try:
            return [self.root, *self.root.children(recursive=True)]
        except self._psutil.Error:
            return [self.root]

    def sample(self, into: dict | None = None) -> None:
        rss, n = 0, 0
        for p in self._procs():
            try:
                with p.oneshot():
                    key = (p.pid, p.create_time())
                    t = p.cpu_times()
                    cpu = t.user + t.system
                    mem = p.memory_info().rss
            except self._psutil.Error:
                continue
            (into if into is not None else self._cpu)[key] = cpu
            rss, n = rss + mem, n + 1
        if into is None and rss > self.peak_rss:
            self.peak_rss, self.peak_procs = rss, n

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeSampler:
        self.sample(self._base)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    @property
    def cpu_s(self) -> float:
        return sum(max(0.0, c - self._base.get(k, 0.0)) for k, c in self._cpu.items())

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss / 2**20


# -- the plain Flower side -------------------------------------------------------------------------
def plain_client_app(with_mod: bool):
    """fedenergy's own handlers in a ClientApp with ``mods=[simulated_faults, energy_mod]`` or
    with the simulated faults only (the same fleet behaviour in both arms; without the energy
    mod the handlers' small work record stays in the reply: a ConfigRecord of about 30 bytes
    that FedAvg ignores)."""
    from flwr.clientapp import ClientApp

    import fedenergy.sim.clientapp as ca
    from fedenergy.client.mod import energy_mod
    from fedenergy.sim.faults import simulated_faults

    app = ClientApp(mods=[simulated_faults, energy_mod] if with_mod else [simulated_faults])
    app.train()(ca.train)
    app.evaluate()(ca.evaluate_local)
    app.query()(ca.query)
    return app


def backend_config(num_cpus: int) -> dict:
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": num_cpus,
            "num_gpus": 0,
            "logging_level": "error",
            "log_to_driver": False,
            "include_dashboard": False,
        },
    }


def quiet() -> None:
    import logging
    import warnings

    from fedenergy.sim.engine import prepare_environment

    prepare_environment()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _marked(evaluate_fn, out: dict):
    """``evaluate_fn`` that notes in ``out["round0_at"]`` when round 0's evaluation is done
    (FedAvg evaluates the initial model before round 1, as fedenergy commits round 0)."""
    if evaluate_fn is None:
        return None

    def evaluate(server_round, arrays):
        res = evaluate_fn(server_round, arrays)
        if server_round == 0:
            out["round0_at"] = time.monotonic()
        return res

    return evaluate


def run_plain(settings: Settings, with_mod: bool, num_cpus: int, evaluate: bool = True) -> dict:
    """One federation with Flower's FedAvg ServerApp (no energy-aware strategy, no profile
    query, no ledger): wait for every node, then ``settings.rounds`` rounds of FedAvg sampling
    ``fraction`` / ``fraction_evaluate`` of the nodes, the server evaluating the global model
    each round exactly as fedenergy does. Returns wall/CPU/memory figures."""
    quiet()
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from fedenergy.plan import plan_run
    from fedenergy.server.coordinator import server_evaluator, wait_for_nodes

    plan = plan_run(settings)
    n = settings.nodes
    k_train = max(1, int(settings.fraction * n + 1e-9))
    k_eval = int(settings.fraction_evaluate * n + 1e-9)
    out: dict = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            t_start = time.monotonic()
            wait_for_nodes(grid, n)
            out["registered_s"] = time.monotonic() - t_start
            out["ready_at"] = time.monotonic()
            random.seed(settings.seed)
            torch.manual_seed(settings.seed)
            cfg = dict(plan.message_config)
            strategy = FedAvg(
                fraction_train=settings.fraction,
                fraction_evaluate=settings.fraction_evaluate,
                min_train_nodes=k_train,
                min_evaluate_nodes=max(k_eval, 0),
                min_available_nodes=n,
            )
            t0 = time.monotonic()
            strategy.start(
                grid=grid,
                initial_arrays=ArrayRecord(plan.task.make_model().state_dict()),
                num_rounds=settings.rounds,
                timeout=settings.round_timeout_s,
                train_config=ConfigRecord({"lr": settings.lr, **cfg}),
                evaluate_config=ConfigRecord(dict(cfg)),
                evaluate_fn=_marked(
                    server_evaluator(plan.task, plan.task.server_test_data(plan.data))
                    if evaluate
                    else None,
                    out,
                ),
            )
            out["federation_s"] = time.monotonic() - t0
        except BaseException as err:  # surfaced after the engine stops
            out["error"] = err

    t0 = time.monotonic()
    with TreeSampler() as sampler:
        run_simulation(
            server_app=server_app,
            client_app=plain_client_app(with_mod),
            num_supernodes=n,
            backend_config=backend_config(num_cpus),
        )
    if "error" in out:
        raise out["error"]
    if "federation_s" not in out:
        raise RuntimeError("the plain federation ended without a result")
    return {
        "total_s": time.monotonic() - t0,
        "federation_s": out["federation_s"],
        "registered_s": out["registered_s"],
        "ready_s": out["ready_at"] - t0,
        "round0_s": out["round0_at"] - t0 if "round0_at" in out else None,
        "cpu_s": sampler.cpu_s,
        "peak_rss_mb": sampler.peak_rss_mb,
        "peak_procs": sampler.peak_procs,
        "calls": settings.rounds * (k_train + k_eval),
    }


def run_stack(settings: Settings, num_cpus: int, out_dir: Path) -> dict:
    """The full fedenergy run (``simulate``): mod, EnergyAwareStrategy, profile query, ledger.
    ``round0_s`` is when the profile query (and round 0's commit) is done, from the start."""
    quiet()
    from fedenergy.sim.engine import simulate

    marks: dict[int, float] = {}
    t0 = time.monotonic()
    with TreeSampler() as sampler:
        summary = simulate(
            replace(settings, out=str(out_dir)),
            on_round=lambda o: marks.setdefault(o.server_round, time.monotonic() - t0),
            num_cpus=num_cpus,
        )
    total = time.monotonic() - t0
    failed = sum(r["failed"] for r in summary["per_round"])
    return {
        "total_s": total,
        "round0_s": marks.get(0),
        "rounds_s": total - marks.get(0, 0.0),
        "cpu_s": sampler.cpu_s,
        "peak_rss_mb": sampler.peak_rss_mb,
        "peak_procs": sampler.peak_procs,
        "failed_calls": failed,
        "final_accuracy": summary.get("final_accuracy"),
    }


# -- in-process, per call --------------------------------------------------------------------------
def _setup_in_process(settings: Settings):
    """A Context, real train/evaluate/query messages and stub handlers returning real-shaped
    replies, for calling the mod directly (no Flower runtime)."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    import fedenergy.sim.clientapp as ca
    from fedenergy.plan import plan_run

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 42, 1
    ctx = Context(
        run_id=1,
        node_id=42,
        node_config={"partition-id": 3, "num-partitions": settings.nodes},
        state=RecordDict(),
        run_config={},
    )
    plan = plan_run(settings)
    model = plan.task.make_model()
    arrays = ArrayRecord(model.state_dict())
    cfg = {**plan.message_config, "lr": settings.lr, "server-round": 1}
    cfg.update({"fe-device": "rpi4", "fe-link": "wifi"})  # as EnergyAwareStrategy sends it

    def message(kind: str, with_arrays: bool) -> Message:
        content = {"config": ConfigRecord(dict(cfg))}
        if with_arrays:
            content["arrays"] = arrays
        return Message(RecordDict(content), message_type=kind, dst_node_id=42)

    msgs = {
        "train": message(MessageType.TRAIN, True),
        "evaluate": message(MessageType.EVALUATE, True),
        "query": message(MessageType.QUERY, False),
    }
    handlers = {"train": ca.train, "evaluate": ca.evaluate_local, "query": ca.query}
    # one real reply per kind; the stub rebuilds a fresh reply of the same shape every call
    templates = {}
    for kind, msg in msgs.items():
        reply = handlers[kind](msg, ctx)
        templates[kind] = {k: v for k, v in reply.content.items()}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def stub(kind: str):
        def handler(msg: Message, _ctx: Context) -> Message:
            content = {}
            for key, rec in templates[kind].items():
                if isinstance(rec, ArrayRecord):
                    content[key] = ArrayRecord(state)  # fresh, as the handler builds it
                else:
                    content[key] = type(rec)(dict(rec))
            return Message(RecordDict(content), reply_to=msg)

        return handler

    return ctx, msgs, handlers, stub


def per_call_cpu(settings: Settings, calls: int, train_pairs: int) -> dict:
    """CPU ms of the mod itself per call, by message kind, and the real train call's ratio."""
    from fedenergy.client.mod import energy_mod

    ctx, msgs, handlers, stub = _setup_in_process(settings)
    out: dict = {}
    for kind, msg in msgs.items():
        h = stub(kind)
        for _ in range(50):  # warm caches (profiles, fleet assignment, FLOP counts)
            energy_mod(msg, ctx, h)
        base, metered = [], []
        block = max(calls // 20, 1)
        for _ in range(20):  # interleaved blocks: stub alone, then the mod around the stub
            c0 = time.process_time()
            for _ in range(block):
                h(msg, ctx)
            c1 = time.process_time()
            for _ in range(block):
                energy_mod(msg, ctx, h)
            c2 = time.process_time()
            base.append((c1 - c0) / block)
            metered.append((c2 - c1) / block)
        out[kind] = {
            "stub_ms": 1e3 * statistics.median(base),
            "with_mod_ms": 1e3 * statistics.median(metered),
            "mod_ms": 1e3 * (statistics.median(metered) - statistics.median(base)),
        }
    # real train handler, with and without the mod, interleaved pairs
    h = handlers["train"]
    plain, metered = [], []
    for _ in range(train_pairs):
        c0 = time.process_time()
        h(msgs["train"], ctx)
        c1 = time.process_time()
        energy_mod(msgs["train"], ctx, h)
        c2 = time.process_time()
        plain.append(c1 - c0)
        metered.append(c2 - c1)
    out["train_handler_cpu_ms"] = 1e3 * statistics.median(plain)
    out["train_with_mod_cpu_ms"] = 1e3 * statistics.median(metered)
    out["in_process_train_ratio"] = statistics.median(metered) / statistics.median(plain)
    return out


def profile_mod(settings: Settings, calls: int, path: str | None) -> str:
    """cProfile of ``calls`` metered train calls around the stub handler (the mod's own work)."""
    import cProfile
    import io
    import pstats

    from fedenergy.client.mod import energy_mod

    ctx, msgs, _, stub = _setup_in_process(settings)
    h = stub("train")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        energy_mod(msgs["train"], ctx, h)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
    if path:
        prof.dump_stats(path)
    return buf.getvalue()


# -- the example CNN app (examples/quickstart-energy) ----------------------------------------------
EXAMPLE = ROOT / "examples" / "quickstart-energy"


def example_app(nodes: int, rounds: int):
    """The example app read from its directory (run config, rounds set), with the directory
    on sys.path and PYTHONPATH (the Ray workers import its handlers) until the process ends."""
    from fedenergy.sim.app_runner import load_app

    path = str(EXAMPLE)
    if path not in sys.path:
        sys.path.insert(0, path)
    old = os.environ.get("PYTHONPATH")
    if path not in (old or "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (path, old) if p)
    return load_app(EXAMPLE, rounds=rounds)


def example_client_app(with_mod: bool, run_config: dict, profiles):
    """The example's own handlers in a ClientApp with ``mods=[energy_mod]`` (the example's
    ClientApp as written) or without mods; each virtual node sees the app's run config and
    knows its fleet profile (as under ``fedenergy simulate --app``) in both arms."""
    from flwr.clientapp import ClientApp
    from quickstart_energy import client_app as example

    from fedenergy import energy_mod
    from fedenergy.sim.app_runner import RunConfigClientApp
    from fedenergy.sim.node_profiles import ProfiledClientApp

    app = ClientApp(mods=[energy_mod] if with_mod else [])
    app.train()(example.train)
    app.evaluate()(example.evaluate)
    return ProfiledClientApp(RunConfigClientApp(app, run_config), profiles)


def run_example(settings: Settings, with_mod: bool, num_cpus: int) -> dict:
    """One federation of the example app's handlers under Flower's FedAvg ServerApp (no
    EnergyAware, no ledger): the example's fractions, learning rate and central evaluation,
    seeded; the only difference between the arms is the mod."""
    quiet()
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from fedenergy.plan import plan_run
    from fedenergy.server.coordinator import wait_for_nodes

    app = example_app(settings.nodes, settings.rounds)  # first: puts the example on the path
    from quickstart_energy.server_app import global_evaluate
    from quickstart_energy.task import Net

    cfg = app.run_config
    plan = plan_run(settings)
    n = settings.nodes
    k_train = max(1, int(float(cfg["fraction-train"]) * n + 1e-9))
    k_eval = int(float(cfg["fraction-evaluate"]) * n + 1e-9)
    out: dict = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            wait_for_nodes(grid, n)
            random.seed(settings.seed)
            torch.manual_seed(settings.seed)
            strategy = FedAvg(
                fraction_train=float(cfg["fraction-train"]),
                fraction_evaluate=float(cfg["fraction-evaluate"]),
                min_train_nodes=k_train,
                min_evaluate_nodes=k_eval,
                min_available_nodes=n,
            )
            t0 = time.monotonic()
            result = strategy.start(
                grid=grid,
                initial_arrays=ArrayRecord(Net().state_dict()),
                num_rounds=settings.rounds,
                train_config=ConfigRecord({"lr": float(cfg["lr"])}),
                evaluate_fn=global_evaluate,
            )
            out["federation_s"] = time.monotonic() - t0
            final = result.evaluate_metrics_serverapp
            out["final_accuracy"] = float(final[max(final)]["accuracy"])
        except BaseException as err:  # surfaced after the engine stops
            out["error"] = err

    t0 = time.monotonic()
    with TreeSampler() as sampler:
        run_simulation(
            server_app=server_app,
            client_app=example_client_app(with_mod, cfg, plan.profiles),
            num_supernodes=n,
            backend_config=backend_config(num_cpus),
        )
    if "error" in out:
        raise out["error"]
    if "federation_s" not in out:
        raise RuntimeError("the example federation ended without a result")
    return {
        "total_s": time.monotonic() - t0,
        "federation_s": out["federation_s"],
        "final_accuracy": out["final_accuracy"],
        "cpu_s": sampler.cpu_s,
        "peak_rss_mb": sampler.peak_rss_mb,
        "calls": settings.rounds * (k_train + k_eval),
    }


def example_per_call_cpu(nodes: int, pairs: int) -> dict:
    """CPU ms of the example's real train and evaluate calls with and without ``energy_mod``
    (interleaved pairs, one torch thread): the difference is the mod's cost per call on the CNN,
    the automatic FLOP counting included (hooks on every module call and optimizer step, the
    count from the process-wide memo after the first call of each shape)."""
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedenergy import energy_mod

    app = example_app(nodes, 1)  # first: puts the example on the path
    from quickstart_energy import client_app as example
    from quickstart_energy.task import Net

    torch.set_num_threads(1)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 42, 1
    ctx = Context(1, 42, {"partition-id": 0, "num-partitions": nodes}, RecordDict(), app.run_config)
    arrays = ArrayRecord(Net().state_dict())
    cfg = {"lr": float(app.run_config["lr"]), "server-round": 1, "fe-device": "rpi4"}
    out: dict = {}
    for kind, handler in (("train", example.train), ("evaluate", example.evaluate)):
        content = RecordDict({"arrays": arrays, "config": ConfigRecord(dict(cfg))})
        msg = Message(content, message_type=getattr(MessageType, kind.upper()), dst_node_id=42)
        for _ in range(2):  # warm: data set and partitioner built, FLOP memo filled
            handler(msg, ctx)
            energy_mod(msg, ctx, handler)
        plain, metered = [], []
        for i in range(pairs):
            order = (False, True) if i % 2 == 0 else (True, False)  # each goes first in turn
            for metering in order:
                c0 = time.process_time()
                if metering:
                    energy_mod(msg, ctx, handler)
                else:
                    handler(msg, ctx)
                (metered if metering else plain).append(time.process_time() - c0)
        out[kind] = {
            "handler_cpu_ms": 1e3 * statistics.median(plain),
            "with_mod_cpu_ms": 1e3 * statistics.median(metered),
            "mod_ms": 1e3 * (statistics.median(metered) - statistics.median(plain)),
            "ratio": statistics.median(metered) / statistics.median(plain),
        }
    return out


def example_section(a: argparse.Namespace, cpus: int) -> dict:
    """The example CNN app: CPU per call in-process and, with ``--app-reps``, interleaved
    federations with and without the mod."""
    settings = Settings(nodes=a.app_nodes, rounds=a.app_rounds, seed=a.seed).validate()
    doc: dict = {"nodes": a.app_nodes, "rounds": a.app_rounds, "reps": a.app_reps}
    doc["per_call"] = example_per_call_cpu(a.app_nodes, a.app_pairs)
    doc["cpu_ms_per_train_call"] = doc["per_call"]["train"]["mod_ms"]
    doc["cpu_ms_per_call"] = max(v["mod_ms"] for v in doc["per_call"].values())  # worst kind
    print(f"example CNN app, in-process CPU per call (median of {a.app_pairs} interleaved pairs):")
    for kind, v in doc["per_call"].items():
        print(
            f"  {kind:<9} handler {v['handler_cpu_ms']:7.1f} ms  with mod "
            f"{v['with_mod_cpu_ms']:7.1f} ms -> mod {v['mod_ms']:+6.2f} ms/call "
            f"(ratio {v['ratio']:.3f}, automatic FLOP counting included)",
            flush=True,
        )
    if a.app_reps <= 0:
        return doc
    runs: dict[str, list[dict]] = {"plain": [], "mod": []}
    for rep in range(a.app_reps):
        for name in ("plain", "mod") if rep % 2 == 0 else ("mod", "plain"):
            r = run_example(settings, name == "mod", cpus)
            runs[name].append(r)
            print(
                f"  rep {rep + 1} {name:<5} total {r['total_s']:6.1f} s  federation "
                f"{r['federation_s']:6.1f} s  cpu {r['cpu_s']:6.1f} s  "
                f"accuracy {r['final_accuracy']:.3f}",
                flush=True,
            )
    pairs = list(zip(runs["mod"], runs["plain"], strict=True))
    calls = runs["plain"][0]["calls"]
    fed_wall = statistics.median(x["federation_s"] for x in runs["plain"])
    doc.update(
        {
            "wall_ratio": statistics.median(
                x["federation_s"] / y["federation_s"] for x, y in pairs
            ),
            "total_wall_ratio": statistics.median(x["total_s"] / y["total_s"] for x, y in pairs),
            "cpu_ratio": statistics.median(x["cpu_s"] / y["cpu_s"] for x, y in pairs),
            "metered_calls_per_run": calls,
            "estimated_wall_overhead": calls
            * doc["cpu_ms_per_call"]
            / 1e3
            / min(cpus, a.app_nodes)
            / fed_wall,
            "runs": runs,
        }
    )
    print(
        f"example CNN app federation ({a.app_nodes} nodes, {a.app_rounds} rounds, {calls} "
        f"calls per run, median of {a.app_reps} interleaved pairs): wall ratio mod/plain "
        f"{doc['wall_ratio']:.3f} (federation phase), {doc['total_wall_ratio']:.3f} (whole run); "
        f"CPU ratio {doc['cpu_ratio']:.3f}; estimated from the per-call CPU "
        f"{100 * doc['estimated_wall_overhead']:.2f} %"
    )
    return doc


def machine_load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--fraction-evaluate", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3, help="interleaved federation pairs (0: none)")
    ap.add_argument("--stack", action="store_true", help="also interleave the full fedenergy run")
    ap.add_argument("--calls", type=int, default=2000, help="in-process calls per message kind")
    ap.add_argument("--train-pairs", type=int, default=20, help="real train calls, each way")
    ap.add_argument("--num-cpus", type=int, default=0, help="Ray CPUs (0: all)")
    ap.add_argument("--profile", metavar="PATH", help="cProfile the mod; write pstats here")
    ap.add_argument("--app-nodes", type=int, default=10, help="example CNN app: nodes")
    ap.add_argument("--app-rounds", type=int, default=3, help="example CNN app: rounds")
    ap.add_argument(
        "--app-reps", type=int, default=3, help="example CNN app: interleaved pairs (0: none)"
    )
    ap.add_argument(
        "--app-pairs", type=int, default=10, help="example CNN app: in-process call pairs (0: skip)"
    )
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    a = ap.parse_args(argv)
    settings = Settings(
        nodes=a.nodes,
        rounds=a.rounds,
        fraction=a.fraction,
        fraction_evaluate=a.fraction_evaluate,
        seed=a.seed,
    ).validate()
    cpus = a.num_cpus or os.cpu_count() or 1
    load0 = machine_load()
    doc: dict = {
        "nodes": a.nodes,
        "rounds": a.rounds,
        "fraction": a.fraction,
        "fraction_evaluate": a.fraction_evaluate,
        "seed": a.seed,
        "reps": a.reps,
        "host": platform.node(),
        "cpus": os.cpu_count(),
    }
    t = per_call_cpu(settings, a.calls, a.train_pairs)
    doc["per_call"] = {k: t[k] for k in ("train", "evaluate", "query")}
    doc["cpu_ms_per_call"] = max(v["mod_ms"] for v in doc["per_call"].values())
    doc["cpu_ms_per_train_call"] = t["train"]["mod_ms"]
    for k in ("train_handler_cpu_ms", "train_with_mod_cpu_ms", "in_process_train_ratio"):
        doc[k] = t[k]
    print(f"in-process, CPU per call (median of 20 interleaved blocks of {a.calls // 20}):")
    for kind, v in doc["per_call"].items():
        print(
            f"  {kind:<9} stub {v['stub_ms']:7.3f} ms  with mod {v['with_mod_ms']:7.3f} ms  "
            f"-> mod {v['mod_ms']:6.3f} ms/call"
        )
    print(
        f"  real train handler {t['train_handler_cpu_ms']:.1f} ms CPU, with the mod "
        f"{t['train_with_mod_cpu_ms']:.1f} ms (ratio {t['in_process_train_ratio']:.3f})",
        flush=True,
    )
    if a.profile:
        print(profile_mod(settings, 500, a.profile))
    if a.reps > 0:
        runs: dict[str, list[dict]] = {"plain": [], "mod": []}
        if a.stack:
            runs["stack"] = []
        tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
        names = list(runs)
        for rep in range(a.reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]  # rotate who goes first
            for name in order:
                if name == "stack":
                    r = run_stack(settings, cpus, tmp / f"stack{rep}")
                else:
                    r = run_plain(settings, name == "mod", cpus)
                runs[name].append(r)
                fed = r.get("federation_s", r.get("rounds_s"))
                print(
                    f"  rep {rep + 1} {name:<5} total {r['total_s']:6.1f} s  federation "
                    f"{fed:6.1f} s  cpu {r['cpu_s']:6.1f} s  peak rss {r['peak_rss_mb']:6.0f} MB",
                    flush=True,
                )

        def med_ratio(key: str, num: str, den: str = "plain") -> float:
            return statistics.median(
                x[key] / y[key] for x, y in zip(runs[num], runs[den], strict=True)
            )

        calls = runs["plain"][0]["calls"]
        # the mod's measured CPU per call, spread over the actors, against the federation's wall
        fed_wall = statistics.median(x["federation_s"] for x in runs["plain"])
        est = calls * doc["cpu_ms_per_train_call"] / 1e3 / min(cpus, a.nodes) / fed_wall
        extra_cpu = statistics.median(
            x["cpu_s"] - y["cpu_s"] for x, y in zip(runs["mod"], runs["plain"], strict=True)
        )
        doc.update(
            {
                "wall_ratio": med_ratio("federation_s", "mod"),
                "total_wall_ratio": med_ratio("total_s", "mod"),
                "cpu_ratio": med_ratio("cpu_s", "mod"),
                "federation_cpu_ms_per_call": 1e3 * extra_cpu / calls,
                "metered_calls_per_run": calls,
                "estimated_wall_overhead": est,
                "runs": runs,
            }
        )
        if a.stack:
            doc["stack_total_wall_ratio"] = med_ratio("total_s", "stack")
            doc["stack_cpu_ratio"] = med_ratio("cpu_s", "stack")
        print(
            f"federation ({a.nodes} nodes, {a.rounds} rounds, {calls} metered calls per run, "
            f"median of {a.reps} interleaved pairs):\n"
            f"  wall ratio mod/plain {doc['wall_ratio']:.3f} (federation phase), "
            f"{doc['total_wall_ratio']:.3f} (whole run incl. Ray start/stop)\n"
            f"  CPU ratio (process tree) {doc['cpu_ratio']:.3f}; "
            f"{doc['federation_cpu_ms_per_call']:+.1f} ms CPU per metered call (noisy)\n"
            f"  estimated from the per-call CPU: {calls} calls x "
            f"{doc['cpu_ms_per_train_call']:.2f} ms / {min(cpus, a.nodes)} actors = "
            f"{100 * est:.3f} % of the {fed_wall:.0f} s federation"
        )
        if a.stack:
            print(
                f"  full fedenergy stack vs plain: wall {doc['stack_total_wall_ratio']:.3f}, "
                f"CPU {doc['stack_cpu_ratio']:.3f}"
            )
    if a.app_pairs > 0:
        doc["cnn"] = example_section(a, cpus)
    doc["load_avg_1m"] = [load0, machine_load()]
    print(
        f"goal: wall overhead <= 5 % on the MLP, <= 3 % on the example CNN, CPU <= 5 ms per "
        f"call; mod CPU {doc['cpu_ms_per_call']:.3f} ms/call (worst kind, stub handler); "
        f"load average {load0:.1f} -> {doc['load_avg_1m'][1]:.1f} on {os.cpu_count()} cores"
    )
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
