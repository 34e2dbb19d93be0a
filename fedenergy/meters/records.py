"""Measurement records of the meters: domains, components, measurements, snapshots, flags."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["available", "unreadable", "absent"]
Kind = Literal["counter", "power", "model"]
Scope = Literal["process", "device", "machine"]

Clock = Callable[[], float]


@dataclass(frozen=True)
class Availability:
    """Result of ``Meter.probe()``.

    status: ``available`` (readable now), ``unreadable`` (the hardware is there but cannot be
    read: permissions, driver error, battery on AC …) or ``absent`` (nothing to read on this host).
    reason: one line saying why (empty when available). fix: a one-line remedy, if any.
    """

    status: Status
    reason: str = ""
    fix: str = ""

    @property
    def available(self) -> bool:
        return self.status == "available"


@dataclass(frozen=True)
class Domain:
    """One energy domain a meter reports.

    name: e.g. ``cpu.package[0]``, ``dram[0]``, ``platform.psys``, ``gpu[0]``, ``soc.total``,
    ``battery[BAT0]``, ``cpu.modeled``. provenance: ``measured:<meter>:<sensor>`` or
    ``modeled:<model>``. additive: whether it is counted in the meter's total (overlapping
    domains such as a package under psys, or a CPU rail under VDD_IN, are informational only).
    """

    name: str
    provenance: str
    additive: bool = True


@dataclass(frozen=True)
class Component:
    """Energy of one domain over one window.

    joules: J. kind: ``counter`` | ``power`` | ``model``. scope: ``machine`` | ``device`` |
    ``process``. additive: True if included in ``Measurement.total_j``.
    """

    domain: str
    joules: float
    provenance: str
    kind: str
    scope: str
    additive: bool


@dataclass(frozen=True)
class Share:
    """The fraction of one part of the energy that belongs to this process tree, and why.

    basis: ``cpu-time`` (process-tree CPU time ÷ machine busy CPU time), ``gpu-use`` (the tree's
    SM utilization samples ÷ every process's on that GPU), ``gpu-context`` (NVML's list of
    processes holding a context: sole holder 1, absent 0) or ``none``.
    value: 0..1, or None when it is undefined (nothing observed): that part is then
    *unattributed*, never a measured 0 J. process / machine: the two quantities behind it (s of
    CPU, or summed utilization %). source: the clocks or NVML calls read.
    """

    basis: str
    value: float | None
    process: float = 0.0
    machine: float = 0.0
    source: str = ""

    @property
    def defined(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class Attributed:
    """One part of the window's total and the process tree's part of it.

    part: what it is (``cpu`` = everything split by CPU time, ``gpu[0]``, ``soc.rail[VDD_GPU]``).
    machine_j: J of that part (machine/device side). share: the key into
    ``Measurement.shares``. process_j: J attributed to the tree, None when the share is undefined
    (the part is ``unattributed``).
    """

    part: str
    machine_j: float
    share: str
    process_j: float | None

    @property
    def status(self) -> str:
        return "attributed" if self.process_j is not None else "unattributed"


@dataclass
class Measurement:
    """Energy of one named window.

    Fields (units):
      name: window name.
      start_s: monotonic clock at begin (s). duration_s: window length (s).
      components: per-domain energy, ``{domain: Component}`` (J, with provenance).
      total_j: machine/device total over the window (J): the sum of the additive components.
      total_scope: what ``total_j`` covers: ``machine`` (RAPL, model, GPU) or ``device``
        (board rails, battery: the whole device, screen and radio included).
      process_share: this process tree's CPU time ÷ machine busy CPU time over the window (0..1;
        0 when undefined, see ``shares["cpu"]``).
      process_j: J attributed to this process tree: Σ over ``attribution`` parts of their
        share × J (GPU parts by GPU use, the rest by CPU time); unattributed parts are left out.
      process_cpu_s / machine_cpu_s: the two CPU times behind the CPU share (s).
      flags: machine-readable tokens (``wrap-dropped:cpu.package[0]``,
        ``short-window-estimated:gpu[0]``, ``mig-shared:gpu[0]`` …).
      warnings: human-readable sentences explaining the flags and modeled figures.
      covers: what ``total_j`` covers, in words (``cpu packages + dram (rapl)``, ``gpu[0]
        (nvml)``, ``whole device (jetson VDD_IN)`` …): RAPL is not the whole machine.
      shares: ``{key: Share}`` (``cpu``, ``gpu[0]`` …). attribution: the parts of ``total_j``
        with their share and process joules. unattributed_j: J of the parts whose share is
        undefined (> 0 means ``process_j`` is incomplete: see ``attribution``).
    """

    name: str
    start_s: float
    duration_s: float
    components: dict[str, Component]
    total_j: float
    total_scope: str
    process_share: float
    process_j: float
    process_cpu_s: float = 0.0
    machine_cpu_s: float = 0.0
    flags: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    covers: str = ""
    shares: dict[str, Share] = field(default_factory=dict)
    attribution: list[Attributed] = field(default_factory=list)
    unattributed_j: float = 0.0

    @property
    def attribution_status(self) -> str:
        """``complete`` (every part attributed), ``partial`` or ``unattributed`` (none)."""
        if self.unattributed_j <= 0.0 and all(a.process_j is not None for a in self.attribution):
            return "complete"
        if any(a.process_j is not None and a.machine_j > 0 for a in self.attribution):
            return "partial"
        return "unattributed"

    @property
    def joules(self) -> dict[str, float]:
        """``{domain: J}`` for every component (additive or not)."""
        return {d: c.joules for d, c in self.components.items()}

    @property
    def provenance(self) -> dict[str, str]:
        """``{domain: provenance}``, e.g. ``measured:rapl:package-0``."""
        return {d: c.provenance for d, c in self.components.items()}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["components"] = {k: asdict(v) for k, v in self.components.items()}
        d["shares"] = {k: asdict(v) for k, v in self.shares.items()}
        d["attribution_status"] = self.attribution_status
        return d


@dataclass(frozen=True)
class Snapshot:
    """Cumulative state of a meter at one instant: t (s), energy (J per domain), event counts."""

    t: float
    energy: dict[str, float]
    events: dict[str, int]
    # cumulative use counters for GPU attribution: {key: value} (e.g. "gpu[0].ours" = summed SM
    # utilization % of this tree's processes), and the last observed holder state per GPU
    use: dict[str, float] = field(default_factory=dict)


# Human-readable explanation for flag prefixes.
FLAG_TEXT = {
    "wrap-dropped": "a counter decreased and its range was unknown: that interval was dropped "
    "(energy is a lower bound)",
    "counter-reset": "a counter went backwards (driver reload?): that interval was dropped",
    "read-error": "a read failed during the window: that interval was dropped",
    "short-window-estimated": "the energy counter did not change during this short window: "
    "estimated as instantaneous power × duration",
    "mig-shared": "MIG: the whole GPU was measured; its energy is shared with other MIG slices",
    "not-discharging": "the battery was not discharging for part of the window: that part was "
    "dropped",
    "attribution-undefined": "no CPU time was observed in the window: the CPU-time part of the "
    "energy is unattributed (reported beside, not as the process's)",
    "gpu-attribution-undefined": "this GPU's use by the process tree could not be told apart "
    "from other processes': its energy is unattributed",
    "coarse-cpu-clock": "the machine CPU clock counts 10 ms ticks: the CPU share of this short "
    "window is uncertain",
    "modeled": "modeled figure, not a measurement",
}


def explain(flag: str) -> str:
    prefix = flag.split(":", 1)[0]
    text = FLAG_TEXT.get(prefix)
    return f"{flag}: {text}" if text else flag
