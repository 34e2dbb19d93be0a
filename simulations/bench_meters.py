"""Cost of one measurement window (begin + end) per meter kind, in microseconds.

RAPL, Jetson and battery read fake sysfs trees built in a temporary directory (the real parsing
code, real file reads); NVML uses the fake pynvml module from tests/fakes; the modeled fallback
and the full ``detect()`` MeterSet run on the real host. Attribution (psutil process tree +
/proc/stat) is part of every window and is also timed on its own. Prints figures, asserts none.

    python simulations/bench_meters.py [--n 2000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fedenergy.meters.attribution import PsutilAccounting  # noqa: E402
from fedenergy.meters.battery import BatteryMeter  # noqa: E402
from fedenergy.meters.cputime import default_accounting  # noqa: E402
from fedenergy.meters.detect import detect  # noqa: E402
from fedenergy.meters.jetson import JetsonMeter  # noqa: E402
from fedenergy.meters.model import CpuTdpModelMeter  # noqa: E402
from fedenergy.meters.nvml import NvmlMeter  # noqa: E402
from fedenergy.meters.rapl import RaplMeter  # noqa: E402
from tests.fakes import sysfs as fk  # noqa: E402
from tests.fakes.nvml import FakeGpu, FakeNVML  # noqa: E402


class _NoAccounting:
    def process_cpu_s(self) -> float:
        return 0.0

    def machine_cpu_s(self) -> float:
        return 0.0


def per_window_us(obj, n: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean cost of ``n`` begin+end pairs (µs)."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            obj.begin("w")
            obj.end("w")
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="windows per timing run")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    a = ap.parse_args(argv)
    none = _NoAccounting()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        r = Path(tmp)
        fk.rapl_zone(r / "rapl", "intel-rapl:0", "package-0", 10**9)
        fk.rapl_zone(r / "rapl", "intel-rapl:0:0", "dram", 10**8)
        fk.rapl_zone(r / "rapl", "intel-rapl:1", "package-1", 10**9)
        fk.rapl_zone(r / "rapl", "intel-rapl:1:0", "dram", 10**8)
        fk.jetson_hwmon(
            r / "jetson",
            {1: ("VDD_IN", 5000), 2: ("VDD_CPU_GPU_CV", 5000, 400), 3: ("VDD_SOC", 1000)},
        )
        fk.battery(r / "bat", power_uw=10_000_000)
        nv_counter = FakeNVML([FakeGpu("GPU-0", energy_mj=0)])
        nv_power = FakeNVML([FakeGpu("GPU-0", energy_mj=None)])
        meters = [
            (
                "rapl (2 packages + 2 dram, counter)",
                RaplMeter(str(r / "rapl"), poll=False, accounting=none),
            ),
            (
                "nvml counter (fake pynvml)",
                NvmlMeter(nv_counter, use_env=False, poll=False, accounting=none),
            ),
            (
                "nvml power-only (fake pynvml)",
                NvmlMeter(nv_power, use_env=False, poll=False, accounting=none),
            ),
            (
                "jetson 3 rails (sampled)",
                JetsonMeter(str(r / "jetson"), poll=False, accounting=none),
            ),
            ("battery (sampled)", BatteryMeter(str(r / "bat"), poll=False, accounting=none)),
            (
                "modeled cpu-tdp (real host /proc/stat)",
                CpuTdpModelMeter(poll=False, accounting=none),
            ),
        ]
        for label, m in meters:
            assert m.probe().available, (label, m.availability)
            rows.append(
                {"meter": label, "window_us": round(per_window_us(m, a.n), 2), "attribution": False}
            )
            m.close()
        for label, acct in (
            (
                "attribution only (ns clocks: process tree + machine), per read",
                default_accounting(),
            ),
            ("attribution only (ticks: os.times + /proc/stat), per read", PsutilAccounting()),
        ):
            t0 = time.perf_counter()
            for _ in range(a.n):
                acct.process_cpu_s()
                acct.machine_cpu_s()
            rows.append(
                {
                    "meter": label,
                    "window_us": round((time.perf_counter() - t0) / a.n * 1e6, 2),
                    "attribution": True,
                }
            )
        ms = detect(poll=False)
        used = "+".join(m.name for m in ms.total)
        rows.append(
            {
                "meter": f"detect() MeterSet on this host ({used}), with attribution",
                "window_us": round(per_window_us(ms, max(a.n // 4, 1)), 2),
                "attribution": True,
            }
        )
        ms.close()
    out = {
        "host": platform.node(),
        "python": platform.python_version(),
        "n": a.n,
        "unit": "microseconds per window (begin+end)",
        "rows": rows,
    }
    w = max(len(x["meter"]) for x in rows)
    print(f"{'meter':<{w}}  µs/window")
    for x in rows:
        print(f"{x['meter']:<{w}}  {x['window_us']:>9.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
