"""CPU-time accounting in ticks: machine busy time, this process tree's CPU time, start-up cost.

The client's share of machine energy over a window is
``Δ(process tree user+sys CPU time) / Δ(machine busy CPU time)`` (PowerJoular's rule: all
power, idle included, is split over busy time; see docs/meters.md). Machine busy time comes from
``/proc/stat`` under the configured root, else ``psutil.cpu_times()``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Protocol

try:
    _CLK_TCK = float(os.sysconf("SC_CLK_TCK"))
except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
    _CLK_TCK = 100.0


def root_path(root: str | None, path: str) -> str:
    """``path`` (absolute, e.g. ``/proc/stat``) under the filesystem root ``root``."""
    if not root or root == "/":
        return path
    return os.path.join(root, path.lstrip("/"))


def parse_proc_stat(text: str) -> tuple[int, int]:
    """(busy, total) jiffies from the aggregate ``cpu`` line of /proc/stat.

    busy = user + nice + system + irq + softirq; total = busy + idle + iowait. ``steal`` (time a
    hypervisor gave to another guest) and ``guest`` (already inside user) are left out.
    """
    for line in text.splitlines():
        if line.startswith("cpu "):
            f = [int(x) for x in line.split()[1:]]
            f += [0] * (8 - len(f))
            user, nice, system, idle, iowait, irq, softirq = f[:7]
            busy = user + nice + system + irq + softirq
            return busy, busy + idle + iowait
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


class CpuTicks:
    """Machine CPU time source: (busy_s, total_s) summed over all CPUs since boot."""

    def __init__(self, root: str | None = None) -> None:
        self.path = root_path(root, "/proc/stat")
        self.use_proc = os.path.exists(self.path)

    @property
    def source(self) -> str:
        return self.path if self.use_proc else "psutil.cpu_times()"

    def read(self) -> tuple[float, float]:
        if self.use_proc:
            with open(self.path) as f:
                busy, total = parse_proc_stat(f.read())
            return busy / _CLK_TCK, total / _CLK_TCK
        import psutil

        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        return busy, busy + t.idle + getattr(t, "iowait", 0.0)


class CpuAccounting(Protocol):
    """What the window API needs for attribution (both in seconds, cumulative)."""

    def process_cpu_s(self) -> float: ...

    def machine_cpu_s(self) -> float: ...


class PsutilAccounting:
    """Process tree CPU time in 10 ms ticks: self + reaped children + live descendants.

    The tick-based reference (and fallback); ``cputime.FineAccounting`` is the default.

    Fast path on Linux: ``os.times()`` for this process (1 µs) and the descendants from
    ``/proc/<pid>/task/<tid>/children`` (CONFIG_PROC_CHILDREN) with their ``/proc/<pid>/stat``
    utime+stime. ``psutil.Process.children(recursive=True)`` scans every process on the machine
    (≈5 ms on the loaded 2-core VM), so it is only the fallback.
    """

    def __init__(self, root: str | None = None, pid: int | None = None) -> None:
        import psutil

        self.pid = pid or os.getpid()
        self._self = self.pid == os.getpid()
        self._proc = psutil.Process(self.pid)
        self._ticks = CpuTicks(root)
        self._fast = os.path.exists(f"/proc/{self.pid}/task/{self.pid}/children")

    def _own(self) -> float:
        if self._self:
            t = os.times()
            return t.user + t.system + t.children_user + t.children_system
        t = self._proc.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def process_cpu_s(self) -> float:
        total = self._own()
        if self._fast:
            try:
                return total + sum(_stat_cpu_s(p) for p in _proc_descendants(self.pid))
            except OSError:
                self._fast = False
        import psutil

        try:
            children = self._proc.children(recursive=True)
        except psutil.Error:
            children = []
        for c in children:
            try:
                ct = c.cpu_times()
                total += ct.user + ct.system
            except psutil.Error:
                continue
        return total

    def machine_cpu_s(self) -> float:
        return self._ticks.read()[0]

    coarse = True

    @property
    def source(self) -> str:
        return f"os.times + /proc/<pid>/stat (ticks) / {self._ticks.source} (ticks)"


def _proc_descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue  # exited meanwhile
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except FileNotFoundError:
                continue
            out += kids
            todo += kids
    return out


def _stat_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` from /proc/<pid>/stat (0 if it exited meanwhile)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0.0
    fields = data[data.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@dataclass(frozen=True)
class StartupCost:
    """This process's own cost since it started.

    cpu_s: user + system CPU time of this process since it started (s) — in a fresh
    ``flwr-clientapp`` process this is mostly import cost. wall_s: seconds since start.
    started_at: the process start time (Unix epoch seconds, psutil ``create_time``).
    """

    cpu_s: float
    wall_s: float
    started_at: float

    def energy_j(self, watts_per_busy_cpu: float) -> float:
        """Energy (J) if each busy CPU-second costs ``watts_per_busy_cpu`` W."""
        return self.cpu_s * watts_per_busy_cpu


def startup_cost(pid: int | None = None) -> StartupCost:
    """CPU time (user+sys) this process has used since it started, and its age (psutil)."""
    import psutil

    p = psutil.Process(pid)
    t = p.cpu_times()
    created = p.create_time()
    return StartupCost(t.user + t.system, max(0.0, time.time() - created), created)
