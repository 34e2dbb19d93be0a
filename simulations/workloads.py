"""The built-in tasks side by side: parameters, message size, FLOPs per sample, data shapes
(the table of docs/workloads.md). Counts only: nothing is trained.

    python simulations/workloads.py [--nodes 20] [--batch-size 32]
"""

from __future__ import annotations

import argparse

from fedenergy.physics.flops import FlopCache, num_parameters
from fedenergy.sim.tasks import TASKS, DataConfig


def row(name: str, nodes: int, batch: int) -> list[str]:
    """One task's figures, as strings."""
    task = TASKS[name]
    model = task.make_model()
    cfg = DataConfig(num_partitions=nodes)
    train, _ = task.client_data(0, cfg)
    sample = train.x[:1]
    counter = FlopCache()
    train_per_sample = counter.training(model, sample, batch, batch, 1) / batch
    model.eval()
    forward = counter.evaluation(model, sample, 1)
    message = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    sizes = [len(task.client_data(p, cfg)[0]) for p in range(nodes)]
    return [
        name,
        f"{num_parameters(model):,}",
        f"{message:,}",
        f"{forward / 1e6:.4g} M",
        f"{train_per_sample / 1e6:.4g} M",
        "x".join(str(d) for d in sample.shape[1:]),
        f"{sum(sizes) / nodes:.0f}",
        f"{len(task.server_test_data(cfg))}",
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    head = [
        "task",
        "parameters",
        "message (bytes)",
        "forward FLOP/sample",
        f"training FLOP/sample (batch {args.batch_size})",
        "sample",
        f"train samples/node ({args.nodes} nodes)",
        "server test",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in TASKS:
        print("| " + " | ".join(row(name, args.nodes, args.batch_size)) + " |")


if __name__ == "__main__":
    main()
