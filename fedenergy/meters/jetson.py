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
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from fedenergy.meters.attribution import CpuAccounting
from fedenergy.meters.base import Meter
from fedenergy.meters.records import Availability, Clock, Domain
from fedenergy.meters.sysfs import read_number, read_optional, resolve_root, root_path

INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
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
        return Availability("available")

    def domains(self) -> list[Domain]:
        if not self.availability.available:
            return []
        return [Domain(r.domain, f"measured:jetson:{r.label}", r.additive) for r in self.rails]

    def notes(self) -> list[str]:
        return list(self.notes_)

    def _update(self, now: float) -> None:
        for r in self.rails:
            try:
                w: float | None = r.read_mw() / 1000.0
            except (OSError, ValueError):
                w = None
            self._power_sample(r.domain, now, w)
