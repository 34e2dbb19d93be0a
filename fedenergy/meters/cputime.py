"""Fine-grained CPU time: this process tree's and the machine's, in nanosecond-resolution units.

The tick sources (``os.times``, ``/proc/<pid>/stat``, ``/proc/stat``) count in 10 ms steps, so a
5 ms call reads 0 or 1 tick and its share comes out 0, 1 or undefined. The sources here resolve
nanoseconds (or microseconds), in this order:

process tree
  * ``cgroup``: the ``usage_usec`` line of a cgroup v2 ``cpu.stat`` (µs; everything in that
    cgroup, exited threads and children included). Used when asked for, e.g. a client alone in
    its container.
  * ``tree`` (default): this process from ``time.process_time_ns()`` (ns, all threads), reaped
    children from ``getrusage(RUSAGE_CHILDREN)`` (µs), and live descendants from
    ``/proc/<pid>/task/<tid>/schedstat`` (ns of CPU each thread ran). For another pid, or under a
    fake root, the pid itself is read from its ``task/*/schedstat`` too.
machine (busy time of all CPUs)
  * ``/proc/schedstat``: the 7th number of every ``cpuN`` line is the ns tasks ran on that CPU
    (kernel ``Documentation/scheduler/sched-stats.rst``; needs CONFIG_SCHEDSTATS);
  * cgroup v1 root ``cpuacct.usage`` (ns; every task of the machine is in the root cpuacct group);
  * else ``/proc/stat`` ticks (coarse; the share of a window shorter than about 0.1 s is then
    flagged ``coarse-cpu-clock``).
  Under a sysfs root (a container given the host's files) these are looked for under the root
  first; a root without any of them falls back to the live system.

A kernel updates a running task's runtime at scheduler ticks and switches, so any reading of
another CPU may lag by up to one tick; the process side uses ``process_time_ns`` (exact) for
itself. Cumulative readings are clamped so that they never decrease (a child reaped between
reading ``RUSAGE_CHILDREN`` and walking the live descendants is missed for one reading). A
grandchild reaped by a live child leaves the tree's figure until that child is reaped; the clamp
then holds the figure until the tree's time catches up (rare for a client: DataLoader workers
are direct children).
"""

from __future__ import annotations

import os
import resource
import time

from fedenergy.meters.attribution import CpuTicks, root_path


def parse_schedstat_cpus(text: str) -> int:
    """Σ over ``cpuN`` lines of /proc/schedstat of the ns tasks ran on that CPU (7th field)."""
    total, seen = 0, False
    for line in text.splitlines():
        f = line.split()
        if f and f[0].startswith("cpu") and f[0][3:].isdigit() and len(f) >= 8:
            total += int(f[7])
            seen = True
    if not seen:
        raise ValueError("no cpuN line with a run-time field in /proc/schedstat")
    return total


