"""Probe what this host can read and build the best non-overlapping set of meters.

Order (DESIGN.md §3, notes/energy-sources.md §12):
  1. a whole-device figure: Jetson board rails, else a discharging battery — it is the total,
     and any RAPL/GPU meter is reported beside it as informational (it is inside the device);
  2. otherwise RAPL (psys if present, else package + dram) plus NVML GPUs beside it;
  3. a modeled fallback only when no CPU/board meter measures: the Raspberry Pi board model
     if the board is known, else the CPU TDP model (GPUs still measured beside it).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fedenergy.meters.attribution import CpuAccounting
from fedenergy.meters.base import Meter, cpu_clock_info, make_measurement
from fedenergy.meters.battery import BatteryMeter
from fedenergy.meters.cputime import default_accounting
from fedenergy.meters.jetson import JetsonMeter
from fedenergy.meters.model import CpuTdpModelMeter, RpiModelMeter
from fedenergy.meters.nvml import NvmlMeter
from fedenergy.meters.rapl import RaplMeter
from fedenergy.meters.records import Clock, Component, Measurement, Share, Snapshot
from fedenergy.meters.shares import Part
from fedenergy.meters.sysfs import resolve_root
from fedenergy.meters.window import POLLER, Windowed

# Flags after which a cached MeterSet is probed again (a driver reload, a vanished sensor).
FAULT_FLAGS = ("read-error:", "counter-reset:")
# A cached detection is redone after this long (s): a charger unplugged, a GPU driver loaded.
# ASSUMPTION: hot-plug is rare next to calls; 5 minutes bounds how long a change goes unseen.
DETECT_TTL_S = 300.0


@dataclass
class MeterSet(Windowed):
    """Meters combined without overlap; same window API as a single meter.

    total: meters whose additive domains make up ``Measurement.total_j``.
    info: meters reported beside them, never added (they measure a part of the total).
    candidates: every meter probed, used or not (for ``fedenergy meters``).
    fallback: the name of the modeled meter in use, or None when everything is measured.
    total_scope: ``device`` (board/battery/board model) or ``machine``.
    """

    total: list[Meter]
    info: list[Meter] = field(default_factory=list)
    candidates: list[Meter] = field(default_factory=list)
    fallback: str | None = None
    total_scope: str = "machine"
    clock_: Clock | None = None
    accounting_: CpuAccounting | None = None
    poll: bool = True

    def __post_init__(self) -> None:
        self._init_windows(self.clock_ or time.monotonic, self.accounting_)
        self.faults = 0  # windows whose total meters reported read errors or counter resets

    @property
    def meters(self) -> list[Meter]:
        return self.total + self.info

    def role(self, meter: Meter) -> str:
        if any(m is meter for m in self.total):
            return "total"
        if any(m is meter for m in self.info):
            return "informational"
        return "unused"

    def _take_snapshot(self) -> tuple[float, list[Snapshot]]:
        return self.clock(), [m.snapshot() for m in self.meters]

    def _start_polling(self) -> None:
        if self.poll:
            for m in self.meters:
                POLLER.register(m)

    def _stop_polling(self) -> None:
        if self.poll:
            for m in self.meters:
                POLLER.unregister(m)

    def _build(
        self, name: str, begin: Any, end: Any, attribution: tuple[float, float]
    ) -> Measurement:
        (t0, snaps0), (t1, snaps1) = begin, end
        comps: dict[str, Component] = {}
        flags: list[str] = []
        notes: list[str] = []
        parts: list[Part] = []
        shares: dict[str, Share] = {}
        # a board whose GPU rails are attributed apart already: NVML's GPU is inside those
        rails = any(isinstance(t, JetsonMeter) and t.gpu_rails() for t in self.total)
        for m, s0, s1 in zip(self.meters, snaps0, snaps1, strict=True):
            total = self.role(m) == "total"
            c, f = m.components(s0, s1, informational=not total)
            comps.update(c)
            flags += f
            notes += m.notes()
            if total:  # informational meters measure a part of the total: no parts of their own
                parts += m.attribution_parts(c, s0, s1)
                sh, sf = m.window_shares(s0, s1)
                shares.update(sh)
                flags += sf
                self.faults += any(x.startswith(FAULT_FLAGS) for x in f)
            elif isinstance(m, NvmlMeter) and not rails:  # a GPU inside a device total
                gpu = [(d, x.joules, d) for d, x in c.items()]
                parts = _carve(parts, gpu)
                sh, sf = m.window_shares(s0, s1)
                shares.update(sh)
                flags += sf
        return make_measurement(
            name,
            t0,
            t1 - t0,
            comps,
            flags,
            attribution,
            self.total_scope,
            notes,
            parts=parts,
            shares=shares,
            covers=self.covers(),
            cpu_clock=cpu_clock_info(self.accounting),
        )

    def covers(self) -> str:
        """What ``Measurement.total_j`` covers, in words (the total meters' joined)."""
        return " + ".join(m.covers() for m in self.total)

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for m in self.candidates:
            d = m.describe()
            d["role"] = self.role(m)
            skipped = getattr(m, "skipped", None)
            d["notes"] = (skipped() if callable(skipped) else []) + (
                m.notes() if m.availability.available else []
            )
            out.append(d)
        return out

    def close(self) -> None:
        for m in self.candidates or self.meters:
            m.close()


def detect(
    sysfs_root: str | None = None,
    nvml: Any = None,
    tdp_w: float | None = None,
    *,
    clock: Clock | None = None,
    accounting: CpuAccounting | None = None,
    poll: bool = True,
    cuda_visible_devices: str | None = None,
) -> MeterSet:
    """Probe every meter and return the best non-overlapping set.

    sysfs_root: a directory standing in for ``/`` (default ``$FEDENERGY_SYSFS_ROOT`` or ``/``).
    nvml: the pynvml module to use (default: imported lazily if installed).
    tdp_w: CPU TDP (W) for the modeled fallback, overriding the table.
    clock / accounting / poll: for tests (injected time, CPU times, no background thread).
    cuda_visible_devices: overrides ``$CUDA_VISIBLE_DEVICES``.
    """
    root = resolve_root(sysfs_root)
    acct = accounting or default_accounting(root)
    kw: dict[str, Any] = {"clock": clock, "accounting": acct, "poll": poll}
    jetson = JetsonMeter(root, **kw)
    battery = BatteryMeter(root, **kw)
    rapl = RaplMeter(root, **kw)
    gpu = NvmlMeter(nvml, visible=cuda_visible_devices, **kw)
    rpi = RpiModelMeter(root, **kw)
    cpu = CpuTdpModelMeter(root, tdp_w=tdp_w, **kw)
    candidates: list[Meter] = [jetson, battery, rapl, gpu, rpi, cpu]
    ok = {m.name: m.availability.available for m in candidates}

    total: list[Meter] = []
    info: list[Meter] = []
    fallback = None
    scope = "machine"
    device = jetson if ok["jetson"] else battery if ok["battery"] else None
    if device is not None:
        total.append(device)
        scope = "device"
        info += [m for m in (rapl, gpu) if ok[m.name]]
    else:
        if ok["rapl"]:
            total.append(rapl)
        else:
            model = rpi if ok["rpi-model"] else cpu
            total.append(model)
            fallback = model.name
            if model is rpi:
                scope = "device"
        if ok["nvml"]:
            total.append(gpu)
    for m in candidates:
        if m not in total and m not in info:
            m.close()
    return MeterSet(total, info, candidates, fallback, scope, clock, acct, poll)


def _carve(parts: list[Part], inner: list[Part]) -> list[Part]:
    """Move ``inner`` parts (measured inside the total) out of the CPU-time part."""
    inside = sum(j for _, j, _ in inner)
    out = []
    for name, joules, key in parts:
        if key == "cpu" and inside > 0:
            take = min(joules, inside)
            joules, inside = joules - take, inside - take
        out.append((name, joules, key))
    carved = sum(j for _, j, _ in inner) - inside
    scale = carved / sum(j for _, j, _ in inner) if inner and carved > 0 else 0.0
    return out + [(n, j * scale, k) for n, j, k in inner]


class DetectCache:
    """Detected MeterSets kept for this process, so meters are probed once, not per call.

    Probing scans sysfs, initialises NVML and, on AMD hosts with matching dies, samples RAPL
    twice; a window costs well under a millisecond. An entry is keyed by the process id (a
    forked child probes again: NVML handles and file descriptors are the parent's), the sysfs
    root, the TDP override and ``CUDA_VISIBLE_DEVICES``; it is probed again after ``ttl_s``,
    after a window whose total meters reported a read error or a counter reset, and on
    ``invalidate()``. A replaced set is closed only if no window is open on it.
    """

    def __init__(self, ttl_s: float = DETECT_TTL_S, clock: Clock = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._sets: dict[tuple, tuple[float, int, MeterSet]] = {}

    def get(
        self,
        sysfs_root: str | None = None,
        tdp_w: float | None = None,
        *,
        cuda_visible_devices: str | None = None,
        **kw: Any,
    ) -> MeterSet:
        """The cached MeterSet for these settings, detecting it first if needed.

        ``kw`` is passed to ``detect`` (nvml, clock, accounting, poll: for tests)."""
        cvd = cuda_visible_devices
        if cvd is None:
            cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
        key = (os.getpid(), resolve_root(sysfs_root), tdp_w, cvd)
        now = self.clock()
        with self._lock:
            hit = self._sets.get(key)
            if hit is not None:
                born, faults, ms = hit
                if now - born < self.ttl_s and ms.faults == faults:
                    return ms
                self._retire(ms)
            for k in [k for k in self._sets if k[0] != key[0]]:
                del self._sets[k]  # inherited through fork: the parent's to close
            ms = detect(sysfs_root, tdp_w=tdp_w, cuda_visible_devices=cvd, **kw)
            self._sets[key] = (now, ms.faults, ms)
            return ms

    def invalidate(self) -> None:
        """Forget every cached set (the next ``get`` probes again)."""
        with self._lock:
            for k, (_, _, ms) in list(self._sets.items()):
                if k[0] == os.getpid():
                    self._retire(ms)
            self._sets.clear()

    @staticmethod
    def _retire(ms: MeterSet) -> None:
        if not ms.open_windows:
            ms.close()


# The per-process cache behind ``cached_detect`` (like the poll thread, one per process).
DETECT_CACHE = DetectCache()


def cached_detect(sysfs_root: str | None = None, tdp_w: float | None = None) -> MeterSet:
    """``detect()`` once per process and settings (see ``DetectCache``); do not close it."""
    return DETECT_CACHE.get(sysfs_root, tdp_w)
