"""Benchmark the uplink codecs in real simulated federations (one process, one run per codec).

For each codec: the same task, nodes, rounds and seed; reports

* bytes_ratio    -- mean upload bytes per train call in the ledger (whole reply message as the
                    energy mod measures it: payload, metrics, energy report), none / codec;
* payload_ratio  -- float32 update bytes / encoded payload bytes (the packed blob only);
* accuracy       -- server-side accuracy after the last round, and its delta vs none (points);
* encode_ms / decode_ms -- median time of compression.encode / decode on a real local update
                    of the task's model (plus pack/unpack), many repetitions.

    python simulations/bench_codecs.py [--rounds 10] [--nodes 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean, median

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedenergy import compression as C  # noqa: E402
from fedenergy.ledger import Ledger  # noqa: E402
from fedenergy.settings import Settings  # noqa: E402

CODECS = ("none", "fp16", "int8", "int8:channel", "topk:0.01", "topk:0.1", "qsgd:16", "qsgd:4")
REPEAT = "none (repeat)"  # a second none run: the run-to-run noise of the accuracy


def real_update(settings: Settings) -> dict[str, np.ndarray]:
    """One local training of partition 0 from the initial model: new - global."""
    from fedenergy.tasks import DataConfig, get_task, train_epochs

    task = get_task(settings.task)
    model = task.make_model()
    start = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    cfg = DataConfig(settings.nodes, settings.seed, settings.partitioner, settings.dirichlet_alpha)
    data, _ = task.client_data(0, cfg)
    train_epochs(model, data, settings.local_epochs, settings.batch_size, settings.lr, 0)
    return {
        k: v.detach().numpy().astype(np.float32) - start[k] for k, v in model.state_dict().items()
    }


def time_codec(update: dict, spec: C.CodecSpec, reps: int) -> tuple[float, float]:
    template = {k: v.shape for k, v in update.items()}
    rng = np.random.default_rng(0)
    residual = None
    enc, dec = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        payload, residual = C.encode(update, spec, residual, rng)
        blob = C.pack_payload(payload, spec, template)
        t1 = time.perf_counter()
        C.decode(C.unpack_payload(blob, spec, template), spec, template)
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
    return 1e3 * median(enc), 1e3 * median(dec)


def run_codec(base: Settings, codec: str, out: Path) -> tuple[float, float, float]:
    from dataclasses import replace

    from fedenergy.simulate import simulate

    settings = replace(base, codec=codec, out=str(out))
    summary = simulate(settings)
    with Ledger(out / "ledger.sqlite") as ledger:
        rows = ledger.energy_rows(summary["run_id"])
    up = [r["bytes"] for r in rows if r["call"] == "train" and r["phase"] == "upload"]
    failed = sum(r["failed"] for r in summary["per_round"])
    if failed:
        print(f"warning: {codec}: {failed} failed train calls", file=sys.stderr)
    return mean(up), summary["final_accuracy"], summary["network_j"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reps", type=int, default=200, help="timing repetitions per codec")
    p.add_argument("--codecs", default=",".join(CODECS), help="comma-separated codec list")
    p.add_argument(
        "--no-repeat", action="store_true", help="skip the second none run (noise floor)"
    )
    p.add_argument("--json", default=None, help="write the results as JSON to this path")
    args = p.parse_args(argv)
    codecs = [C.parse_codec(c).label() for c in args.codecs.split(",")]
    if "none" not in codecs:
        codecs.insert(0, "none")
    if not args.no_repeat:
        codecs.append(REPEAT)
    base = Settings(
        nodes=args.nodes, rounds=args.rounds, seed=args.seed, fraction_evaluate=0.0
    ).validate()
    update = real_update(base)
    template = {k: v.shape for k, v in update.items()}
    f32 = sum(v.size for v in update.values()) * 4
    results: dict[str, dict] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-codecs-"))
    for codec in codecs:
        spec = C.parse_codec("none" if codec == REPEAT else codec)
        t0 = time.monotonic()
        name = "none_repeat" if codec == REPEAT else codec.replace(":", "_")
        up, acc, net_j = run_codec(base, spec.label(), tmp / name)
        enc_ms, dec_ms = time_codec(update, spec, args.reps)
        results[codec] = {
            "upload_bytes": up,
            "payload_bytes": C.expected_nbytes(spec, template),
            "payload_ratio": f32 / C.expected_nbytes(spec, template),
            "accuracy": acc,
            "network_j": net_j,
            "encode_ms": enc_ms,
            "decode_ms": dec_ms,
        }
        print(f"  {codec}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    ref = results["none"]
    for r in results.values():
        r["bytes_ratio"] = ref["upload_bytes"] / r["upload_bytes"]
        r["accuracy_delta"] = 100.0 * (r["accuracy"] - ref["accuracy"])
    n_params = f32 // 4
    print(
        f"task {base.task}, {base.nodes} nodes, {base.rounds} rounds, fraction {base.fraction}, "
        f"seed {base.seed}; model {n_params} parameters = {f32} B float32"
    )
    head = (
        f"{'codec':<14}{'upload B':>10}{'bytes ratio':>12}{'payload B':>10}{'payload ratio':>14}"
        f"{'accuracy':>10}{'delta pts':>10}{'encode ms':>10}{'decode ms':>10}"
    )
    print(head)
    print("-" * len(head))
    for codec, r in results.items():
        print(
            f"{codec:<14}{r['upload_bytes']:>10.0f}{r['bytes_ratio']:>11.2f}x"
            f"{r['payload_bytes']:>10d}{r['payload_ratio']:>13.2f}x{r['accuracy']:>10.4f}"
            f"{r['accuracy_delta']:>+10.2f}{r['encode_ms']:>10.3f}{r['decode_ms']:>10.3f}"
        )
    if args.json:
        keys = ("bytes_ratio", "payload_ratio", "accuracy", "accuracy_delta", "encode_ms")
        doc = {
            c: {k: r[k] for k in (*keys, "decode_ms", "upload_bytes")} for c, r in results.items()
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
