"""The Meter interface, the window API and the Measurement record.

Every meter keeps a *cumulative* energy per domain (joules) that only grows. Counter meters
(RAPL, the NVML energy counter) grow it from hardware counter deltas; sampled meters (Jetson
rails, batteries, NVML power) grow it by trapezoidal integration of power samples; modeled meters
grow it by ``P(utilization) × Δt``. ``sample()`` advances it (called at window boundaries and, while
a window is open, by one shared background poll thread). A window is the difference of two
snapshots, so windows may nest or overlap freely (``round ⊃ train, upload, …``).

Events (a counter wrap that had to be dropped, a read error, a short window …) are counted
cumulatively too; a window carries the flags whose count grew between its two snapshots.

Units: seconds (s), joules (J), watts (W) throughout, unless a name says otherwise.
"""

from __future__ import annotations

import contextlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fedenergy.meters.attribution import CpuAccounting, default_accounting

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
      process_share: this process tree's CPU time ÷ machine busy CPU time over the window (0..1).
      process_j: ``total_j × process_share`` (J), the energy attributed to this process tree.
      process_cpu_s / machine_cpu_s: the two CPU times behind the share (s).
      flags: machine-readable tokens (``wrap-dropped:cpu.package[0]``,
        ``short-window-estimated:gpu[0]``, ``mig-shared:gpu[0]`` …).
      warnings: human-readable sentences explaining the flags and modeled figures.
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
        return d


@dataclass(frozen=True)
class Snapshot:
    """Cumulative state of a meter at one instant: t (s), energy (J per domain), event counts."""

    t: float
    energy: dict[str, float]
    events: dict[str, int]


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
    "attribution-undefined": "no CPU time was observed in the window: process share set to 0",
    "modeled": "modeled figure, not a measurement",
}


def explain(flag: str) -> str:
    prefix = flag.split(":", 1)[0]
    text = FLAG_TEXT.get(prefix)
    return f"{flag}: {text}" if text else flag


class _Poller:
    """One background thread per process that calls ``sample()`` on registered meters.

    Meters register while they have an open window and a finite ``poll_interval_s``; the thread
    exits when nothing is registered.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._meters: dict[int, list[Any]] = {}  # id -> [meter, refcount, next_due]
        self._thread: threading.Thread | None = None

    def register(self, meter: Meter) -> None:
        interval = meter.poll_interval_s
        if not interval or interval <= 0:
            return
        with self._cond:
            entry = self._meters.get(id(meter))
            if entry:
                entry[1] += 1
            else:
                self._meters[id(meter)] = [meter, 1, time.monotonic() + interval]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="fedenergy-meter-poll", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def unregister(self, meter: Meter) -> None:
        with self._cond:
            entry = self._meters.get(id(meter))
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self._meters[id(meter)]
            self._cond.notify_all()

    def active(self, meter: Meter) -> bool:
        with self._cond:
            return id(meter) in self._meters

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._meters:
                    self._thread = None
                    return
                now = time.monotonic()
                due = [e for e in self._meters.values() if e[2] <= now]
                if not due:
                    wait = min(e[2] for e in self._meters.values()) - now
                    self._cond.wait(timeout=max(wait, 0.0))
                    continue
                for e in due:
                    e[2] = now + e[0].poll_interval_s
            for e in due:
                with contextlib.suppress(Exception):  # a poll must never kill the thread
                    e[0].sample()


POLLER = _Poller()


class _OpenWindow:
    __slots__ = ("snap", "proc_s", "mach_s")

    def __init__(self, snap: Any, proc_s: float, mach_s: float) -> None:
        self.snap = snap
        self.proc_s = proc_s
        self.mach_s = mach_s


class WindowHandle:
    """Yielded by ``window()``; ``measurement`` is set when the ``with`` block exits."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.measurement: Measurement | None = None