def parse_cpu_stat_usec(text: str) -> int:
    """``usage_usec`` (µs) from a cgroup v2 ``cpu.stat``."""
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == "usage_usec":
            return int(v)
    raise ValueError("no usage_usec line in cpu.stat")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def task_run_ns(root: str | None, pid: int) -> int:
    """Σ of the first field (ns on a CPU) of ``/proc/<pid>/task/*/schedstat`` (0 if gone)."""
    base = root_path(root, f"/proc/{pid}/task")
    try:
        tids = os.listdir(base)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    total = 0
    for tid in tids:
        try:
            total += int(_read(os.path.join(base, tid, "schedstat")).split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            continue
    return total


def descendants(root: str | None, pid: int) -> list[int]:
    """Live descendants of ``pid`` from ``/proc/<p>/task/<t>/children`` (CONFIG_PROC_CHILDREN)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        base = root_path(root, f"/proc/{p}/task")
        try:
            tids = os.listdir(base)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for tid in tids:
            try:
                kids = [int(x) for x in _read(os.path.join(base, tid, "children")).split()]
            except (FileNotFoundError, ValueError):
                continue
            out += [k for k in kids if k not in out]
            todo += kids
    return out


class FineAccounting:
    """Process-tree and machine CPU time (s, cumulative) from the finest sources available.

    root: the sysfs root standing in for ``/`` (containers, tests): the machine files are looked
    for under it first, then on the live system. proc_root: where the *process* side is read
    (default: the live ``/proc``; tests give a fake tree). pid: the tree's root process (default:
    this one). cgroup: a cgroup v2 directory, relative to ``<root>/sys/fs/cgroup``, whose
    ``cpu.stat`` is the process side, or None for the process tree. ``source`` names the two
    clocks; ``coarse`` is True when the machine clock is ticks.
    """

    def __init__(
        self,
        root: str | None = None,
        pid: int | None = None,
        cgroup: str | None = None,
        proc_root: str | None = None,
    ) -> None:
        self.root = root if root and root != "/" else None
        self.proc_root = proc_root if proc_root and proc_root != "/" else None
        self.pid = pid or os.getpid()
        self._live_self = self.pid == os.getpid() and self.proc_root is None
        self._cgroup = None
        if cgroup is not None:
            base = root_path(self.root, "/sys/fs/cgroup/" + cgroup.lstrip("/"))
            self._cgroup = os.path.join(base, "cpu.stat")
        self._machine_kind, self._machine_path = self._pick_machine()
        self._ticks = CpuTicks(self.root) if self._machine_kind == "ticks" else None
        self._last_proc = 0.0
        self._last_mach = 0.0

    def _pick_machine(self) -> tuple[str, str]:
        roots = [self.root, None] if self.root else [None]
        for r in roots:
            p = root_path(r, "/proc/schedstat")
            try:
                parse_schedstat_cpus(_read(p))
                return "schedstat", p
            except (OSError, ValueError):
                pass
            for rel in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu"):
                p = root_path(r, f"/sys/fs/cgroup/{rel}/cpuacct.usage")
                try:
                    int(_read(p).strip())
                    return "cpuacct", p
                except (OSError, ValueError):
                    continue
            if r is not None and os.path.exists(root_path(r, "/proc/stat")):
                break  # the root has its own /proc/stat: its ticks, not the live clocks
        return "ticks", root_path(self.root, "/proc/stat")

    @property
    def coarse(self) -> bool:
        """True when the machine clock counts scheduler ticks (USER_HZ, 10 ms)."""
        return self._machine_kind == "ticks"

    @property
    def process_source(self) -> str:
        if self._cgroup:
            return f"{self._cgroup} usage_usec"
        if self._live_self:
            return "process_time_ns + RUSAGE_CHILDREN + descendants' schedstat"
        return f"/proc/{self.pid}/task/*/schedstat + descendants"

    @property
    def machine_source(self) -> str:
        if self._ticks is not None:
            return f"{self._ticks.source} (ticks)"
        return self._machine_path

    @property
    def source(self) -> str:
        return f"{self.process_source} / {self.machine_source}"

    def pid_visible(self, pid: int) -> bool:
        """Whether ``pid`` names a process in this pid namespace (NVML reports host pids)."""
        return os.path.exists(root_path(self.proc_root, f"/proc/{pid}"))

    def tree_pids(self) -> set[int]:
        """This tree's pids (the root pid and its live descendants)."""
        return {self.pid, *descendants(self.proc_root, self.pid)}

    def process_cpu_s(self) -> float:
        if self._cgroup:
            v = parse_cpu_stat_usec(_read(self._cgroup)) / 1e6
        else:
            pr = self.proc_root
            if self._live_self:
                # reaped children first, live ones second: a child reaped between the two reads
                # is then missed for one reading (the clamp below holds), never counted twice
                ch = resource.getrusage(resource.RUSAGE_CHILDREN)
                own = time.process_time_ns() / 1e9 + ch.ru_utime + ch.ru_stime
            else:
                own = task_run_ns(pr, self.pid) / 1e9
            v = own + sum(task_run_ns(pr, p) for p in descendants(pr, self.pid)) / 1e9
        self._last_proc = max(self._last_proc, v)
        return self._last_proc

    def machine_cpu_s(self) -> float:
        if self._ticks is not None:
            v = self._ticks.read()[0]
        elif self._machine_kind == "schedstat":
            v = parse_schedstat_cpus(_read(self._machine_path)) / 1e9
        else:
            v = int(_read(self._machine_path).strip()) / 1e9
        self._last_mach = max(self._last_mach, v)
        return self._last_mach


def default_accounting(root: str | None = None) -> FineAccounting:
    """This process tree against the machine, with the finest clocks under ``root``."""
    return FineAccounting(root)
