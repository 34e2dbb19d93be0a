"""Build fake sysfs/procfs trees under a directory that stands in for ``/``.

The meters' real parsing code reads these files; nothing here is mocked below the file level.
"""

from __future__ import annotations

import os
from pathlib import Path

UNREADABLE = "unreadable"  # as a value: create the attribute as a directory, so reading it fails


class FakeClock:
    """A clock that only moves when told to: ``clock()`` returns ``clock.t`` (s)."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class ManualAccounting:
    """CPU times set by hand (s): ``proc`` for this process tree, ``mach`` for the machine.

    ``step``: seconds added to both after every read (``step=1`` gives share 1 with no setup).
    """

    def __init__(self, proc: float = 0.0, mach: float = 0.0, step: float = 1.0) -> None:
        self.proc, self.mach, self.step = proc, mach, step

    def process_cpu_s(self) -> float:
        v = self.proc
        self.proc += self.step
        return v

    def machine_cpu_s(self) -> float:
        v = self.mach
        self.mach += self.step
        return v


def write(root: str | os.PathLike, rel: str, value: object) -> Path:
    p = Path(root) / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if value == UNREADABLE:
        if p.is_file():
            p.unlink()
        p.mkdir(exist_ok=True)
    else:
        p.write_text(f"{value}\n")
    return p


# --- RAPL ------------------------------------------------------------------------------------
def rapl_zone(
    root: str | os.PathLike,
    zone_id: str,
    name: str,
    energy_uj: int,
    max_uj: int | str | None = 262143328850,
    base: str = "sys/class/powercap",
) -> Path:
    """One zone directory ``<base>/<zone_id>`` with name, energy_uj, max_energy_range_uj."""
    d = f"{base}/{zone_id}"
    write(root, f"{d}/name", name)
    write(root, f"{d}/energy_uj", energy_uj)
    if max_uj is not None:
        write(root, f"{d}/max_energy_range_uj", max_uj)
    return Path(root) / d


def set_energy(
    root: str | os.PathLike, zone_id: str, energy_uj: int, base: str = "sys/class/powercap"
) -> None:
    write(root, f"{base}/{zone_id}/energy_uj", energy_uj)


# --- Jetson INA3221 ----------------------------------------------------------------------------
def jetson_hwmon(
    root: str | os.PathLike,
    rails: dict[int, tuple],
    dev: str = "1-0040",
    hwmon: str = "hwmon3",
    via_devices: bool = False,
) -> Path:
    """New layout. rails: ``{N: (label, mW)}`` (power file) or ``{N: (label, mV, mA)}``."""
    base = f"sys/bus/i2c/devices/{dev}" if via_devices else f"sys/bus/i2c/drivers/ina3221/{dev}"
    if via_devices:
        write(root, f"{base}/name", "ina3221")
    d = f"{base}/hwmon/{hwmon}"
    for n, spec in rails.items():
        write(root, f"{d}/in{n}_label", spec[0])
        if len(spec) == 2:
            write(root, f"{d}/power{n}_input", spec[1])
        else:
            write(root, f"{d}/in{n}_input", spec[1])
            write(root, f"{d}/curr{n}_input", spec[2])
    return Path(root) / d


def set_jetson_hwmon_power(
    root, n: int, mw: float, dev: str = "1-0040", hwmon: str = "hwmon3"
) -> None:
    write(root, f"sys/bus/i2c/drivers/ina3221/{dev}/hwmon/{hwmon}/power{n}_input", mw)


def jetson_iio(
    root: str | os.PathLike, rails: dict[int, tuple], dev: str = "6-0040", iio: str = "iio:device0"
) -> Path:
    """Old layout. rails: ``{N: (label, mW)}`` or ``{N: (label, mV, mA)}``."""
    d = f"sys/bus/i2c/drivers/ina3221x/{dev}/{iio}"
    for n, spec in rails.items():
        write(root, f"{d}/rail_name_{n}", spec[0])
        if len(spec) == 2:
            write(root, f"{d}/in_power{n}_input", spec[1])
        else:
            write(root, f"{d}/in_voltage{n}_input", spec[1])
            write(root, f"{d}/in_current{n}_input", spec[2])
    return Path(root) / d


# --- battery -------------------------------------------------------------------------------------
def battery(
    root: str | os.PathLike,
    name: str = "BAT0",
    status: str = "Discharging",
    power_uw: int | None = None,
    voltage_uv: int | None = None,
    current_ua: int | None = None,
) -> Path:
    d = f"sys/class/power_supply/{name}"
    write(root, f"{d}/type", "Battery")
    write(root, f"{d}/status", status)
    if power_uw is not None:
        write(root, f"{d}/power_now", power_uw)
    if voltage_uv is not None:
        write(root, f"{d}/voltage_now", voltage_uv)
    if current_ua is not None:
        write(root, f"{d}/current_now", current_ua)
    return Path(root) / d


def ac_adapter(root: str | os.PathLike, online: int = 1) -> None:
    write(root, "sys/class/power_supply/AC/type", "Mains")
    write(root, "sys/class/power_supply/AC/online", online)


# --- procfs --------------------------------------------------------------------------------------
def proc_stat(root: str | os.PathLike, busy: int, idle: int) -> None:
    """Aggregate cpu line with ``busy`` jiffies in ``user`` and ``idle`` in idle."""
    line = f"{busy} 0 0 {idle} 0 0 0 0 0 0"
    write(root, "proc/stat", f"cpu  {line}\ncpu0 {line}")


def cpuinfo(root: str | os.PathLike, model: str, logical: int = 4, sockets: int = 1) -> None:
    blocks = []
    for i in range(logical):
        blocks.append(f"processor\t: {i}\nmodel name\t: {model}\nphysical id\t: {i % sockets}\n")
    write(root, "proc/cpuinfo", "\n".join(blocks))


def device_tree_model(root: str | os.PathLike, model: str) -> None:
    p = Path(root) / "proc/device-tree/model"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(model.encode() + b"\x00")


# --- fine-grained CPU time -----------------------------------------------------------------------
def task_schedstat(root: str | os.PathLike, pid: int, run_ns: int, tid: int | None = None) -> None:
    """``/proc/<pid>/task/<tid>/schedstat``: ns on a CPU, ns waiting, timeslices."""
    write(root, f"proc/{pid}/task/{tid or pid}/schedstat", f"{run_ns} 0 1")


def proc_children(root: str | os.PathLike, pid: int, kids: list[int], tid: int | None = None):
    """``/proc/<pid>/task/<tid>/children``: the pids this thread forked."""
    write(root, f"proc/{pid}/task/{tid or pid}/children", " ".join(map(str, kids)))


def proc_schedstat(root: str | os.PathLike, per_cpu_run_ns: list[int]) -> None:
    """``/proc/schedstat`` (version 15 layout): the 7th number of each cpuN line is its ns."""
    lines = ["version 15", "timestamp 4295000000"]
    for i, ns in enumerate(per_cpu_run_ns):
        lines.append(f"cpu{i} 0 0 100 50 80 40 {ns} 1000 90")
        lines.append(f"domain0 {'f' * 4} 0 0 0 0 0 0 0 0")
    write(root, "proc/schedstat", "\n".join(lines))


def cpuacct_usage(root: str | os.PathLike, ns: int) -> None:
    """cgroup v1 root ``cpuacct.usage`` (ns of every task on the machine)."""
    write(root, "sys/fs/cgroup/cpuacct/cpuacct.usage", ns)


def cgroup_cpu_stat(root: str | os.PathLike, cgroup: str, usage_usec: int) -> None:
    """cgroup v2 ``<cgroup>/cpu.stat`` with ``usage_usec`` (and user/system split)."""
    write(
        root,
        f"sys/fs/cgroup/{cgroup}/cpu.stat",
        f"usage_usec {usage_usec}\nuser_usec {usage_usec}\nsystem_usec 0\n"
        "nr_periods 0\nnr_throttled 0\nthrottled_usec 0",
    )


def gpu_load(root: str | os.PathLike, permille: int | str) -> None:
    """Jetson integrated-GPU busy load, 0..1000 (``/sys/devices/gpu.0/load``)."""
    write(root, "sys/devices/gpu.0/load", permille)