class Windowed(ABC):
    """Named, nestable windows over cumulative snapshots, with CPU-time attribution."""

    clock: Clock
    accounting: CpuAccounting

    def _init_windows(self, clock: Clock | None, accounting: CpuAccounting | None) -> None:
        self.clock = clock or time.monotonic
        self.accounting = accounting or default_accounting()
        self._windows: dict[str, _OpenWindow] = {}
        self._wlock = threading.Lock()

    @abstractmethod
    def _take_snapshot(self) -> Any: ...

    @abstractmethod
    def _build(
        self, name: str, begin: Any, end: Any, attribution: tuple[float, float]
    ) -> Measurement: ...

    @abstractmethod
    def _start_polling(self) -> None: ...

    @abstractmethod
    def _stop_polling(self) -> None: ...

    @property
    def open_windows(self) -> list[str]:
        return list(self._windows)

    def begin(self, name: str) -> None:
        """Open the window ``name`` (names must be unique among open windows)."""
        with self._wlock:
            if name in self._windows:
                raise ValueError(f"window {name!r} is already open")
            first = not self._windows
            self._windows[name] = _OpenWindow(None, 0.0, 0.0)
        try:
            snap = self._take_snapshot()
            proc, mach = self.accounting.process_cpu_s(), self.accounting.machine_cpu_s()
        except BaseException:
            with self._wlock:
                self._windows.pop(name, None)
            raise
        with self._wlock:
            self._windows[name] = _OpenWindow(snap, proc, mach)
        if first:
            self._start_polling()

    def end(self, name: str) -> Measurement:
        """Close the window ``name`` and return its Measurement."""
        with self._wlock:
            w = self._windows.pop(name, None)
            last = not self._windows
        if w is None:
            raise KeyError(f"window {name!r} is not open")
        try:
            snap = self._take_snapshot()
            proc, mach = self.accounting.process_cpu_s(), self.accounting.machine_cpu_s()
        finally:
            if last:
                self._stop_polling()
        return self._build(name, w.snap, snap, (proc - w.proc_s, mach - w.mach_s))

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[WindowHandle]:
        """``with meter.window("train") as w: ...`` then read ``w.measurement``."""
        handle = WindowHandle(name)
        self.begin(name)
        try:
            yield handle
        finally:
            handle.measurement = self.end(name)


def attribute(total_j: float, proc_s: float, mach_s: float) -> tuple[float, float, list[str]]:
    """Process share of ``total_j``: process-tree CPU time ÷ machine busy CPU time, in [0, 1].

    All machine energy, idle included, is split over busy time (PowerJoular's rule), so a
    dedicated client gets a share close to 1. Returns (share, process_j, flags).
    """
    if mach_s <= 0.0:
        if proc_s > 0.0:
            return 1.0, total_j, []
        return 0.0, 0.0, ["attribution-undefined"]
    share = min(1.0, max(0.0, proc_s / mach_s))
    return share, total_j * share, []


def diff_snapshots(begin: Snapshot, end: Snapshot) -> tuple[dict[str, float], list[str]]:
    """Per-domain joules and the flags whose event count grew between two snapshots."""
    joules = {d: max(0.0, end.energy.get(d, 0.0) - begin.energy.get(d, 0.0)) for d in end.energy}
    flags = sorted(k for k, n in end.events.items() if n > begin.events.get(k, 0))
    return joules, flags


