"""Run every benchmark in simulations/ and write docs/benchmarks.md (the figures the docs quote).

One command, sizes reduced where needed so the whole run stays under 30 minutes on a 2-core
machine:

    python simulations/run_benchmarks.py [--out docs/benchmarks.md]
        [--results docs/benchmark-results]
        [--only overhead scale ...] [--dry-run]

Each benchmark runs as its own process with ``--json`` into the results folder; its stdout and
stderr go to ``<name>.log`` beside it. The Markdown page lists the machine (CPU model, cores,
RAM, Python, flwr and torch versions, load average), the date, every figure and the exact
command that produced it. A benchmark that fails is reported as failed, with its log's tail;
the others still run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIM = "simulations"


def benchmarks(results: str) -> dict[str, list[str]]:
    """name -> argv (relative to the repository root), each writing ``results/<name>.json``."""
    r = results.rstrip("/")
    return {
        "meters": [f"{SIM}/bench_meters.py", "--n", "500", "--json", f"{r}/meters.json"],
        "overhead": [
            f"{SIM}/bench_overhead.py",
            *("--nodes", "20", "--rounds", "5", "--reps", "2"),
            *("--calls", "1000", "--train-pairs", "10"),
            *("--app-nodes", "10", "--app-rounds", "3", "--app-reps", "4", "--app-pairs", "20"),
            *("--json", f"{r}/overhead.json"),
        ],
        "scale": [
            f"{SIM}/bench_scale.py",
            *("--nodes", "1000", "10000", "100000", "--per-round", "100", "--rounds", "3"),
            *("--partitioner", "sampled", "--reps", "3"),  # 3 alternating pairs: wall is noisy
            *("--sel-nodes", "100000"),
            *("--json", f"{r}/scale.json"),
        ],
        "codecs": [
            f"{SIM}/bench_codecs.py",
            *("--rounds", "3", "--nodes", "10", "--codecs", "none,fp16,int8,topk:0.1,stc:0.09"),
            *("--extra-seeds", "1,2", "--no-repeat", "--reps", "50"),
            *("--json", f"{r}/codecs.json"),
        ],
        "energy_to_accuracy": [
            f"{SIM}/energy_to_accuracy.py",
            *("--fleets", "reference", "--nodes", "20", "--rounds", "5", "--cap-factor", "2"),
            *("--only", "utility+per-link", "utility+per-link, 0.4k, E=30"),
            *("--out", "runs/benchmarks/energy_to_accuracy"),
            *("--plot-dir", r),
            *("--json", f"{r}/energy_to_accuracy.json"),
        ],
    }


def machine() -> dict:
    """What the figures ran on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        ram_gib = psutil.virtual_memory().total / 2**30
    except Exception:  # noqa: BLE001
        ram_gib = float("nan")

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram_gib, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "flwr": version("flwr"),
        "torch": version("torch"),
        "ray": version("ray"),
    }


def load_avg() -> float:
    try:
        return round(os.getloadavg()[0], 1)
    except OSError:
        return float("nan")


def run_one(name: str, argv: list[str], results: Path, python: str) -> dict:
    log = results / f"{name}.log"
    cmd = [python, *argv]
    t0, load0 = time.monotonic(), load_avg()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, check=False)
    wall = time.monotonic() - t0
    tail = log.read_text(errors="replace").splitlines()[-15:]
    return {
        "name": name,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python " + " ".join(shlex.quote(a) for a in argv),
        "rc": proc.returncode,
        "wall_s": round(wall, 1),
        "load_avg": [load0, load_avg()],
        "log_tail": tail,
    }


