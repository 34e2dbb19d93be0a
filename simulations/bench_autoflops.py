"""Cost of the energy mod's automatic FLOP counting, per train call, on the MLP and the CNN.

A plain Flower train handler (no fedenergy code: load the arrays, minibatch SGD, reply with
ArrayRecord + MetricRecord) is timed three ways, interleaved, ``--reps`` times each:

- ``plain``: the handler alone;
- ``counter``: the handler inside the torch work recorder (global module and optimizer hooks)
  followed by the count from the process-wide memo: the automatic counting's cost per call
  once every shape has been counted;
- ``mod``: ``energy_mod`` around the handler (bytes, counting, report, reply-size fixed point).

Beside it, ``cold_count_ms``: turning one call's records into FLOPs with an empty memo (the meta
copies and FlopCounterMode runs a process pays once per distinct module call).

Workloads: ``mlp`` is the digits task (64-32-10 MLP) on one partition of a 20-node fleet,
batch 32, 1 epoch (as ``fedenergy simulate``); ``cnn`` is the example app's CNN
(examples/quickstart-energy: 2 conv-BatchNorm blocks, dropout, linear) on 256 random 32x32x3
images, batch 32, 1 epoch; ``builtin`` is fedenergy's own train handler on the main job's
digits message: it states its work, so ``counter`` there is the hooks alone (the records are
never counted). One torch thread, like the simulated nodes.
CPU times of this process (``time.process_time``: on a shared host far steadier than wall time,
and the counting is CPU work in the calling thread), the garbage collector off inside a timed
run and run between rounds (each variant goes first in turn). Figures are the fastest of the
repetitions (other load on the host only ever adds time; medians are in the JSON too).

    python simulations/bench_autoflops.py [--reps 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "quickstart-energy"  # the CNN: quickstart_energy.task.Net
for path in (ROOT, EXAMPLE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402
from flwr.app import (  # noqa: E402
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402
from quickstart_energy.task import Net  # noqa: E402

from fedenergy.client.mod import energy_mod  # noqa: E402
from fedenergy.client.torch_work import TorchCalls  # noqa: E402
from fedenergy.physics.flops import PassCache  # noqa: E402


def workload(name: str):
    """(model factory, x, y, batch size) of a workload."""
    if name == "mlp":
        from fedenergy.sim.tasks import DataConfig, get_task

        task = get_task("digits")
        data, _ = task.client_data(0, DataConfig(num_partitions=20))
        return task.make_model, data.x, data.y, 32
    g = torch.Generator().manual_seed(0)
    return Net, torch.randn(256, 3, 32, 32, generator=g), torch.randint(0, 10, (256,)), 32


def plain_handler(make_model, x, y, batch):
    def train(msg: Message, context: Context) -> Message:
        model = make_model()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        model.train()
        for i in range(0, len(x), batch):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[i : i + batch]), y[i : i + batch])
            loss.backward()
            opt.step()
        metrics = MetricRecord({"train-loss": loss.item(), "num-examples": len(x)})
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
        return Message(content, reply_to=msg)

    return train


def _overhead(variant: list[float], plain: list[float]) -> float:
    """variant / plain - 1, from the fastest run of each (other load only ever adds time)."""
    return min(variant) / min(plain) - 1


def builtin_call():
    """fedenergy's own train handler (it states its work) and a main-job train message."""
    from fedenergy.plan import plan_run
    from fedenergy.settings import Settings
    from fedenergy.sim.clientapp import train

    plan = plan_run(Settings(nodes=20))
    cfg = ConfigRecord({"server-round": 1, "lr": 0.1, **plan.message_config})
    arrays = ArrayRecord(plan.task.make_model().state_dict())
    return train, RecordDict({"arrays": arrays, "config": cfg})


def measure(name: str, reps: int) -> dict:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 42, 1
    if name == "builtin":
        handler, content = builtin_call()
    else:
        make_model, x, y, batch = workload(name)
        handler = plain_handler(make_model, x, y, batch)
        arrays = ArrayRecord(make_model().state_dict())
        content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
    msg = Message(content, message_type=MessageType.TRAIN, dst_node_id=42)
    ctx = Context(1, 42, {"partition-id": 0, "num-partitions": 20}, RecordDict(), {})

    def counter() -> None:
        with TorchCalls() as seen:
            handler(msg, ctx)
        if name != "builtin":  # stated work: the mod never counts the records
            seen.counted()

    variants = {
        "plain": lambda: handler(msg, ctx),
        "counter": counter,
        "mod": lambda: energy_mod(msg, ctx, handler),
    }
    with TorchCalls(PassCache()) as cold:
        handler(msg, ctx)
    t0 = time.process_time()
    counted = cold.counted()
    cold_ms = (time.process_time() - t0) * 1e3
    for run in variants.values():  # warm-up, and the process-wide memo filled
        run()
    times: dict[str, list[float]] = {k: [] for k in variants}
    order = list(variants)
    for rep in range(reps):
        gc.collect()  # between rounds, never inside a timed run; each variant first in turn
        for k in order[rep % 3 :] + order[: rep % 3]:
            gc.disable()
            t0 = time.process_time()
            variants[k]()
            times[k].append((time.process_time() - t0) * 1e3)
            gc.enable()
    plain = times["plain"]
    return {
        "steps_per_call": counted.steps,
        "flops_per_call": counted.flops,
        **{f"{k}_ms": min(v) for k, v in times.items()},
        **{f"{k}_median_ms": statistics.median(v) for k, v in times.items()},
        "counter_overhead": _overhead(times["counter"], plain),
        "mod_overhead": _overhead(times["mod"], plain),
        "counter_us_per_call": 1e3 * (min(times["counter"]) - min(plain)),
        "cold_count_ms": cold_ms,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = {name: measure(name, args.reps) for name in ("mlp", "cnn", "builtin")}
    for name, r in out.items():
        print(
            f"{name}: {r['steps_per_call']} steps/call, plain {r['plain_ms']:.2f} ms, "
            f"counter {r['counter_ms']:.2f} ms ({r['counter_overhead']:+.1%}, "
            f"{r['counter_us_per_call']:.0f} us), "
            f"mod {r['mod_ms']:.2f} ms ({r['mod_overhead']:+.1%}), "
            f"cold count {r['cold_count_ms']:.1f} ms once per shape"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
