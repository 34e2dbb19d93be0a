"""What delays error-feedback codecs: participation, and what the residual is worth.

A Flower-free replica of ``bench_codecs.py``'s federation (the same task, data split, seeded
selection, training loop, codecs and sample-weighted averaging, in one process) for sweeps too
many for real federations. ``--check`` first runs the real Flower federation for one seed and
codec and requires the replica's accuracy after every round to be the same.

For each setting it prints the mean paired accuracy difference (codec - none, in points) after
the given rounds over the seeds, with its standard error:

* ``fraction``: clients per round (1.0: every client every round, so no residual waits);
* ``decay``: multiply a client's residual by this at each of its participations (1.0: plain
  error feedback; 0.0: no error feedback at all).

    python simulations/codec_delay.py [--codec stcb:0.02] [--seeds 20] [--rounds 10]
        [--fractions 0.5,1.0] [--decays 1.0,0.5,0.0] [--check]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from statistics import mean, stdev

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedenergy import codecs as C  # noqa: E402
from fedenergy.server.selectors import RandomSelector  # noqa: E402
from fedenergy.settings import Settings  # noqa: E402
from fedenergy.sim.tasks import DataConfig, evaluate, get_task, train_epochs  # noqa: E402


def replica(s: Settings, codec: str, fraction: float, decay: float = 1.0) -> list[float]:
    """Server accuracy after each round of ``s``'s federation with ``codec`` on the uplink."""
    torch.set_num_threads(1)
    task = get_task(s.task)
    cfg = DataConfig(s.nodes, s.seed, s.partitioner, s.dirichlet_alpha)
    data = [task.client_data(i, cfg)[0] for i in range(s.nodes)]
    test = task.server_test_data(cfg)
    model = task.make_model()
    glob = {k: v.detach().numpy().astype(np.float32).copy() for k, v in model.state_dict().items()}
    template = {k: v.shape for k, v in glob.items()}
    spec = C.parse_codec(codec)
    residual: list[dict | None] = [None] * s.nodes
    select = RandomSelector(seed=s.seed, stream=0)
    k = max(1, int(np.floor(fraction * s.nodes + 1e-9)))
    curve = []
    for rnd in range(1, s.rounds + 1):
        updates, weights = [], []
        for i in select.select(rnd, list(range(s.nodes)), k):
            if len(data[i]) == 0:
                continue
            model.load_state_dict({n: torch.from_numpy(v.copy()) for n, v in glob.items()})
            train_epochs(model, data[i], s.local_epochs, s.batch_size, s.lr, s.seed * 100003 + rnd)
            new = {n: v.detach().numpy().astype(np.float32) for n, v in model.state_dict().items()}
            update = {n: new[n] - glob[n] for n in glob}
            if spec.name == "none":
                updates.append(update)
            else:
                res = residual[i]
                if res is not None and decay != 1.0:
                    res = {n: (v * decay).astype(np.float32) for n, v in res.items()}
                rng = np.random.default_rng([s.seed, rnd, i])
                payload, residual[i] = C.encode(
                    update, spec, res if C.uses_error_feedback(spec) else None, rng
                )
                updates.append(C.decode(payload, spec, template))
            weights.append(len(data[i]))
        total = sum(weights)
        glob = {
            n: (
                glob[n] + sum(w * u[n] for w, u in zip(weights, updates, strict=True)) / total
            ).astype(np.float32)
            for n in glob
        }
        model.load_state_dict({n: torch.from_numpy(v.copy()) for n, v in glob.items()})
        curve.append(evaluate(model, test)[1])
    return curve


def check(s: Settings, codec: str) -> None:
    """Run the real Flower federation and require the replica to match it round by round."""
    import tempfile

    from fedenergy.sim.engine import simulate

    out = tempfile.mkdtemp(prefix="codec-delay-check-")
    summary = simulate(replace(s, codec=codec, out=out))
    real = [r["accuracy"] for r in summary["per_round"] if r["round"] > 0]
    mine = replica(s, codec, s.fraction)
    if not np.allclose(real, mine, rtol=0, atol=1e-6):
        raise SystemExit(f"replica differs from Flower:\n  flower  {real}\n  replica {mine}")
    print(f"check: replica = Flower federation for {codec}, seed {s.seed}, {s.rounds} rounds")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codec", default="stcb:0.02")
    p.add_argument("--seeds", type=int, default=20, help="seeds 0 .. N-1")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--fractions", default="0.5,1.0")
    p.add_argument("--decays", default="1.0,0.5,0.0")
    p.add_argument("--check", action="store_true", help="first compare with a Flower run")
    a = p.parse_args(argv)
    base = Settings(nodes=a.nodes, rounds=a.rounds, fraction_evaluate=0.0).validate()
    if a.check:
        check(base, a.codec)
    fractions = [float(x) for x in a.fractions.split(",")]
    decays = [float(x) for x in a.decays.split(",")]
    settings = [(f, 1.0) for f in fractions] + [(fractions[0], d) for d in decays if d != 1.0]
    print(f"{a.codec}: accuracy vs none after round {a.rounds}, mean over {a.seeds} paired seeds")
    print(f"{'fraction':>8} {'decay':>6} {'delta pts':>10} {'(se)':>6}")
    for fraction, decay in settings:
        deltas = []
        for seed in range(a.seeds):
            s = replace(base, seed=seed)
            ref = replica(s, "none", fraction)[-1]
            deltas.append(100.0 * (replica(s, a.codec, fraction, decay)[-1] - ref))
        se = stdev(deltas) / len(deltas) ** 0.5 if len(deltas) > 1 else float("nan")
        print(f"{fraction:>8g} {decay:>6g} {mean(deltas):>+10.2f} {se:>6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