# -- Markdown --------------------------------------------------------------------------------------
def _f(x, nd: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _json(results: Path, name: str) -> dict | None:
    p = results / f"{name}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def section_overhead(d: dict) -> list[str]:
    pc = d["per_call"]
    lines = [
        "| figure | value | goal |",
        "|---|---|---|",
        f"| wall ratio, mod / no mod (federation phase, median of {d['reps']} interleaved pairs) "
        f"| {_f(d.get('wall_ratio'), 3)} | ≤ 1.05 |",
        f"| wall ratio, whole run incl. Ray start/stop | {_f(d.get('total_wall_ratio'), 3)} | |",
        f"| CPU ratio, whole process tree | {_f(d.get('cpu_ratio'), 3)} | |",
        f"| wall overhead estimated from the per-call CPU | "
        f"{_f(100 * d['estimated_wall_overhead'], 3) if 'estimated_wall_overhead' in d else '–'}"
        " % | ≤ 5 % |",
        f"| **CPU per metered call, mod itself (worst kind)** | {_f(d['cpu_ms_per_call'], 3)} ms "
        "| ≤ 5 ms |",
        f"| CPU per call: train / evaluate / query | {_f(pc['train']['mod_ms'], 3)} / "
        f"{_f(pc['evaluate']['mod_ms'], 3)} / {_f(pc['query']['mod_ms'], 3)} ms | |",
        f"| CPU per metered call from the federations (tree CPU difference / calls; noisy) | "
        f"{_f(d.get('federation_cpu_ms_per_call'), 1)} ms | |",
        f"| real train handler CPU, without / with mod (in-process) | "
        f"{_f(d['train_handler_cpu_ms'], 1)} / {_f(d['train_with_mod_cpu_ms'], 1)} ms "
        f"(ratio {_f(d['in_process_train_ratio'], 3)}) | |",
    ]
    if "runs" in d:
        lines.append("")
        lines.append("| run | variant | federation s | total s | tree CPU s | peak RSS MB |")
        lines.append("|---|---|---|---|---|---|")
        for variant, runs in d["runs"].items():
            for i, r in enumerate(runs):
                fed = r.get("federation_s", r.get("rounds_s"))
                lines.append(
                    f"| {i + 1} | {variant} | {_f(fed, 1)} | {_f(r['total_s'], 1)} | "
                    f"{_f(r['cpu_s'], 1)} | {_f(r['peak_rss_mb'], 0)} |"
                )
    lines.append("")
    lines.append(
        f"MLP (the built-in digits task): {d['nodes']} nodes, {d['rounds']} rounds, fraction "
        f"{d['fraction']}, "
        f"fraction-evaluate {d['fraction_evaluate']}, {d.get('metered_calls_per_run', '–')} "
        "metered calls per run; load average at start/end "
        f"{_f(d['load_avg_1m'][0], 1)}/{_f(d['load_avg_1m'][1], 1)}."
    )
    if "cnn" in d:
        lines += [""] + section_overhead_cnn(d["cnn"])
    return lines


def section_overhead_cnn(c: dict) -> list[str]:
    """The example CNN app (examples/quickstart-energy) with and without the mod."""
    pc = c["per_call"]
    lines = [
        "Example CNN app (`examples/quickstart-energy`: conv-BatchNorm ×2, dropout, linear; "
        "its own handlers, FedAvg, the FLOPs counted automatically by the mod):",
        "",
        "| figure | value | goal |",
        "|---|---|---|",
        f"| wall ratio, mod / no mod (federation phase, median of {c['reps']} interleaved pairs) "
        f"| {_f(c.get('wall_ratio'), 3)} | ≤ 1.03 |",
        f"| wall ratio, whole run incl. Ray start/stop | {_f(c.get('total_wall_ratio'), 3)} | |",
        f"| CPU ratio, whole process tree | {_f(c.get('cpu_ratio'), 3)} | |",
        f"| wall overhead estimated from the per-call CPU (calls x worst kind / actors / wall) | "
        f"{_f(100 * c['estimated_wall_overhead'], 2) if 'estimated_wall_overhead' in c else '–'}"
        " % | ≤ 3 % |",
    ]
    for kind in ("train", "evaluate"):
        v = pc[kind]
        lines.append(
            f"| {kind} call CPU, without / with mod (in-process, FLOP counting included) | "
            f"{_f(v['handler_cpu_ms'], 1)} / {_f(v['with_mod_cpu_ms'], 1)} ms "
            f"(**{_f(v['mod_ms'], 2)} ms per call**, ratio {_f(v['ratio'], 3)}) | |"
        )
    if "runs" in c:
        lines += [
            "",
            "| run | variant | federation s | total s | tree CPU s | final accuracy |",
            "|---|---|---|---|---|---|",
        ]
        for variant, runs in c["runs"].items():
            for i, r in enumerate(runs):
                lines.append(
                    f"| {i + 1} | {variant} | {_f(r['federation_s'], 1)} | "
                    f"{_f(r['total_s'], 1)} | {_f(r['cpu_s'], 1)} | "
                    f"{_f(r['final_accuracy'], 3)} |"
                )
    lines += [
        "",
        f"{c['nodes']} nodes, {c['rounds']} rounds, the app's run config (fraction-train and "
        f"fraction-evaluate 0.5, 1 local epoch, batch 32, 160 training images per node), "
        f"{c.get('metered_calls_per_run', '–')} calls per run. The example's nodes seed no "
        "torch generator, so shuffling and dropout depend on which Ray actor serves which node "
        "and the final accuracy varies from run to run; the work per call does not.",
    ]
    return lines


def section_scale(d: dict) -> list[str]:
    lines = [
        "| nodes | fedenergy wall s | Flower FedAvg wall s | **wall ratio** (goal ≤ 1.3) | "
        "start → round 0 done s, fedenergy / Flower | rounds 1–3 s, fedenergy / Flower | "
        "peak RSS MB, fedenergy / Flower | **RSS ratio** (goal ≤ 1.2) | "
        "Flower's delivery sweep s (one pass over the nodes) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    broke = []
    for n, x in d["nodes"].items():
        if x.get("broke"):
            broke.append((n, x))
            lines.append(f"| {int(n):,} | broke (see below) | | | | | | | |")
            continue
        lines.append(
            f"| {int(n):,} | {_f(x.get('wall_s'), 1)} | {_f(x['flower_wall_s'], 1)} | "
            f"{_f(x['wall_ratio_vs_flower'], 2)} | {_f(x.get('round0_s'), 1)} / "
            f"{_f(x.get('flower_round0_s'), 1)} | {_f(x.get('rounds_s'), 1)} / "
            f"{_f(x.get('flower_rounds_s'), 1)} | {_f(x.get('peak_rss_mb'), 0)} / "
            f"{_f(x['flower_peak_rss_mb'], 0)} | {_f(x.get('rss_ratio_vs_flower'), 2)} | "
            f"{_f(x.get('flower_sweep_s'), 2)} |"
        )
    lines += [""]
    for n, x in broke:
        for side, err in x["broke"].items():
            run = next(r for r in x["runs"][side] if "error" in r)
            stack = " ← ".join(f"`{f}`" for f in reversed(run.get("stack", [])))
            lines.append(f"{int(n):,} nodes, {side}: **{err}** at {stack}.")
    for n, x in d["nodes"].items():
        checks = [
            r["linkstate"]["us_per_check"]
            for r in x["runs"]["flower"]
            if r.get("linkstate", {}).get("us_per_check")
        ]
        if checks and not x.get("broke"):
            fl, fe = x["runs"]["flower"], x["runs"]["fedenergy"]
            share = sorted(r["linkstate"]["get_message_ins_s"] / r["total_s"] for r in fl)
            pairs = ", ".join(
                f"{a['total_s'] / b['total_s']:.2f}" for a, b in zip(fe, fl, strict=True)
            )
            lines.append(
                f"{int(n):,} nodes: wall ratio of each pair {pairs}. Flower's delivery sweep "
                f"took {_f(x.get('flower_sweep_s'), 2)} s per pass over the nodes, "
                f"{_f(sorted(checks)[len(checks) // 2], 2)} µs per stored message checked, "
                f"{100 * share[len(share) // 2]:.0f} % of Flower's wall (medians of the Flower "
                "runs)."
            )
    reps = {len(x["runs"]["flower"]) for x in d["nodes"].values()}
    lines += [
        f"Partitioner `{d.get('partitioner', 'iid')}`, {'/'.join(map(str, sorted(reps)))} "
        "flower/fedenergy pair(s) per node count, alternating (medians; ratios are medians over "
        "the pairs). fedenergy runs with lazy discovery (no up-front profile query). Start → "
        "round 0: registration and the server's round-0 evaluation (fedenergy: also admitting "
        "every node unknown, the ledger's run record and the FLOP count per example); Ray and "
        "the actors start in the engine's own thread meanwhile, so their start-up lands in "
        "round 1 on both sides.",
    ]
    if d.get("selection") is None:
        return lines
    s = d["selection"]
    lines += [
        "",
        f"Selection over {s['nodes']:,} nodes, k = {s['k']} (FleetState of {s['nodes']:,} "
        f"NodeInfo built in {_f(s['fleet_build_s'], 2)} s, "
        f"{_f(s.get('fleet_mb'), 0)} MB; one EnergyAwareStrategy.forecast "
        f"{_f(s['forecast_us_per_node'], 1)} µs):",
        "",
        "| round | online() ms | RandomSelector ms | UtilityPerJouleSelector ms | "
        "Utility, one forecast call per node (same picks) ms |",
        "|---|---|---|---|---|",
    ]
    for r in ("round1", "round5"):
        x = s[r]
        lines.append(
            f"| {r[-1]} | {_f(x['online_ms'], 1)} | {_f(x['random_ms'], 1)} | "
            f"{_f(x['utility_ms'], 1)} | {_f(x.get('utility_per_node_forecast_ms'), 1)} |"
        )
    key = next(k for k in d if k.startswith("selection_ms_"))
    lines += [
        "",
        f"**{key}** (slowest selector + online(), goal < 50 ms): {_f(d[key], 1)} ms; "
        f"random selector + online(): {_f(s.get('random_selection_ms'), 1)} ms.",
        f"Load average at start/end {_f(d['load_avg_1m'][0], 1)}/{_f(d['load_avg_1m'][1], 1)}.",
    ]
    return lines


def section_meters(d: dict) -> list[str]:
    lines = ["| meter | µs per window (begin + end) |", "|---|---|"]
    lines += [f"| {x['meter']} | {_f(x['window_us'], 1)} |" for x in d["rows"]]
    return lines


def section_codecs(d: dict) -> list[str]:
    lines = [
        "| codec | upload B | bytes ratio | payload ratio | accuracy | Δ pts | encode ms | "
        "decode ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c, r in d.items():
        lines.append(
            f"| {c} | {_f(r['upload_bytes'], 0)} | {_f(r['bytes_ratio'])} | "
            f"{_f(r['payload_ratio'])} | {_f(r['accuracy'], 4)} | {_f(r['accuracy_delta'], 2)} | "
            f"{_f(r['encode_ms'], 3)} | {_f(r['decode_ms'], 3)} |"
        )
    return lines


def section_e2a(d: dict) -> list[str]:
    lines = [
        "| fleet | strategy | total J | total J, other infra model | vs FedAvg | rounds "
        "| final accuracy | reached target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fleet, res in d.items():
        for name, r in res.items():
            if not isinstance(r, dict):  # target_accuracy, targets, seeds, discovery
                continue
            lines.append(
                f"| {fleet} | {name} | {_f(r['total_j'], 1)} | "
                f"{_f(r.get('total_j_other_infra'), 1)} ({r.get('infra_model_other', '-')}) | "
                f"{_f(r['ratio_vs_fedavg'], 3)} | "
                f"{r['rounds']} | {_f(r['final_accuracy'], 4)} | "
                f"{'yes' if r['reached_target'] else 'no'} |"
            )
    return lines


SECTIONS = {
    "overhead": ("Metering overhead (`bench_overhead.py`)", section_overhead),
    "scale": ("Scale against plain Flower (`bench_scale.py`)", section_scale),
    "meters": ("Meter read cost (`bench_meters.py`)", section_meters),
    "codecs": ("Uplink codecs (`bench_codecs.py`)", section_codecs),
    "energy_to_accuracy": ("Energy to accuracy (`energy_to_accuracy.py`)", section_e2a),
}


NOTES = """## How to read these figures

- **Overhead**: the same handlers (`fedenergy/sim/clientapp.py`) in a ClientApp with
  `mods=[energy_mod]` and one without mods, both driven by Flower's plain FedAvg ServerApp (same
  seed, same sampled nodes, same config and server evaluation), runs alternating. The per-call CPU
  is measured in-process: `energy_mod` around a stub handler that returns a real-shaped reply, minus
  the stub alone, interleaved blocks. The example CNN app arm runs the example's own handlers
  (`examples/quickstart-energy`) in a ClientApp with and without `energy_mod` under Flower's
  FedAvg (runs alternating); its per-call CPU is the real handler with the mod minus without,
  so the automatic FLOP counting (torch hooks, the memoised count) is inside it.
- **Scale**: fedenergy (`simulate`: mod, EnergyAwareStrategy with the random selector, ledger)
  against the same handlers without the mod under Flower's FedAvg, 100 nodes per round, every
  node holding data (`--partitioner sampled`: `max(1, 1437 // N)` digits rows drawn with
  replacement; with `iid` most nodes past 1,437 hold none, and a FedAvg round whose sampled
  nodes all hold 0 examples raises ZeroDivisionError in Flower's `aggregate_arrayrecords`:
  at 100,000 nodes 1,437 hold data, so a round of 100 samples none with probability
  (1 − 0.01437)^100 ≈ 0.24 and a 3-round run breaks about half the time, depending on the
  random node ids; fedenergy rejects the 0-example updates as failed calls and goes on).
  fedenergy uses lazy discovery (`--discovery lazy`): no profile query of every node before
  round 1. Flower's Simulation Engine delivers messages from one thread that sweeps all N nodes,
  `InMemoryLinkState.get_message_ins` walking every stored message for each node: a sweep costs
  N × stored messages, so at 100,000 nodes one pass with a round's 100 messages in the store
  takes seconds and sets the round's length on both sides (the "delivery sweep" column, traced
  by `simulations/linkstate_trace.py`). (With `--discovery query` the N queued QUERY messages
  make that N × N per sweep; see `bench_scale.py --discovery query`.)
- **Codecs** here run reduced (10 nodes, 3 rounds, 3 seeds for none and stc) to keep the whole
  command short: their accuracy deltas are noise-dominated and read mid-climb. The full
  comparison (30 rounds, 10 paired seeds, deltas after rounds 10, 20 and 30) is in
  docs/compression.md.
- **Energy to accuracy** here runs reduced (20 nodes, one fleet, one seed, FedAvg 5 rounds),
  with profiles declared at registration (the script's default `--discovery declared`); the
  full benchmark (40 nodes, two fleets, three seeds, declared and lazy) is in
  docs/strategies.md.
- **Selection**: `fleet.online()` plus one selector over a FleetState of 100,000 nodes with a
  real `EnergyAwareStrategy.forecast` (vectorised over numpy columns of the fleet state); the
  last column is the same selection with one forecast call per node (a check: same picks).
"""


def _dates(runs: list[dict], started: str) -> str:
    dates = sorted(r["date"] for r in runs if "date" in r)
    if not dates:
        return started
    if dates[0] == dates[-1]:
        return dates[0]
    return f"benchmarks finished between {dates[0]} and {dates[-1]}"


def render(runs: list[dict], results: Path, info: dict, started: str, total_s: float) -> str:
    rel = os.path.relpath(results, ROOT)
    out = [
        "# Benchmark results",
        "",
        "Written by `python simulations/run_benchmarks.py` (do not edit by hand: every figure "
        f"below comes from that command). Raw JSON and logs: `{rel}/`.",
        "",
        f"- date: {_dates(runs, started)}; the benchmarks took "
        f"{sum(r['wall_s'] for r in runs) / 60:.1f} min in all",
        f"- machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, {info['os']}",
        f"- software: Python {info['python']}, flwr {info['flwr']}, torch {info['torch']}, "
        f"ray {info['ray']}",
        f"- load average (1 min) at start/end: {_f(info['load_start'], 1)} / "
        f"{_f(info['load_end'], 1)}",
        "",
        "Timings come from a shared machine: other work ran beside the benchmarks, so absolute "
        "times are noisy. Ratios are taken from runs interleaved in the same process (A/B/A/B) "
        "and are the figures to compare; no test asserts on any timing.",
        "",
    ]
    for r in runs:
        title, fn = SECTIONS.get(r["name"], (r["name"], None))
        when = f", finished {r['date']}" if "date" in r else ""
        out += [f"## {title}", "", f"Command: `{r['command']}` ({r['wall_s']:.0f} s{when})", ""]
        d = _json(results, r["name"])
        if r["rc"] != 0 or d is None or fn is None:
            out += [f"**Failed** (exit code {r['rc']}); last lines of the log:", "", "```"]
            out += r["log_tail"] + ["```", ""]
            continue
        try:
            out += fn(d)
        except (KeyError, TypeError, ValueError, StopIteration) as err:
            out += [f"(could not tabulate: {err!r}; see `{rel}/{r['name']}.json`)"]
        out.append("")
    out += NOTES.splitlines()
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/benchmarks.md")
    ap.add_argument("--results", default="docs/benchmark-results")
    ap.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument(
        "--render-only", action="store_true", help="rewrite the page from the saved run.json"
    )
    a = ap.parse_args(argv)
    results = (ROOT / a.results).resolve()
    table = benchmarks(os.path.relpath(results, ROOT))
    names = [n for n in table if a.only is None or n in a.only]
    unknown = set(a.only or ()) - set(table)
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(table)}")
    if a.dry_run:
        for n in names:
            print("python " + " ".join(shlex.quote(x) for x in table[n]))
        return 0
    results.mkdir(parents=True, exist_ok=True)
    if a.render_only:
        meta = json.loads((results / "run.json").read_text())
    else:
        info = machine()
        info["load_start"] = load_avg()
        started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        t0 = time.monotonic()
        runs = []
        for n in names:
            print(f"== {n}: python {' '.join(table[n])}", flush=True)
            r = run_one(n, table[n], results, sys.executable)
            print(f"   exit {r['rc']} in {r['wall_s']:.0f} s", flush=True)
            runs.append(r)
        info["load_end"] = load_avg()
        meta = {
            "machine": info,
            "started": started,
            "total_s": time.monotonic() - t0,
            "runs": runs,
        }
        previous = results / "run.json"
        if a.only is not None and previous.exists():  # keep the other benchmarks' last results
            old = json.loads(previous.read_text())
            rerun = {r["name"] for r in runs}
            kept = [r for r in old.get("runs", []) if r["name"] not in rerun]
            meta["runs"] = sorted(kept + runs, key=lambda r: list(table).index(r["name"]))
            meta["partial_reruns"] = [*old.get("partial_reruns", []), f"{started}: {sorted(rerun)}"]
        (results / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    page = render(meta["runs"], results, meta["machine"], meta["started"], meta["total_s"])
    out = ROOT / a.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    print(f"wrote {os.path.relpath(out, ROOT)} and {os.path.relpath(results, ROOT)}/")
    return 0 if all(r["rc"] == 0 for r in meta["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
