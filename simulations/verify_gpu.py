"""Check the NVML meter on a real NVIDIA GPU (issue #18 item 7): one short, prepared script.

(a) **Counter windows.** A torch training loop keeps the GPU busy in a background thread. For
each window length (default 0.01, 0.1, 1, 10 and 60 s) the script opens and closes an
:class:`~fedenergy.meters.nvml.NvmlMeter` window and compares the meter's machine figure for
the GPU with an independent reading of the same hardware counter: a separate ``nvidia-smi
--query-gpu=timestamp,total_energy_consumption -lms 20`` process, whose time-stamped samples
are interpolated at the window's begin and end (wall clock). Goal: windows of 1 s and more
within 2 % of the independent reading.

(b) **Two clients on one GPU.** Two processes train on the same GPU at the same time, one with
about four times the work per step of the other; each measures its own window with the meter.
Printed per client: the GPU's machine joules, the joules attributed to that client (by its GPU
use), its GPU share and the flags. The two attributed parts should add up to about the machine
figure and split it in the order of the work.

(c) **A GPU-backed simulation** (``--sim``): ``fedenergy simulate --gpus-per-client 0.5`` on 4
nodes for 2 rounds, and the host's measured energy of the experiment from its summary.

Prints a table per part and writes everything with ``--json PATH``. Exits with status 2 and a
sentence saying what is missing where there is no usable NVIDIA GPU (no CUDA torch, no
``pynvml``, no ``nvidia-smi``).

    python simulations/verify_gpu.py [--windows 0.01 0.1 1 10 60] [--gpu 0] [--sim]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_left
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SMI_PERIOD_MS = 20
SMI_TIME_FORMAT = "%Y/%m/%d %H:%M:%S.%f"


# -- pure helpers (tested without a GPU) ------------------------------------------------------
def parse_smi_line(line: str) -> tuple[float, float] | None:
    """``"2026/12/01 12:00:00.123, 123456"`` → (epoch seconds, joules); None if unparsable.

    nvidia-smi prints ``total_energy_consumption`` in mJ with ``nounits``.
    """
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 2:
        return None
    try:
        t = datetime.strptime(parts[0], SMI_TIME_FORMAT).timestamp()
        return t, float(parts[1]) / 1000.0
    except ValueError:
        return None


def interpolate(samples: list[tuple[float, float]], t: float) -> float | None:
    """Counter value at time ``t`` by linear interpolation between the samples around it."""
    times = [s[0] for s in samples]
    i = bisect_left(times, t)
    if i == 0 or i >= len(samples):
        return None
    (t0, e0), (t1, e1) = samples[i - 1], samples[i]
    if t1 <= t0:
        return e1
    return e0 + (e1 - e0) * (t - t0) / (t1 - t0)


def window_reading(
    samples: list[tuple[float, float]], t_begin: float, t_end: float
) -> float | None:
    """Joules of the independent counter between two wall-clock times (None if not covered)."""
    a, b = interpolate(samples, t_begin), interpolate(samples, t_end)
    return None if a is None or b is None else b - a


def missing_gpu_reason() -> str | None:
    """Why this host cannot run the check, or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device (a CPU build of torch, or no NVIDIA GPU)"
    try:
        import pynvml  # noqa: F401
    except ImportError:
        return "pynvml is missing: pip install 'fedenergy[nvidia]'"
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi is not on PATH (needed for the independent reading)"
    return None


# -- GPU work --------------------------------------------------------------------------------
def train_loop(stop: threading.Event, gpu: int, width: int) -> None:
    """Train a small MLP on random data on ``cuda:gpu`` until ``stop`` is set."""
    import torch

    dev = torch.device(f"cuda:{gpu}")
    model = torch.nn.Sequential(
        torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 10)
    ).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(512, width, device=dev)
    y = torch.randint(0, 10, (512,), device=dev)
    while not stop.is_set():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        torch.cuda.synchronize(dev)


