"""Modeled fallbacks when no sensor measures: power as a function of CPU utilization.

Utilization ``u`` (0..1) is machine busy ÷ total jiffies from ``/proc/stat`` (under the root) or
``psutil.cpu_times()``, computed per sample interval; energy grows by ``P(u) × Δt``. Sampled once
a second while a window is open (and at every window boundary).

* Raspberry Pi — PowerJoular's linear per-board fits ``P = a·u + b`` (W), from
  joular/powerjoular ``src/raspberry_pi_cpu_formula.adb`` (commit c9358cb). They were fitted
  against a wall power meter while stressing the CPU (joular/powerjoular#37), so they are a
  whole-board figure (``total_scope = device``). We re-implement the published coefficients; no
  PowerJoular (GPL) code is used. Board from ``/proc/device-tree/model``.
* Any other host — CodeCarbon's CPU-load model ``P = TDP × (0.1 + 0.9·u³)`` (CodeCarbon
  ``core/cpu.py``). TDP from ``cpu_tdp.json`` (a sourced subset of CodeCarbon's MIT
  ``cpu_power.csv``) × sockets, or the user's ``tdp_w``, else CodeCarbon's default
  4 W × logical CPUs. Known error, from CodeCarbon's own RAPL sweep data
  (``codecarbon/data/hardware/cpu_load_profiling``; notes/energy-sources.md §3.4): −41 % to
  +11 % of RAPL energy over whole load sweeps, and 2–4× low at single 20–50 % load points.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fedenergy.meters.attribution import CpuAccounting, CpuTicks
from fedenergy.meters.base import Meter
from fedenergy.meters.records import Availability, Clock, Domain, Snapshot
from fedenergy.meters.sysfs import read_optional, resolve_root, root_path

DEFAULT_POLL_S = 1.0
DEFAULT_W_PER_CPU = 4.0  # CodeCarbon DEFAULT_POWER_PER_CORE (W per logical CPU)
# JSON, not CSV: Flower app bundles (FABs) ship only .py/.toml/.md/.json/.yaml files.
TDP_TABLE = Path(__file__).with_name("cpu_tdp.json")

MODEL_ERROR_NOTE = (
    "modeled CPU power TDP×(0.1+0.9·u³) (CodeCarbon's load model): on CodeCarbon's own RAPL "
    "sweep data it is off by −41 % to +11 % over whole sweeps and 2–4× at single load points"
)


@dataclass(frozen=True)
class PiModel:
    key: str  # provenance suffix, e.g. "rpi4"
    prefix: str  # /proc/device-tree/model starts with this
    a: float  # W per unit utilization
    b: float  # W at idle


# PowerJoular raspberry_pi_cpu_formula.adb, linear models (W; u in 0..1). Order matters: the
# Pi 400 must be tested before the Pi 4.
PI_MODELS = (
    PiModel("rpi5", "Raspberry Pi 5", 3.4579, 4.4032),
    PiModel("rpi400", "Raspberry Pi 400", 5.0254, 1.8221),
    PiModel("rpi4", "Raspberry Pi 4 Model B", 4.5344, 2.2857),
    PiModel("rpi3b+", "Raspberry Pi 3 Model B Plus", 3.2983, 2.0022),
    PiModel("rpizerow", "Raspberry Pi Zero W", 0.4733, 0.9201),
)


def pi_model_for(model: str) -> PiModel | None:
    s = model.replace("\x00", "").strip()
    for m in PI_MODELS:
        if s.startswith(m.prefix):
            return m
    return None


class UtilizationModelMeter(Meter):
    """Base for ``P(u)`` models; ``u`` over each sample interval."""

    kind = "model"
    scope = "machine"
    provenance = "modeled"
    domain = "cpu.modeled"

    def __init__(
        self,
        sysfs_root: str | None = None,
        *,
        ticks: CpuTicks | None = None,
        poll_s: float = DEFAULT_POLL_S,
        clock: Clock | None = None,
        accounting: CpuAccounting | None = None,
        poll: bool = True,
    ) -> None:
        super().__init__(clock=clock, accounting=accounting, poll=poll)
        self.root = resolve_root(sysfs_root)
        self.ticks = ticks or CpuTicks(self.root)
        self.poll_interval_s = poll_s
        self._last: tuple[float, float, float] | None = None  # (t, busy_s, total_s)
        self._u = 0.0

    def power_w(self, u: float) -> float:
        raise NotImplementedError

    def label(self) -> str:
        raise NotImplementedError

    def domains(self) -> list[Domain]:
        if not self.availability.available:
            return []
        return [Domain(self.domain, self.label())]

    def _update(self, now: float) -> None:
        try:
            busy, total = self.ticks.read()
        except (OSError, ValueError):
            self._event(f"read-error:{self.domain}")
            self._last = None
            self._energy.setdefault(self.domain, 0.0)
            return
        if self._last is not None:
            t0, b0, tot0 = self._last
            if total > tot0:
                self._u = min(1.0, max(0.0, (busy - b0) / (total - tot0)))
            if now > t0:
                self._add(self.domain, self.power_w(self._u) * (now - t0))
        self._energy.setdefault(self.domain, 0.0)
        self._last = (now, busy, total)

    def window_energy(self, begin: Snapshot, end: Snapshot) -> tuple[dict[str, float], list[str]]:
        joules, flags = super().window_energy(begin, end)
        return joules, sorted(set(flags) | {f"modeled:{self.domain}"})


class RpiModelMeter(UtilizationModelMeter):
    """Raspberry Pi board power from PowerJoular's linear fits (whole board, modeled)."""

    name = "rpi-model"
    scope = "device"
    total_scope = "device"
    domain = "board.modeled"

    def __init__(self, sysfs_root: str | None = None, **kw) -> None:
        super().__init__(sysfs_root, **kw)
        self.board: PiModel | None = None
        self.model_text = ""

    def _probe(self) -> Availability:
        path = root_path(self.root, "/proc/device-tree/model")
        text = read_optional(path)
        if text is None:
            return Availability("absent", f"not a Raspberry Pi ({path} missing)")
        self.model_text = text.replace("\x00", "").strip()
        self.board = pi_model_for(self.model_text)
        if self.board is None:
            kind = "Raspberry Pi model" if "Raspberry Pi" in text else "board"
            return Availability(
                "absent", f"no PowerJoular fit for this {kind}: {self.model_text!r}"
            )
        try:
            self.ticks.read()
        except (OSError, ValueError) as e:
            return Availability("unreadable", f"cannot read CPU utilization: {e}")
        return Availability("available")

    def power_w(self, u: float) -> float:
        assert self.board is not None
        return self.board.a * u + self.board.b

    def label(self) -> str:
        assert self.board is not None
        return f"modeled:powerjoular-{self.board.key}"

    def covers(self) -> str:
        return "whole board (modeled)"

    def notes(self) -> list[str]:
        assert self.board is not None
        return [
            f"modeled board power {self.board.a}·u + {self.board.b} W (PowerJoular linear "
            f"fit for {self.board.prefix}, from wall-meter measurements)"
        ]