class Meter(Windowed):
    """One energy source. Subclasses implement ``probe``, ``domains`` and ``_update``.

    Class attributes: ``name`` (short id), ``kind`` (``counter`` | ``power`` | ``model``),
    ``scope`` (``machine`` | ``device`` | ``process``), ``provenance`` (``measured`` |
    ``modeled``). ``poll_interval_s``: how often the background thread must call ``sample()``
    while a window is open (None: never needed).

    ``poll=False`` disables the background thread (tests drive ``sample()`` by hand).
    """

    name: str = "meter"
    kind: Kind = "counter"
    scope: Scope = "machine"
    provenance: str = "measured"
    poll_interval_s: float | None = None
    # What this meter's total covers: "machine" (RAPL, CPU model), "device" (the whole client
    # device: board rails, battery, board model) or "gpu".
    total_scope: str = "machine"

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        accounting: CpuAccounting | None = None,
        poll: bool = True,
    ) -> None:
        self._init_windows(clock, accounting)
        self.poll = poll
        self._lock = threading.RLock()
        self._energy: dict[str, float] = {}
        self._events: dict[str, int] = {}
        self._availability: Availability | None = None
        self._last_power: dict[str, tuple[float, float]] = {}

    # --- to implement -------------------------------------------------------------------
    def probe(self) -> Availability:
        """Say whether this meter can be read here, and why not (re-probes; result cached)."""
        self._availability = self._probe()
        return self._availability

    @abstractmethod
    def _probe(self) -> Availability:
        """Discover and test-read the hardware."""

    @abstractmethod
    def domains(self) -> list[Domain]:
        """The domains this meter reports (after a successful probe)."""

    @abstractmethod
    def _update(self, now: float) -> None:
        """Read the hardware and grow ``self._energy`` (J); count events with ``_event``."""

    # --- shared machinery ---------------------------------------------------------------
    @property
    def availability(self) -> Availability:
        if self._availability is None:
            self._availability = self.probe()
        return self._availability

    def _event(self, key: str) -> None:
        self._events[key] = self._events.get(key, 0) + 1

    def _add(self, domain: str, joules: float) -> None:
        self._energy[domain] = self._energy.get(domain, 0.0) + joules

    def _power_sample(
        self, domain: str, now: float, watts: float | None, missing_flag: str = "read-error"
    ) -> None:
        """Trapezoidal integration of a power sample (W) taken at ``now`` (s).

        ``watts=None`` (unreadable now) counts ``missing_flag:<domain>`` and breaks the series:
        the gap up to the next good sample is dropped, not guessed.
        """
        if watts is None:
            self._event(f"{missing_flag}:{domain}")
            self._last_power.pop(domain, None)
            self._energy.setdefault(domain, 0.0)
            return
        last = self._last_power.get(domain)
        if last is not None and now > last[0]:
            self._add(domain, 0.5 * (last[1] + watts) * (now - last[0]))
        else:
            self._energy.setdefault(domain, 0.0)
        self._last_power[domain] = (now, watts)

    def sample(self) -> None:
        """Read the sensor now and advance the cumulative energy (thread-safe)."""
        with self._lock:
            self._update(self.clock())

    def snapshot(self) -> Snapshot:
        """``sample()`` and return the cumulative state."""
        with self._lock:
            now = self.clock()
            self._update(now)
            return Snapshot(now, dict(self._energy), dict(self._events))

    def _take_snapshot(self) -> Snapshot:
        if not self.availability.available:
            raise RuntimeError(f"{self.name}: {self.availability.reason}")
        return self.snapshot()

    def _start_polling(self) -> None:
        if self.poll:
            POLLER.register(self)

    def _stop_polling(self) -> None:
        if self.poll:
            POLLER.unregister(self)

    def window_energy(self, begin: Snapshot, end: Snapshot) -> tuple[dict[str, float], list[str]]:
        """Per-domain joules and flags of a window; meters may refine (e.g. short windows)."""
        return diff_snapshots(begin, end)

    def components(
        self, begin: Snapshot, end: Snapshot, *, informational: bool = False
    ) -> tuple[dict[str, Component], list[str]]:
        joules, flags = self.window_energy(begin, end)
        comps: dict[str, Component] = {}
        for dom in self.domains():
            if dom.name not in joules:
                continue
            comps[dom.name] = Component(
                dom.name,
                joules[dom.name],
                dom.provenance,
                self.kind,
                self.scope,
                dom.additive and not informational,
            )
        return comps, flags

    def _build(
        self, name: str, begin: Snapshot, end: Snapshot, attribution: tuple[float, float]
    ) -> Measurement:
        comps, flags = self.components(begin, end)
        return make_measurement(
            name,
            begin.t,
            end.t - begin.t,
            comps,
            flags,
            attribution,
            self.total_scope,
            self.notes(),
        )

    def notes(self) -> list[str]:
        """Standing warnings attached to every window of this meter (e.g. model error)."""
        return []

    def close(self) -> None:
        """Release files/handles. The meter must not be used afterwards."""

    def describe(self) -> dict[str, Any]:
        """Probe result and domains as a plain dict (for ``fedenergy meters``)."""
        av = self.availability
        return {
            "name": self.name,
            "available": av.available,
            "status": av.status,
            "reason": av.reason,
            "fix": av.fix,
            "kind": self.kind,
            "scope": self.scope,
            "provenance": self.provenance,
            "domains": [asdict(d) for d in self.domains()] if av.available else [],
        }


def make_measurement(
    name: str,
    start: float,
    duration: float,
    comps: dict[str, Component],
    flags: list[str],
    attribution: tuple[float, float],
    total_scope: str,
    notes: list[str],
) -> Measurement:
    total = sum(c.joules for c in comps.values() if c.additive)
    proc_s, mach_s = attribution
    share, pj, aflags = attribute(total, proc_s, mach_s)
    flags = sorted(set(flags) | set(aflags))
    warnings = [explain(f) for f in flags] + list(notes)
    return Measurement(
        name, start, duration, comps, total, total_scope, share, pj, proc_s, mach_s, flags, warnings
    )
