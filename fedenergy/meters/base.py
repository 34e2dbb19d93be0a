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
    Share,
    Snapshot,
    explain,
)
from fedenergy.meters.shares import Part, combine, cpu_share
from fedenergy.meters.window import POLLER, Windowed


def cpu_clock_info(accounting: object) -> tuple[str, bool]:
    """(source text, coarse?) of an accounting object's CPU clocks (unknown: ``""``, False)."""
    return str(getattr(accounting, "source", "")), bool(getattr(accounting, "coarse", False))


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
        self._use: dict[str, float] = {}  # cumulative use counters for attribution

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
            return Snapshot(now, dict(self._energy), dict(self._events), dict(self._use))

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

    def attribution_parts(
        self, comps: dict[str, Component], begin: Snapshot, end: Snapshot
    ) -> list[Part]:
        """Split this meter's additive joules into parts with a share key (default: all by CPU
        time, key ``cpu``)."""
        return [("cpu", sum(c.joules for c in comps.values() if c.additive), "cpu")]

    def window_shares(self, begin: Snapshot, end: Snapshot) -> tuple[dict[str, Share], list[str]]:
        """Shares other than CPU time this meter knows for a window (e.g. GPU use), and flags."""
        return {}, []

    def covers(self) -> str:
        """What this meter's total covers, in words."""
        return self.name

    def _build(
        self, name: str, begin: Snapshot, end: Snapshot, attribution: tuple[float, float]
    ) -> Measurement:
        comps, flags = self.components(begin, end)
        shares, sflags = self.window_shares(begin, end)
        return make_measurement(
            name,
            begin.t,
            end.t - begin.t,
            comps,
            flags + sflags,
            attribution,
            self.total_scope,
            self.notes(),
            parts=self.attribution_parts(comps, begin, end),
            shares=shares,
            covers=self.covers(),
            cpu_clock=cpu_clock_info(self.accounting),
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
    *,
    parts: list[Part] | None = None,
    shares: dict[str, Share] | None = None,
    covers: str = "",
    cpu_clock: tuple[str, bool] = ("", False),
) -> Measurement:
    """Assemble a Measurement: total, CPU share, per-part attribution, flags and warnings.

    parts: ``(part, J, share key)`` splitting the total (default: all of it by CPU time);
    parts of the same name and key are merged. shares: shares besides ``cpu`` (GPU use).
    """
    total = sum(c.joules for c in comps.values() if c.additive)
    proc_s, mach_s = attribution
    cpu, cflags = cpu_share(proc_s, mach_s, cpu_clock[0], coarse=cpu_clock[1], duration=duration)
    merged: dict[tuple[str, str], float] = {}
    for part, joules, key in [("cpu", total, "cpu")] if parts is None else parts:
        merged[(part, key)] = merged.get((part, key), 0.0) + joules
    all_shares = {"cpu": cpu, **(shares or {})}
    attributed, pj, uj = combine([(p, j, k) for (p, k), j in merged.items()], all_shares)
    uses_cpu = any(k == "cpu" for _, k in merged)
    flags = sorted(set(flags) | (set(cflags) if uses_cpu else set()))
    warnings = [explain(f) for f in flags] + list(notes)
    return Measurement(
        name,
        start,
        duration,
        comps,
        total,
        total_scope,
        cpu.value or 0.0,
        pj,
        cpu.process,
        cpu.machine,
        flags,
        warnings,
        covers=covers,
        shares={k: v for k, v in all_shares.items() if any(k == key for _, key in merged)},
        attribution=attributed,
        unattributed_j=uj,
    )