def normalize_cpu_name(s: str) -> str:
    s = s.lower()
    s = re.sub(r"\((r|tm|c)\)", " ", s)
    s = re.sub(r"@.*$", " ", s)
    s = re.sub(r"\b\d+-core\b", " ", s)
    s = re.sub(r"\b(cpu|processor|with radeon graphics)\b", " ", s)
    return " ".join(s.split())


def load_tdp_table(path: str | os.PathLike | None = None) -> list[tuple[str, float, str]]:
    with open(path or TDP_TABLE, encoding="utf-8") as f:
        doc = json.load(f)
    return [(r["name"], float(r["tdp_w"]), r.get("source", "")) for r in doc["cpus"]]


def match_tdp(model_name: str, table: list[tuple[str, float, str]]) -> tuple[str, float] | None:
    """Longest table name whose every word is in the normalised model name; ties → None."""
    have = set(normalize_cpu_name(model_name).split())
    best: list[tuple[int, str, float]] = []
    for name, tdp, _src in table:
        words = normalize_cpu_name(name).split()
        if words and set(words) <= have:
            best.append((len(words), name, tdp))
    if not best:
        return None
    top = max(n for n, _, _ in best)
    winners = {(name, tdp) for n, name, tdp in best if n == top}
    return winners.pop() if len(winners) == 1 else None


def read_cpuinfo(root: str | None = None) -> tuple[str, int, int]:
    """(model name, logical CPUs, sockets) from /proc/cpuinfo under ``root``."""
    text = read_optional(root_path(resolve_root(root), "/proc/cpuinfo")) or ""
    model, logical, sockets = "", 0, set()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key == "model name" and not model:
            model = val
        elif key == "processor":
            logical += 1
        elif key == "physical id":
            sockets.add(val)
    return model, logical or (os.cpu_count() or 1), max(1, len(sockets))


class CpuTdpModelMeter(UtilizationModelMeter):
    """CodeCarbon-style ``TDP × (0.1 + 0.9·u³)`` for hosts with no readable sensor."""

    name = "cpu-model"

    def __init__(
        self,
        sysfs_root: str | None = None,
        *,
        tdp_w: float | None = None,
        table: str | os.PathLike | None = None,
        **kw,
    ) -> None:
        super().__init__(sysfs_root, **kw)
        self.model_name, self.logical_cpus, self.sockets = read_cpuinfo(self.root)
        self.tdp_source = ""
        if tdp_w is not None:
            if tdp_w <= 0:
                raise ValueError("tdp_w must be positive")
            self.tdp_w = float(tdp_w)
            self.tdp_source = "user override (tdp_w)"
        else:
            hit = match_tdp(self.model_name, load_tdp_table(table))
            if hit:
                self.tdp_w = hit[1] * self.sockets
                self.tdp_source = f"cpu_tdp.json: {hit[0]} {hit[1]:g} W × {self.sockets} socket(s)"
            else:
                self.tdp_w = DEFAULT_W_PER_CPU * self.logical_cpus
                self.tdp_source = (
                    f"CPU {self.model_name or 'unknown'!r} not in cpu_tdp.json: "
                    f"CodeCarbon default {DEFAULT_W_PER_CPU:g} W × "
                    f"{self.logical_cpus} logical CPUs"
                )

    def _probe(self) -> Availability:
        try:
            self.ticks.read()
        except (OSError, ValueError) as e:
            return Availability("unreadable", f"cannot read CPU utilization: {e}")
        return Availability("available")

    def power_w(self, u: float) -> float:
        return self.tdp_w * (0.1 + 0.9 * u**3)

    def label(self) -> str:
        return f"modeled:cpu-tdp({self.tdp_w:g}W, cubic)"

    def covers(self) -> str:
        return "cpu (modeled)"

    def notes(self) -> list[str]:
        return [MODEL_ERROR_NOTE + f"; TDP {self.tdp_w:g} W from {self.tdp_source}"]
