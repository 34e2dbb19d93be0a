"""Energy to accuracy across regimes: ``energy_to_accuracy.py --tasks``.

A regime is a task (model and data, docs/workloads.md) at a federation size. For each task,
fleet and seed, FedAvg runs its fixed rounds and its final accuracy is the target; every other
strategy of :data:`REGIME_STRATEGIES` runs until it reaches it (``energy_to_accuracy.run_fleet``).
Each cell (task, fleet, infrastructure model) then gives per strategy its saving against the
same seed's FedAvg under that model, mean with min-max over seeds.

Infrastructure models (physics.infra): with ``--infra-runs shared`` (the default) every
strategy runs once, under the per-byte model, and the ``power`` cell reads the same runs'
totals under the power model; with ``separate`` the strategies run again under the power
model, so their choices follow its forecasts (FedAvg's choices ignore energy: one run serves
both).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

# (nodes, FedAvg rounds, fraction) per built-in task: sized so one seed of every strategy on
# both fleets fits a few minutes of a 2-core machine, with at least two participants a round
# at 0.4x FedAvg's (floor(0.4 * fraction * nodes))
TASK_SIZES: dict[str, tuple[int, int, float]] = {
    "digits": (40, 15, 0.25),
    "cnn": (40, 15, 0.25),
    "chars": (10, 8, 0.5),
    "resnet": (10, 5, 0.5),
}
INFRA_MODELS = ("per-byte", "power")

# FedAvg; the compute-blind energy-aware strategy at 30 local epochs (the MLP's best trade:
# compute for rounds of communication); and priced local work, which chooses each node's epochs
# and codec from the joules it forecasts (docs/strategies.md)
REGIME_STRATEGIES: dict[str, dict] = {
    "fedavg": dict(selector="random", compression="fixed", codec="none"),
    "utility+per-link, 0.4k, E=30": dict(
        selector="utility", compression="per-link", fraction_scale=0.4, local_epochs=30
    ),
    "utility+priced, 0.4k": dict(
        selector="utility", compression="per-link", fraction_scale=0.4, local_work="priced"
    ),
}


def parse_task(spec: str) -> tuple[str, tuple[int, int, float]]:
    """``TASK``, ``TASK:NxR`` or ``TASK:NxR@F`` -> (task, (nodes, rounds, fraction)); a task
    without a size takes :data:`TASK_SIZES` (digits' for a task not in it). The size is the
    part after the last ``:`` when it starts with a digit, so a user's ``module:attribute``
    task keeps its colon. ValueError with the expected form for a malformed size."""
    task, _, size = spec.rpartition(":")
    if not size[:1].isdigit():
        task, size = spec, ""
    nodes, rounds, fraction = TASK_SIZES.get(task, TASK_SIZES["digits"])
    if not task:
        raise ValueError(f"--tasks {spec!r}: no task name (TASK, TASK:NxR or TASK:NxR@F)")
    if size:
        try:
            dims, _, frac = size.partition("@")
            n, r = dims.lower().split("x")
            nodes, rounds = int(n), int(r)
            fraction = float(frac) if frac else fraction
        except ValueError:
            raise ValueError(
                f"--tasks {spec!r}: expected TASK, TASK:NxR or TASK:NxR@F "
                "(e.g. cnn:40x15 or chars:10x8@0.5)"
            ) from None
    if nodes < 1 or rounds < 1 or not 0 < fraction <= 1:
        raise ValueError(f"--tasks {spec!r}: nodes and rounds >= 1, fraction in (0, 1]")
    return task, (nodes, rounds, fraction)


def _reading(run: dict, fedavg: dict, model: str, shared: bool) -> tuple[float, float] | None:
    """(this run's joules, FedAvg's joules) under ``model``, or None when this run does not
    belong to that model's cell (``shared``: a run is read under the other model too)."""
    if run["infra_model"] == model:
        own = run["total_j"]
    elif shared and run["infra_model_other"] == model:
        own = run["total_j_other_infra"]
    else:
        return None
    ref = fedavg["total_j"] if fedavg["infra_model"] == model else fedavg["total_j_other_infra"]
    return own, ref


def cell(per_seed: list[dict], model: str, shared: bool = True) -> dict:
    """One (task, fleet) under infrastructure model ``model``: per strategy the saving
    against the same seed's FedAvg (``savings_x`` = 1 / mean ratio, ``_min``/``_max`` over
    seeds), whether every seed reached FedAvg's accuracy (``shared``: the strategies ran under
    one model only and are read under ``model`` too), mean joules, rounds, accuracy, and
    the share of the joules that was compute (training, evaluation, start-up)."""
    out: dict[str, dict] = {}
    for key in per_seed[0]["strategies"]:
        name = key.split(" @")[0]
        rows = []
        for p in per_seed:
            run, fed = p["strategies"][key], p["strategies"]["fedavg"]
            got = _reading(run, fed, model, shared or key == "fedavg")
            if got is not None:
                rows.append((run, *got))
        if len(rows) != len(per_seed):
            continue
        ratios = [own / ref for _, own, ref in rows]
        out[name] = {
            "savings_x": 1.0 / statistics.fmean(ratios),
            "savings_x_min": min(1.0 / r for r in ratios),
            "savings_x_max": max(1.0 / r for r in ratios),
            "reached_target": all(run["reached_target"] for run, _, _ in rows),
            "seeds_reached": sum(bool(run["reached_target"]) for run, _, _ in rows),
            "total_j": statistics.fmean(own for _, own, _ in rows),
            "compute_share": statistics.fmean(run["compute_j"] / own for run, own, _ in rows),
            "rounds": statistics.fmean(run["rounds"] for run, _, _ in rows),
            "final_accuracy": statistics.fmean(run["final_accuracy"] for run, _, _ in rows),
            "accounted_in_run": rows[0][0]["infra_model"] == model,
            "per_seed": [
                {
                    "total_j": own,
                    "savings_x": ref / own,
                    "rounds": run["rounds"],
                    "final_accuracy": run["final_accuracy"],
                    "reached_target": run["reached_target"],
                    "compute_j": run["compute_j"],
                    "network_j": own - run["compute_j"],
                    "failed_calls": run["failed_calls"],
                    "wall_s": run["wall_s"],
                    "by_link_j": run["by_link_j"] if run["infra_model"] == model else None,
                }
                for run, own, ref in rows
            ],
        }
    initial = [p["strategies"]["fedavg"].get("initial_accuracy") for p in per_seed]
    return {
        "target_accuracy": statistics.fmean(p["target_accuracy"] for p in per_seed),
        "targets": [p["target_accuracy"] for p in per_seed],
        # the untrained model's accuracy: a target near it measures no learning
        "initial_accuracy": (
            statistics.fmean(initial) if all(a is not None for a in initial) else None
        ),
        "strategies": out,
    }


def best(strategies: dict) -> tuple[str, dict] | None:
    """The strategy of largest saving among those that reached the target on every seed."""
    ok = [(n, s) for n, s in strategies.items() if n != "fedavg" and s["reached_target"]]
    return max(ok, key=lambda ns: ns[1]["savings_x"]) if ok else None


def table_lines(doc: dict) -> list[str]:
    """The printed table: a line per task, fleet, infrastructure model and strategy."""
    lines = [
        f"{'task':<7} {'fleet':<10} {'infra':<8} {'strategy':<30} {'total J':>10} "
        f"{'saving':>7} {'[min-max]':>13} {'rounds':>6} {'accuracy':>8} {'target':>6} "
        f"{'compute':>7}"
    ]
    for task, fleets in doc["regimes"].items():
        for fleet, models in fleets.items():
            for model, c in models.items():
                n = len(c["targets"])
                for name, s in c["strategies"].items():
                    span = f"[{s['savings_x_min']:.1f}-{s['savings_x_max']:.1f}]"
                    lines.append(
                        f"{task:<7} {fleet:<10} {model:<8} {name:<30} {s['total_j']:10.1f} "
                        f"{s['savings_x']:6.1f}x {span:>13} {s['rounds']:6.1f} "
                        f"{s['final_accuracy']:8.4f} {str(s['seeds_reached']) + '/' + str(n):>6} "
                        f"{100 * s['compute_share']:6.1f}%"
                    )
    return lines


def headline_lines(doc: dict) -> list[str]:
    """One line per cell: FedAvg's target and joules, and the best strategy's saving."""
    lines = [
        f"{'task':<7} {'fleet':<10} {'infra':<8} {'initial':>7} {'target':>6} {'FedAvg J':>10} "
        f"{'best strategy (every seed reached the target)':<46} {'saving':>7} {'[min-max]':>13}"
    ]
    for task, fleets in doc["regimes"].items():
        for fleet, models in fleets.items():
            for model, c in models.items():
                fed = c["strategies"]["fedavg"]
                top = best(c["strategies"])
                name, s = top if top else ("(none reached it on every seed)", None)
                tail = (
                    f"{s['savings_x']:6.1f}x [{s['savings_x_min']:.1f}-{s['savings_x_max']:.1f}]"
                    if s
                    else ""
                )
                init = c.get("initial_accuracy")  # absent from tables written before it
                init_s = "-" if init is None else f"{init:.3f}"
                lines.append(
                    f"{task:<7} {fleet:<10} {model:<8} {init_s:>7} {c['target_accuracy']:6.3f} "
                    f"{fed['total_j']:10.1f} {name:<46} {tail}"
                )
    return lines


def start_doc(args, path: str | None, append: bool) -> dict:
    """The regimes document to fill: a new one, or with ``append`` the one at ``path`` (its
    other tasks kept, the ones run now replaced). ValueError when the file's seeds, discovery
    or round cap differ from this run's: their cells would not compare."""
    new = {
        "seeds": args.seeds,
        "discovery": args.discovery,
        "cap_factor": args.cap_factor,
        "infra_runs": {},
        "strategies": {},
        "sizes": {},
        "regimes": {},
    }
    if not (append and path and Path(path).is_file()):
        return new
    try:
        doc = json.loads(Path(path).read_text())
        old = {k: doc[k] for k in ("seeds", "discovery", "cap_factor")}
        if isinstance(doc.get("infra_runs"), str):  # written before it was kept per task
            doc["infra_runs"] = {t: doc["infra_runs"] for t in doc["regimes"]}
        if "strategies" not in doc:  # the same: the names in each task's cells
            doc["strategies"] = {
                t: list(next(iter(next(iter(f.values())).values()))["strategies"])
                for t, f in doc["regimes"].items()
            }
        for key in ("infra_runs", "strategies", "sizes", "regimes"):
            if not isinstance(doc[key], dict):
                raise TypeError(key)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--append: {path} is not a regimes table ({err})") from None
    if old != {k: new[k] for k in old}:
        raise ValueError(
            f"--append: {path} has {old}, this run { ({k: new[k] for k in old}) }: "
            "cells of other seeds, discovery or round cap do not compare"
        )
    return doc


def write_json(path: str | Path, doc: dict) -> None:
    """The regimes document (as far as it has run: written after every task)."""
    Path(path).write_text(json.dumps(doc, indent=2))