class SmiSampler:
    """A separate ``nvidia-smi`` process sampling the GPU's energy counter every 20 ms."""

    def __init__(self, gpu: int) -> None:
        self.samples: list[tuple[float, float]] = []
        self._proc = subprocess.Popen(
            [
                "nvidia-smi",
                f"--id={gpu}",
                "--query-gpu=timestamp,total_energy_consumption",
                "--format=csv,noheader,nounits",
                f"-lms={SMI_PERIOD_MS}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            s = parse_smi_line(line)
            if s is not None:
                self.samples.append(s)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)


def counter_windows(gpu: int, windows: list[float]) -> list[dict]:
    """Part (a): meter windows against the independent nvidia-smi series."""
    from fedenergy.meters.nvml import NvmlMeter

    meter = NvmlMeter(visible=str(gpu))
    avail = meter.probe()
    if avail.status != "available":
        raise SystemExit(f"NVML meter not available: {avail.reason}")
    stop = threading.Event()
    worker = threading.Thread(target=train_loop, args=(stop, gpu, 4096), daemon=True)
    worker.start()
    smi = SmiSampler(gpu)
    time.sleep(3.0)  # warm-up: clocks up, the sampler running
    rows = []
    try:
        for w in windows:
            t0 = time.time()
            meter.begin(f"w{w}")
            time.sleep(w)
            m = meter.end(f"w{w}")
            t1 = time.time()
            time.sleep(0.2)  # let the sampler pass the window's end
            ref = window_reading(list(smi.samples), t0, t1)
            comp = m.components.get(f"gpu[{gpu}]") or next(iter(m.components.values()))
            row = {
                "window_s": w,
                "meter_j": comp.joules,
                "nvidia_smi_j": ref,
                "rel_error": None if not ref else comp.joules / ref - 1.0,
                "flags": m.flags,
            }
            rows.append(row)
            ref_txt = "n/a" if ref is None else f"{ref:10.3f} J"
            err_txt = "" if row["rel_error"] is None else f"{100 * row['rel_error']:+.2f} %"
            print(
                f"window {w:>6.2f} s  meter {comp.joules:10.3f} J  nvidia-smi {ref_txt}  "
                f"{err_txt}  {' '.join(m.flags)}",
                flush=True,
            )
    finally:
        stop.set()
        worker.join(timeout=30)
        smi.close()
        meter.close()
    return rows


def client_main(gpu: int, width: int, seconds: float) -> None:
    """One of the two clients of part (b): train for ``seconds`` inside a meter window."""
    from fedenergy.meters.nvml import NvmlMeter

    meter = NvmlMeter(visible=str(gpu))
    meter.probe()
    stop = threading.Event()
    worker = threading.Thread(target=train_loop, args=(stop, gpu, width), daemon=True)
    worker.start()
    time.sleep(2.0)
    meter.begin("client")
    time.sleep(seconds)
    m = meter.end("client")
    stop.set()
    worker.join(timeout=30)
    share = m.shares.get(f"gpu[{gpu}]")
    print(
        json.dumps(
            {
                "width": width,
                "machine_j": m.total_j,
                "process_j": m.process_j,
                "unattributed_j": m.unattributed_j,
                "gpu_share": None if share is None else share.value,
                "flags": m.flags,
            }
        ),
        flush=True,
    )


def shared_gpu(gpu: int, seconds: float) -> list[dict]:
    """Part (b): two client processes on one GPU, each metering itself."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--client",
                str(width),
                "--gpu",
                str(gpu),
                "--seconds",
                str(seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for width in (1024, 4096)
    ]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=seconds + 120)
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    for r in out:
        print(
            f"client width {r['width']:>5}: machine {r['machine_j']:9.2f} J  attributed "
            f"{r['process_j']:9.2f} J  share {r['gpu_share']}  {' '.join(r['flags'])}",
            flush=True,
        )
    return out


def gpu_simulation() -> dict:
    """Part (c): a small simulation with half a GPU per virtual client."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "fedenergy.cli",
            "simulate",
            "--nodes",
            "4",
            "--rounds",
            "2",
            "--gpus-per-client",
            "0.5",
            "--out",
            tmp,
        ]
        subprocess.run(cmd, check=True, timeout=480, cwd=ROOT)
        summary = json.loads((Path(tmp) / "summary.json").read_text())
    exp = summary.get("experiment", {})
    print(f"simulation with --gpus-per-client 0.5: experiment {json.dumps(exp)[:400]}", flush=True)
    return exp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=float, nargs="+", default=[0.01, 0.1, 1.0, 10.0, 60.0])
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=10.0, help="part (b) window per client")
    ap.add_argument("--sim", action="store_true", help="also run part (c)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--client", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    reason = missing_gpu_reason()
    if reason is not None:
        print(f"verify_gpu: cannot run here: {reason}", file=sys.stderr)
        return 2
    if args.client is not None:
        client_main(args.gpu, args.client, args.seconds)
        return 0
    result = {"windows": counter_windows(args.gpu, args.windows)}
    result["shared_gpu"] = shared_gpu(args.gpu, args.seconds)
    if args.sim:
        result["simulation"] = gpu_simulation()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
