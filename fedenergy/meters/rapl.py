"""Linux powercap RAPL (Intel and AMD): ``energy_uj`` counters, read as differences.

Sources (notes/energy-sources.md §3, §12): zone layout ``/sys/class/powercap/intel-rapl:N[:M]``
and ``intel-rapl-mmio:N`` (the devices live under ``/sys/devices/virtual/powercap``); names
``package-N``, AMD ``package-N-die-D``, ``dram``, ``psys``, ``core``, ``uncore``.

Rules implemented here:
  * psys ⊃ package ⊃ core/uncore: core/uncore are never read; if psys exists it is the machine
    total and package/dram are reported beside it as informational (non-additive); otherwise
    the total is Σ package + Σ dram.
  * AMD dies that mirror one socket counter (CodeCarbon #788: summing them doubles the figure)
    are counted once. A mirror is the same counter read twice, so it must agree on the level
    *and* on the change: at probe time a die whose raw counter is within ``MIRROR_REL_TOL`` of an
    earlier die of the same package is a candidate; both are read again ``MIRROR_SAMPLE_S``
    later and the candidate is a mirror only if the two deltas agree within
    ``MIRROR_DELTA_REL_TOL`` (two evenly loaded dies whose totals happen to be close draw
    different energy over the interval and stay separate). Checked once per probe.
  * An MMIO zone with the same name as an MSR zone (``intel-rapl-mmio:0`` = ``package-0``)
    is the same energy: counted once (the MSR zone is kept).
  * Wrap-around: a decrease adds ``max_energy_range_uj`` once. If that range is unreadable the
    interval is dropped and flagged ``wrap-dropped:<domain>`` — never a negative joule
    (CodeCarbon #1309 went negative). The poll thread reads every
    ``min(range) / (2 × ASSUMED_MAX_POWER_W)`` so that no counter wraps twice between reads.
  * ``energy_uj`` is root-only since CVE-2020-8694: PermissionError → ``unreadable`` with the
    one-line fix, never a silent zero.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from fedenergy.meters.attribution import CpuAccounting
from fedenergy.meters.base import Meter
from fedenergy.meters.records import Availability, Clock, Domain
from fedenergy.meters.sysfs import Opener, SysfsFile, read_optional, resolve_root, root_path

ZONE_RE = re.compile(r"^(intel-rapl(?:-mmio)?):(\d+)(?::(\d+))?$")
PKG_RE = re.compile(r"^package-(\d+)(?:-die-(\d+))?$")

# Conservative upper bound on the power one zone can draw, used only to choose the poll period
# (a 65.5 kJ AMD counter then wraps at most every 21.8 s; we read every 10.9 s).
ASSUMED_MAX_POWER_W = 3000.0
# Poll period when a zone's range is unknown: a wrap then drops at most this much time.
UNKNOWN_RANGE_POLL_S = 1.0
# Two die counters of one package within this relative distance are one mirrored counter.
MIRROR_REL_TOL = 1e-3
# ... and their changes over MIRROR_SAMPLE_S within this relative distance. ASSUMPTION: the
# interval is long enough that one counter update (AMD: about 1 ms of energy) is under 1 % of the
# change, and short enough to cost little once per process.
MIRROR_SAMPLE_S = 0.2
MIRROR_DELTA_REL_TOL = 1e-2

PERMISSION_FIX = (
    "sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj "
    "/sys/class/powercap/intel-rapl:*:*/energy_uj  (lasts until reboot; to persist, install "
    "sysfsutils and add 'mode class/powercap/intel-rapl:0/energy_uj = 0444' per zone to "
    "/etc/sysfs.conf)"
)


@dataclass
class Zone:
    zone_id: str  # e.g. "intel-rapl:0:1" or "intel-rapl-mmio:0"
    path: str
    name: str  # the zone's `name` file: package-0, dram, psys, core …
    role: str  # package | dram | psys | core | uncore | other
    socket: int | None = None
    die: int | None = None
    domain: str = ""
    label: str = ""
    max_uj: int | None = None
    file: SysfsFile | None = None
    last: int | None = None
    mirror_of: str | None = None
    skipped: str = ""  # why this zone is not read


class RaplMeter(Meter):
    """RAPL energy counters via powercap sysfs. Machine scope, counter kind."""

    name = "rapl"
    kind = "counter"
    scope = "machine"
    provenance = "measured"

    def __init__(
        self,
        sysfs_root: str | None = None,
        *,
        opener: Opener | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock | None = None,
        accounting: CpuAccounting | None = None,
        poll: bool = True,
    ) -> None:
        super().__init__(clock=clock, accounting=accounting, poll=poll)
        self.root = resolve_root(sysfs_root)
        self._opener = opener
        self._sleep = sleep
        self.zones: list[Zone] = []
        self.used: list[Zone] = []
        self._mirror_notes: list[str] = []
        self.poll_interval_s = None

    # --- discovery ------------------------------------------------------------------------
    def _bases(self) -> list[str]:
        bases = [
            root_path(self.root, "/sys/class/powercap"),
            root_path(self.root, "/sys/devices/virtual/powercap/intel-rapl"),
            root_path(self.root, "/sys/devices/virtual/powercap/intel-rapl-mmio"),
            # Zeus-style container mount: -v /sys/class/powercap:/zeus_sys/class/powercap
            root_path(self.root, "/class/powercap"),
        ]
        return [b for b in bases if os.path.isdir(b)]

    def discover(self) -> list[Zone]:
        seen_ids: set[str] = set()
        seen_real: set[str] = set()
        found: list[Zone] = []

        def visit(d: str, depth: int) -> None:
            try:
                entries = sorted(os.listdir(d))
            except OSError:
                return
            for e in entries:
                m = ZONE_RE.match(e)
                if not m:
                    continue
                p = os.path.join(d, e)
                real = os.path.realpath(p)
                if e not in seen_ids and real not in seen_real and os.path.isdir(p):
                    seen_ids.add(e)
                    seen_real.add(real)
                    found.append(self._zone(e, p))
                if depth == 0:
                    visit(p, 1)

        for base in self._bases():
            visit(base, 0)
        return sorted(found, key=lambda z: _zone_sort_key(z.zone_id))

    def _zone(self, zone_id: str, path: str) -> Zone:
        name = read_optional(os.path.join(path, "name")) or ""
        z = Zone(zone_id, path, name, "other")
        m = PKG_RE.match(name)
        if m:
            z.role, z.socket = "package", int(m.group(1))
            z.die = int(m.group(2)) if m.group(2) is not None else None
        elif name in ("dram", "psys", "core", "uncore"):
            z.role = name
        return z

    # --- probe ----------------------------------------------------------------------------
    def _probe(self) -> Availability:
        self.close()
        self._mirror_notes = []
        self.zones = self.discover()
        if not self.zones:
            where = root_path(self.root, "/sys/class/powercap")
            return Availability(
                "absent",
                f"no intel-rapl zones under {where} (not Linux on x86, a VM or container "
                "without powercap, or the intel_rapl_msr module is not loaded)",
                "on bare-metal x86 Linux: sudo modprobe intel_rapl_msr; in a container, "
                "bind-mount /sys/class/powercap and /sys/devices/virtual/powercap and pass "
                "--sysfs-root",
            )
        by_id = {z.zone_id: z for z in self.zones}
        used: list[Zone] = []
        msr_names = {z.name for z in self.zones if not z.zone_id.startswith("intel-rapl-mmio")}
        for z in self.zones:
            mmio = z.zone_id.startswith("intel-rapl-mmio")
            if z.role in ("core", "uncore"):
                z.skipped = f"{z.name} is a subset of its package: never added"
                continue
            if z.role == "other":
                z.skipped = f"unknown zone name {z.name!r}"
                continue
            if mmio and z.name in msr_names:
                z.skipped = f"MMIO copy of {z.name}: counted once (MSR zone kept)"
                continue
            if z.role == "package":
                z.domain = (
                    f"cpu.package[{z.socket}]"
                    if z.die is None
                    else f"cpu.package[{z.socket}].die[{z.die}]"
                )
            elif z.role == "dram":
                parent = by_id.get(z.zone_id.rsplit(":", 1)[0])
                sock = parent.socket if parent and parent.socket is not None else _zone_num(z)
                z.socket = sock
                z.domain = f"dram[{sock}]"
            elif z.role == "psys":
                z.domain = "platform.psys"
            src = "rapl-mmio" if mmio else "rapl"
            label = z.name if z.role != "dram" else f"dram-{z.socket}"
            z.label = f"measured:{src}:{label}"
            used.append(z)

        # Read every used counter once: permissions, errors, mirror candidates.
        first_die: dict[int, Zone] = {}
        candidates: list[tuple[Zone, Zone]] = []
        for z in used:
            z.file = SysfsFile(os.path.join(z.path, "energy_uj"), self._opener)
            try:
                z.last = z.file.read_int()
            except PermissionError:
                self.close()
                return Availability(
                    "unreadable",
                    f"permission denied reading {z.file.path} (energy_uj is root-only since "
                    "CVE-2020-8694)",
                    PERMISSION_FIX,
                )
            except (OSError, ValueError) as e:
                self.close()
                return Availability("unreadable", f"cannot read {z.file.path}: {e}", "")
            mx = read_optional(os.path.join(z.path, "max_energy_range_uj"))
            try:
                z.max_uj = int(mx) if mx is not None else None
            except ValueError:
                z.max_uj = None
            if z.max_uj is not None and z.max_uj <= 0:
                z.max_uj = None
            if z.role == "package" and z.die is not None:
                ref = first_die.get(z.socket)
                if ref is None:
                    first_die[z.socket] = z
                elif _close(ref.last, z.last):
                    candidates.append((ref, z))
        if candidates:
            self._confirm_mirrors(candidates)
        for z in used:
            if z.mirror_of:
                z.file.close()
        self.used = [z for z in used if not z.mirror_of]
        # A lone die (its mirrors removed) is simply the package.
        for z in self.used:
            if z.role == "package" and z.die is not None:
                dies = [u for u in self.used if u.role == "package" and u.socket == z.socket]
                if len(dies) == 1:
                    z.domain = f"cpu.package[{z.socket}]"
        ranges = [z.max_uj for z in self.used]
        if any(r is None for r in ranges):
            self.poll_interval_s = UNKNOWN_RANGE_POLL_S
        else:
            self.poll_interval_s = min(r / 1e6 for r in ranges) / (2 * ASSUMED_MAX_POWER_W)
        if not self.used:
            return Availability("absent", "RAPL zones exist but none is package, dram or psys")
        return Availability("available")

    def _confirm_mirrors(self, pairs: list[tuple[Zone, Zone]]) -> None:
        """Read candidate die pairs again after ``MIRROR_SAMPLE_S``; mark those whose deltas
        agree as mirrors (the later die is not read)."""
        first = {id(z): z.last for pair in pairs for z in pair}
        self._sleep(MIRROR_SAMPLE_S)
        delta: dict[int, int | None] = {}
        for pair in pairs:
            for z in pair:
                if id(z) in delta:
                    continue
                try:
                    raw = z.file.read_int() if z.file else None
                except (OSError, ValueError):
                    raw = None
                d = None if raw is None or first[id(z)] is None else raw - first[id(z)]
                if d is not None and d < 0 and z.max_uj:
                    d += z.max_uj
                delta[id(z)] = d if d is None or d >= 0 else None
                if raw is not None:
                    z.last = raw
        for ref, z in pairs:
            a, b = delta[id(ref)], delta[id(z)]
            if a and b and abs(a - b) <= MIRROR_DELTA_REL_TOL * max(a, b):
                z.mirror_of = ref.domain
                z.skipped = (
                    f"mirrors {ref.name} (same level and same change over "
                    f"{MIRROR_SAMPLE_S:g} s: one counter reported twice): counted once"
                )
            elif not (a and b):  # no usable change: kept apart, and said so on every window
                self._mirror_notes.append(
                    f"{z.name}: level close to {ref.name} but no change seen in "
                    f"{MIRROR_SAMPLE_S:g} s; counted as a separate die"
                )

    def covers(self) -> str:
        if self.has_psys:
            return "platform (rapl psys)"
        roles = {z.role for z in self.used}
        return "cpu packages + dram (rapl)" if "dram" in roles else "cpu packages (rapl)"

    def notes(self) -> list[str]:
        return list(self._mirror_notes)

    @property
    def has_psys(self) -> bool:
        return any(z.role == "psys" for z in self.used)

    def domains(self) -> list[Domain]:
        if not self.availability.available:
            return []
        psys = self.has_psys
        return [
            Domain(z.domain, z.label, additive=(z.role == "psys") or not psys) for z in self.used
        ]

    def skipped(self) -> list[str]:
        """Zones seen but not read, with the reason (for ``fedenergy meters``)."""
        return [f"{z.zone_id} ({z.name}): {z.skipped}" for z in self.zones if z.skipped]

    # --- reading ----------------------------------------------------------------------------
    def _update(self, now: float) -> None:
        for z in self.used:
            assert z.file is not None
            try:
                raw = z.file.read_int()
            except (OSError, ValueError):
                self._event(f"read-error:{z.domain}")
                z.last = None
                continue
            if z.last is None:
                z.last = raw
                self._add(z.domain, 0.0)
                continue
            delta = raw - z.last
            if delta < 0:
                if z.max_uj is not None:
                    delta += z.max_uj
                else:
                    self._event(f"wrap-dropped:{z.domain}")
                    delta = 0
            if delta < 0:  # still negative: a range smaller than the jump; drop, never < 0
                self._event(f"wrap-dropped:{z.domain}")
                delta = 0
            z.last = raw
            self._add(z.domain, delta / 1e6)

    def close(self) -> None:
        for z in self.zones:
            if z.file is not None:
                z.file.close()


def _close(a: int | None, b: int | None) -> bool:
    if a is None or b is None:
        return False
    return abs(a - b) <= MIRROR_REL_TOL * max(abs(a), abs(b), 1)


def _zone_num(z: Zone) -> int:
    m = ZONE_RE.match(z.zone_id)
    return int(m.group(2)) if m else 0


def _zone_sort_key(zone_id: str) -> tuple:
    m = ZONE_RE.match(zone_id)
    if not m:
        return (2, zone_id)
    return (1 if "mmio" in m.group(1) else 0, int(m.group(2)), int(m.group(3) or -1))
