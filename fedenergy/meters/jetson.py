"""NVIDIA Jetson INA3221 power rails (sampled, whole-device total from the input rail).

Layouts (notes/energy-sources.md §7, §12; Zeus ``zeus/device/soc/jetson.py``, jtop
``jtop/core/power.py``):
  * hwmon (newer L4T): ``.../ina3221/<dev>/hwmon/hwmon*/in{N}_label`` with ``power{N}_input``
    (mW, as Zeus reads it) or ``in{N}_input`` (mV) × ``curr{N}_input`` (mA) / 1000 → mW.
  * iio (older L4T): ``.../ina3221x/<dev>/iio:device*/rail_name_{N}`` with ``in_power{N}_input``
    (mW) or ``in_voltage{N}_input`` (mV) × ``in_current{N}_input`` (mA) / 1000.
  * Also any ``/sys/bus/i2c/devices/*`` whose ``name`` contains ``ina3221`` (jtop's scan).

The input rail (``VDD_IN`` on Xavier NX/Orin, ``POM_5V_IN`` on Nano/TX2) is the device total;
CPU/GPU/SOC rails are sub-rails of it and are reported as informational, never added. Labels
``NC`` (not connected) and the hwmon "sum of shunt voltages" channel are skipped, as jtop does.
Without an input rail the total is the sum of the rails (jtop's rule), flagged in the notes.

Attribution policy (docs/meters.md "Attribution"): the board total is split into its GPU rails
(labels naming GPU: ``VDD_GPU``, ``VDD_SYS_GPU``, ``POM_5V_GPU``, and the combined
``VDD_GPU_SOC`` / ``VDD_CPU_GPU_CV``, which cannot be split further) and the rest. The rest goes
by CPU time. No Jetson source says which process used the GPU, so the GPU rails go by the
board's GPU load (the GPU device's ``load`` file, 0–1000): a window in which the GPU was idle
splits them by CPU time like any idle power; a window in which it was busy leaves them
*unattributed* (``gpu-attribution-undefined:jetson-gpu``), never guessed from CPU time.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from fedenergy.meters.attribution import CpuAccounting
from fedenergy.meters.base import Meter
from fedenergy.meters.records import Availability, Clock, Component, Domain, Share, Snapshot
from fedenergy.meters.shares import Part
from fedenergy.meters.sysfs import read_number, read_optional, resolve_root, root_path

INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
# GPU busy load, per mille, of the integrated GPU (checked in this order under the root).
GPU_LOAD_GLOBS = (
    "/sys/devices/gpu.0/load",
    "/sys/devices/platform/gpu.0/load",
    "/sys/devices/platform/*.gpu/load",
    "/sys/devices/platform/bus@0/*.gpu/load",
)
JETSON_GPU_SHARE = "gpu:jetson"


def rail_class(label: str) -> str:
    """``gpu`` if the rail's label names the GPU (alone or combined), ``cpu`` if it names the
    CPU only, else ``other``."""
    tokens = set(re.split(r"[_\s]+", label.upper()))
    return "gpu" if "GPU" in tokens else "cpu" if "CPU" in tokens else "other"


DEFAULT_POLL_S = 0.1  # 10 Hz (notes §12)


@dataclass
class Rail:
    label: str
    read_mw: Callable[[], float]
    source: str  # the file(s) read
    domain: str = ""
    additive: bool = False


def _direct(path: str) -> Callable[[], float]:
    return lambda: read_number(path)


def _product(vpath: str, ipath: str) -> Callable[[], float]:
    return lambda: read_number(vpath) * read_number(ipath) / 1000.0


def _skip(label: str, n: str) -> bool:
    up = label.strip().upper()
    return not up or up == "NC" or up.startswith("NC ") or "SUM OF SHUNT" in up or n == "7"


class JetsonMeter(Meter):
    name = "jetson"
    kind = "power"
    scope = "device"
    provenance = "measured"
    total_scope = "device"

    def __init__(
        self,
        sysfs_root: str | None = None,
        *,
        poll_s: float = DEFAULT_POLL_S,
        clock: Clock | None = None,
        accounting: CpuAccounting | None = None,
        poll: bool = True,
    ) -> None:
        super().__init__(clock=clock, accounting=accounting, poll=poll)
        self.root = resolve_root(sysfs_root)
        self.poll_interval_s = poll_s
        self.rails: list[Rail] = []
        self.notes_: list[str] = []
        self.gpu_load_path: str | None = None
        self._last_load: tuple[float, float] | None = None

    def _sensor_dirs(self) -> list[tuple[str, str]]:
        r = self.root
        dirs: list[tuple[str, str]] = []
        dirs += [
            (d, "hwmon")
            for d in glob.glob(root_path(r, "/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"))
        ]
        dirs += [
            (d, "iio")
            for d in glob.glob(root_path(r, "/sys/bus/i2c/drivers/ina3221x/*/iio:device*"))
        ]
        for dev in glob.glob(root_path(r, "/sys/bus/i2c/devices/*")):
            if "ina3221" in (read_optional(os.path.join(dev, "name")) or ""):
                dirs += [(d, "hwmon") for d in glob.glob(os.path.join(dev, "hwmon", "hwmon*"))]
                dirs += [(d, "iio") for d in glob.glob(os.path.join(dev, "iio:device*"))]
        seen: set[str] = set()
        out = []
        for d, kind in sorted(dirs):
            real = os.path.realpath(d)
            if real not in seen:
                seen.add(real)
                out.append((d, kind))
        return out

    def discover(self) -> list[Rail]:
        rails: list[Rail] = []
        for d, layout in self._sensor_dirs():
            if layout == "hwmon":
                pat, rx = "in*_label", re.compile(r"^in(\d+)_label$")
            else:
                pat, rx = "rail_name_*", re.compile(r"^rail_name_(\d+)$")
            for f in sorted(glob.glob(os.path.join(d, pat))):
                m = rx.match(os.path.basename(f))
                if not m:
                    continue
                n = m.group(1)
                label = read_optional(f) or ""
                if _skip(label, n if layout == "hwmon" else ""):
                    continue
                if layout == "hwmon":
                    p = os.path.join(d, f"power{n}_input")
                    v, i = os.path.join(d, f"in{n}_input"), os.path.join(d, f"curr{n}_input")
                else:
                    p = os.path.join(d, f"in_power{n}_input")
                    v = os.path.join(d, f"in_voltage{n}_input")
                    i = os.path.join(d, f"in_current{n}_input")
                if os.path.isfile(p):
                    rails.append(Rail(label.strip(), _direct(p), p))
                elif os.path.isfile(v) and os.path.isfile(i):
                    rails.append(Rail(label.strip(), _product(v, i), f"{v} × {i}"))
        return rails

    def _probe(self) -> Availability:
        rails = self.discover()
        if not rails:
            return Availability(
                "absent",
                "no INA3221 power rails (not a Jetson, or the ina3221 driver is not loaded)",
            )
        names: set[str] = set()
        for r in rails:  # unique labels
            base, k = r.label, 2
            while r.label in names:
                r.label = f"{base}#{k}"
                k += 1
            names.add(r.label)
        total = next((r for r in rails if r.label.upper() in INPUT_RAILS), None)
        self.notes_ = []
        for r in rails:
            if r is total:
                r.domain, r.additive = "soc.total", True
            else:
                r.domain, r.additive = f"soc.rail[{r.label}]", total is None
        if total is None:
            self.notes_.append(
                "jetson: no VDD_IN/POM_5V_IN input rail; the total is the sum "
                "of the monitored rails and misses unmonitored supplies"
            )
        errors = []
        for r in rails:
            try:
                r.read_mw()
            except (OSError, ValueError) as e:
                errors.append(f"{r.source}: {e}")
        total_bad = total is not None and any(e.startswith(total.source) for e in errors)
        if total_bad or len(errors) == len(rails):
            return Availability(
                "unreadable",
                "cannot read INA3221 rails: " + "; ".join(errors),
                "run as a user that can read the ina3221 sysfs files",
            )
        self.rails = rails
        self.gpu_load_path = next(
            (p for g in GPU_LOAD_GLOBS for p in sorted(glob.glob(root_path(self.root, g)))),
            None,
        )
        return Availability("available")

    def domains(self) -> list[Domain]:
        if not self.availability.available:
            return []
        return [Domain(r.domain, f"measured:jetson:{r.label}", r.additive) for r in self.rails]

    def notes(self) -> list[str]:
        return list(self.notes_)

    def covers(self) -> str:
        total = next((r for r in self.rails if r.domain == "soc.total"), None)
        if total is not None:
            return f"whole device (jetson {total.label})"
        return "monitored rails (jetson)"

    def gpu_rails(self) -> list[Rail]:
        """The rails whose label names the GPU (attributed apart from the rest)."""
        return [r for r in self.rails if rail_class(r.label) == "gpu"]

    def attribution_parts(
        self, comps: dict[str, Component], begin: Snapshot, end: Snapshot
    ) -> list[Part]:
        """GPU rails apart (by GPU load, see the module docstring); the rest by CPU time."""
        gpu = [r for r in self.gpu_rails() if r.domain in comps]
        total = sum(c.joules for c in comps.values() if c.additive)
        if not gpu:
            return [("cpu", total, "cpu")]
        key = "cpu" if self._gpu_idle(begin, end) else JETSON_GPU_SHARE
        gpu_j = [min(comps[r.domain].joules, total) for r in gpu]
        parts = [(r.domain, j, key) for r, j in zip(gpu, gpu_j, strict=True)]
        return [("cpu", max(0.0, total - sum(gpu_j)), "cpu"), *parts]

    def _gpu_idle(self, begin: Snapshot, end: Snapshot) -> bool:
        """The GPU load file read 0 throughout the window (every reading good)."""
        if self.gpu_load_path is None or "gpu.busy_s" not in end.use:
            return False
        d = {k: end.use.get(k, 0.0) - begin.use.get(k, 0.0) for k in ("gpu.busy_s", "gpu.gaps")}
        return d["gpu.busy_s"] <= 0.0 and d["gpu.gaps"] == 0

    def window_shares(self, begin: Snapshot, end: Snapshot) -> tuple[dict[str, Share], list[str]]:
        if not self.gpu_rails():
            return {}, []
        if self._gpu_idle(begin, end):
            return {}, []  # idle GPU: its rails went with the CPU-time part
        busy = end.use.get("gpu.busy_s", 0.0) - begin.use.get("gpu.busy_s", 0.0)
        why = "busy" if self.gpu_load_path else "no GPU load file"
        share = Share("none", None, 0.0, busy, f"jetson: no per-process GPU use ({why})")
        return {JETSON_GPU_SHARE: share}, ["gpu-attribution-undefined:jetson-gpu"]

    def _update(self, now: float) -> None:
        if self.gpu_load_path is not None:
            try:
                load: float | None = min(1.0, max(0.0, read_number(self.gpu_load_path) / 1000.0))
            except (OSError, ValueError):
                load = None
                self._use["gpu.gaps"] = self._use.get("gpu.gaps", 0.0) + 1
            last, busy = self._last_load, self._use.get("gpu.busy_s", 0.0)
            if load is not None and last is not None and now > last[0]:
                # an interval is as busy as the busier of its two readings (never idle by luck)
                busy += max(last[1], load) * (now - last[0])
            self._use["gpu.busy_s"] = busy
            self._last_load = (now, load) if load is not None else None
        for r in self.rails:
            try:
                w: float | None = r.read_mw() / 1000.0
            except (OSError, ValueError):
                w = None
            self._power_sample(r.domain, now, w)
