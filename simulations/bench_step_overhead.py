"""This host's per-step framework overhead and marginal FLOP rate of torch training on the
digits MLP, on one thread: the host measurements behind devices.toml's ``step_overhead_s`` and
the 21.9 %-of-peak efficiency of ``train_flops_per_s`` (docs/constants.md).

1. A tight training step (zero_grad, forward, cross-entropy, backward, SGD step) at batch sizes
   1 to 2048: a least-squares fit ``seconds = fixed + FLOPs / rate`` gives the fixed cost of a
   step and the marginal FLOP rate.
2. The project's own ``train_epochs`` (which also draws a permutation, indexes the batch and
   reads the loss each step) at batch 32: its seconds per step, less the FLOPs at that rate, is
   the per-step overhead a simulated device is charged.

Prints the figures; ``--json PATH`` writes them. Timings are medians; the host is shared, so
they vary run to run (the figures in devices.toml come from one run on a loaded 2-core host).

    python simulations/bench_step_overhead.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from fedenergy.physics.flops import FlopCache
from fedenergy.sim.tasks import Split, train_epochs


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def tight_steps(flops: FlopCache) -> dict:
    """Seconds per tight training step by batch size, and the fit."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rows = []
    for batch in (1, 8, 32, 128, 512, 2048):
        x, y = torch.randn(batch, 64), torch.randint(0, 10, (batch,))

        def step(x: torch.Tensor = x, y: torch.Tensor = y) -> None:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        for _ in range(200):
            step()
        reps = []
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(400):
                step()
            reps.append((time.perf_counter() - t) / 400)
        rows.append((batch, flops.training(model, x, batch, batch, 1), statistics.median(reps)))
    f = np.array([r[1] for r in rows], dtype=float)
    s = np.array([r[2] for r in rows])
    fixed, per_flop = np.linalg.lstsq(np.vstack([np.ones_like(f), f]).T, s, rcond=None)[0]
    return {"by_batch": rows, "fixed_s": float(fixed), "flops_per_s": float(1 / per_flop)}


def loop_steps(flops: FlopCache, rate: float) -> dict:
    """Seconds per step of train_epochs at batch 32 (1,280 examples, 5 epochs = 200 steps)."""
    x, y = torch.randn(1280, 64), torch.randint(0, 10, (1280,))
    model, data = _mlp(), Split(x, y)
    train_epochs(model, data, 5, 32, 0.1, 0)
    times = []
    for r in range(9):
        t = time.perf_counter()
        _, steps = train_epochs(model, data, 5, 32, 0.1, r)
        times.append(time.perf_counter() - t)
    per_step = statistics.median(times) / steps
    flop_s = flops.training(model, x, 1280, 32, 5) / steps / rate
    return {"steps": steps, "per_step_s": per_step, "overhead_s": per_step - flop_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    flops = FlopCache()
    tight = tight_steps(flops)
    loop = loop_steps(flops, tight["flops_per_s"])
    for batch, n, s in tight["by_batch"]:
        print(f"tight step, batch {batch:5d}: {n:10d} FLOPs {s * 1e6:8.1f} us")
    print(f"fit: {tight['fixed_s'] * 1e6:.1f} us fixed a step, {tight['flops_per_s']:.3g} FLOP/s")
    print(
        f"train_epochs, batch 32: {loop['per_step_s'] * 1e6:.1f} us a step, "
        f"overhead {loop['overhead_s'] * 1e6:.1f} us beyond its FLOPs"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"tight": tight, "train_epochs": loop}, fh, indent=2)


if __name__ == "__main__":
    main()
