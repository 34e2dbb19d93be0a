"""The Meter interface: a cumulative energy per domain, read in windows (window.py) into
Measurement records (records.py).

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

import threading
from abc import abstractmethod
from dataclasses import asdict
from typing import Any

from fedenergy.meters.attribution import CpuAccounting
from fedenergy.meters.records import (
    Availability,
    Clock,
    Component,
    Domain,
    Kind,
    Measurement,
    Scope,
    Snapshot,
    explain,
)
from fedenergy.meters.window import POLLER, Windowed


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
