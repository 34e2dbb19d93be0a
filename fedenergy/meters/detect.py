"""Probe what this host can read and build the best non-overlapping set of meters.

Order (DESIGN.md §3, notes/energy-sources.md §12):
  1. a whole-device figure: Jetson board rails, else a discharging battery — it is the total,
     and any RAPL/GPU meter is reported beside it as informational (it is inside the device);
  2. otherwise RAPL (psys if present, else package + dram) plus NVML GPUs beside it;
  3. a modeled fallback only when no CPU/board meter measures: the Raspberry Pi board model
     if the board is known, else the CPU TDP model (GPUs still measured beside it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fedenergy.meters.attribution import CpuAccounting, default_accounting
from fedenergy.meters.base import Meter, make_measurement
from fedenergy.meters.battery import BatteryMeter
from fedenergy.meters.jetson import JetsonMeter
from fedenergy.meters.model import CpuTdpModelMeter, RpiModelMeter
from fedenergy.meters.nvml import NvmlMeter
from fedenergy.meters.rapl import RaplMeter
from fedenergy.meters.records import Clock, Component, Measurement, Snapshot
from fedenergy.meters.sysfs import resolve_root
from fedenergy.meters.window import POLLER, Windowed


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
        for m, s0, s1 in zip(self.meters, snaps0, snaps1, strict=True):
            c, f = m.components(s0, s1, informational=self.role(m) != "total")
            comps.update(c)
            flags += f
            notes += m.notes()
        return make_measurement(
            name, t0, t1 - t0, comps, flags, attribution, self.total_scope, notes
        )

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
