"""NVIDIA GPUs through NVML (``pynvml``, from the ``nvidia-ml-py`` package; optional).

Sources (notes/energy-sources.md §4, NVML API reference):
  * ``nvmlDeviceGetTotalEnergyConsumption``: mJ since the driver was loaded, Volta and newer.
    Read at window boundaries; the window energy is the difference.
  * Otherwise ``nvmlDeviceGetPowerUsage`` (mW) is sampled by the shared poll thread every
    ``power_poll_s`` (default 0.1 s) and integrated trapezoidally. (On Ampere-and-newer except
    GA100 this is a 1 s average, on older GPUs instantaneous.)
  * The counter updates every 20–100 ms (PETSc docs): when it did not change over a window, the
    window is estimated as power × duration and flagged ``short-window-estimated:gpu[i]``
    (Zeus's ``approx_instant_energy`` idea).
  * ``CUDA_VISIBLE_DEVICES``: indices, ``GPU-<uuid>`` (unique prefixes allowed, as CUDA does) and
    MIG forms (``MIG-<uuid>``, old ``MIG-GPU-<uuid>/gi/ci``); like CUDA, parsing stops at the first
    invalid entry. Indices are taken as NVML (PCI bus) order — exact when
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.
  * MIG: NVML cannot meter a slice; the whole GPU is measured once and flagged
    ``mig-shared:gpu[i]`` (CodeCarbon maps MIG to the parent GPU; Zeus refuses).
  * NVML gives no per-process GPU energy (codecarbon #936): each GPU's energy is attributed to
    the process tree by its GPU use — per-process utilization samples, else which processes hold
    a context (``gpu_use.py``) — and never by CPU time; undefined → unattributed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedenergy.meters import gpu_use
from fedenergy.meters.attribution import CpuAccounting
from fedenergy.meters.base import Meter
from fedenergy.meters.records import Availability, Clock, Component, Domain, Share, Snapshot
from fedenergy.meters.shares import Part

# Counter unchanged over a window shorter than this → estimate power × duration (notes §12:
# "for windows < 0.5 s"; the counter itself updates every 20–100 ms).
SHORT_WINDOW_S = 0.5
NVML_DEVICE_MIG_ENABLE = 1  # nvmlDeviceGetMigMode()[0] when MIG is on (nvml.h)
# NVML return codes meaning "no NVIDIA driver/library here" (nvml.h): treated as absent.
_ABSENT_CODES = {9, 12}  # NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_LIBRARY_NOT_FOUND


@dataclass
class Gpu:
    index: int
    handle: Any
    uuid: str
    name: str
    mode: str = ""  # "counter" | "power" | "" (unreadable)
    mig: bool = False
    reason: str = ""
    last_mj: int | None = None
    use: gpu_use.GpuUseState | None = None

    @property
    def domain(self) -> str:
        return f"gpu[{self.index}]"

    @property
    def label(self) -> str:
        src = "nvml" if self.mode == "counter" else "nvml-power"
        return f"measured:{src}:gpu{self.index}"


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class NvmlMeter(Meter):
    """All visible NVIDIA GPUs. ``nvml``: the pynvml module (injectable; imported lazily)."""

    name = "nvml"
    kind = "counter"
    scope = "device"
    provenance = "measured"
    total_scope = "gpu"

    def __init__(
        self,
        nvml: Any = None,
        *,
        visible: str | None = None,
        use_env: bool = True,
        power_poll_s: float = 0.1,
        pids: Callable[[], set[int]] | None = None,
        pid_visible: Callable[[int], bool] | None = None,
        clock: Clock | None = None,
        accounting: CpuAccounting | None = None,
        poll: bool = True,
    ) -> None:
        """pids: this process tree's pids (default: the accounting's ``tree_pids``, else this
        pid); pid_visible: whether a pid exists in our pid namespace (default: ``/proc/<pid>``)."""
        super().__init__(clock=clock, accounting=accounting, poll=poll)
        self._pids = pids or getattr(self.accounting, "tree_pids", None) or (lambda: {os.getpid()})
        self._visible_pid = (
            pid_visible
            or getattr(self.accounting, "pid_visible", None)
            or (lambda p: os.path.exists(f"/proc/{p}"))
        )
        self._nvml = nvml
        self._visible = visible
        self._use_env = use_env
        self.power_poll_s = power_poll_s
        self.gpus: list[Gpu] = []
        self.notes_: list[str] = []
        self._inited = False
        self.poll_interval_s = None

    # --- probe ----------------------------------------------------------------------------
    def _module(self) -> Any:
        if self._nvml is None:
            import pynvml  # optional dependency, imported lazily

            self._nvml = pynvml
        return self._nvml

    def _err(self) -> type[BaseException]:
        return getattr(self._nvml, "NVMLError", Exception)

    def _probe(self) -> Availability:
        self.close()
        try:
            nv = self._module()
        except ImportError:
            return Availability(
                "absent",
                "pynvml is not installed (no NVIDIA support)",
                "pip install 'fedenergy[nvidia]'  (installs nvidia-ml-py)",
            )
        err = self._err()
        try:
            nv.nvmlInit()
            self._inited = True
            count = int(nv.nvmlDeviceGetCount())
        except err as e:
            code = getattr(e, "value", None)
            if code in _ABSENT_CODES:
                return Availability("absent", f"no NVIDIA driver: {e}")
            return Availability(
                "unreadable", f"NVML initialisation failed: {e}", "check the driver with nvidia-smi"
            )
        if count == 0:
            return Availability("absent", "NVML reports no GPU")
        spec = self._visible
        if spec is None and self._use_env:
            spec = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            visible, mig_from_env = resolve_visible(nv, spec, count)
        except err as e:
            return Availability("unreadable", f"NVML error resolving CUDA_VISIBLE_DEVICES: {e}")
        if not visible:
            return Availability("absent", f"CUDA_VISIBLE_DEVICES={spec!r} hides every GPU")
        gpus: list[Gpu] = []
        for idx in visible:
            try:
                h = nv.nvmlDeviceGetHandleByIndex(idx)
                g = Gpu(idx, h, _s(nv.nvmlDeviceGetUUID(h)), _s(nv.nvmlDeviceGetName(h)))
            except err as e:
                gpus.append(Gpu(idx, None, "", "", reason=f"gpu{idx}: {e}"))
                continue
            g.mig = idx in mig_from_env
            try:
                g.mig = g.mig or nv.nvmlDeviceGetMigMode(h)[0] == NVML_DEVICE_MIG_ENABLE
            except (err, AttributeError, TypeError, IndexError):
                pass
            try:
                g.last_mj = int(nv.nvmlDeviceGetTotalEnergyConsumption(h))
                g.mode = "counter"
            except err as e1:
                try:
                    nv.nvmlDeviceGetPowerUsage(h)
                    g.mode = "power"
                except err as e2:
                    g.reason = f"gpu{idx}: no energy counter ({e1}) and no power reading ({e2})"
            gpus.append(g)
        self.gpus = [g for g in gpus if g.mode]
        self.notes_ = [g.reason for g in gpus if not g.mode]
        if not self.gpus:
            return Availability("unreadable", "; ".join(self.notes_) or "no readable GPU")
        for g in self.gpus:
            g.use = gpu_use.start(nv, g.handle, err)
        if any(g.mode == "power" for g in self.gpus):
            self.poll_interval_s = self.power_poll_s
        elif any(g.use and g.use.util_ok for g in self.gpus):
            self.poll_interval_s = gpu_use.UTIL_POLL_S
        self.kind = "counter" if all(g.mode == "counter" for g in self.gpus) else "power"
        return Availability("available")

    def domains(self) -> list[Domain]:
        if not self.availability.available:
            return []
        return [Domain(g.domain, g.label) for g in self.gpus]

    def skipped(self) -> list[str]:
        return list(self.notes_)

    # --- reading ----------------------------------------------------------------------------
    def _update(self, now: float) -> None:
        nv, err = self._nvml, self._err()
        self._update_energy(nv, err, now)
        ours = self._pids()
        for g in self.gpus:
            if g.use is not None:
                gpu_use.update(
                    g.use, nv, g.handle, err, g.domain, ours, self._visible_pid, self._use
                )

    def attribution_parts(
        self, comps: dict[str, Component], begin: Snapshot, end: Snapshot
    ) -> list[Part]:
        """Each GPU is its own part, attributed by its GPU use (never by CPU time)."""
        return [(d, c.joules, d) for d, c in comps.items() if c.additive]

    def window_shares(self, begin: Snapshot, end: Snapshot) -> tuple[dict[str, Share], list[str]]:
        return gpu_use.shares([g.domain for g in self.gpus], begin, end)

    def covers(self) -> str:
        return ", ".join(g.domain for g in self.gpus) + " (nvml)"

    def _update_energy(self, nv: Any, err: type[BaseException], now: float) -> None:
        for g in self.gpus:
            if g.mode == "counter":
                try:
                    mj = int(nv.nvmlDeviceGetTotalEnergyConsumption(g.handle))
                except err:
                    self._event(f"read-error:{g.domain}")
                    g.last_mj = None
                    self._energy.setdefault(g.domain, 0.0)
                    continue
                if g.last_mj is not None:
                    if mj >= g.last_mj:
                        self._add(g.domain, (mj - g.last_mj) / 1000.0)
                    else:
                        self._event(f"counter-reset:{g.domain}")
                self._energy.setdefault(g.domain, 0.0)
                g.last_mj = mj
            else:
                try:
                    w: float | None = float(nv.nvmlDeviceGetPowerUsage(g.handle)) / 1000.0
                except err:
                    w = None
                self._power_sample(g.domain, now, w)

    def window_energy(self, begin: Snapshot, end: Snapshot) -> tuple[dict[str, float], list[str]]:
        joules, flags = super().window_energy(begin, end)
        duration = end.t - begin.t
        err = self._err()
        for g in self.gpus:
            if g.mig:
                flags.append(f"mig-shared:{g.domain}")
            bad = any(f.endswith(f":{g.domain}") and not f.startswith("mig") for f in flags)
            if (
                g.mode == "counter"
                and joules.get(g.domain) == 0.0
                and not bad
                and 0 < duration < SHORT_WINDOW_S
            ):
                try:
                    w = float(self._nvml.nvmlDeviceGetPowerUsage(g.handle)) / 1000.0
                except err:
                    continue
                joules[g.domain] = w * duration
                flags.append(f"short-window-estimated:{g.domain}")
        return joules, sorted(set(flags))

    def components(
        self, begin: Snapshot, end: Snapshot, *, informational: bool = False
    ) -> tuple[dict[str, Component], list[str]]:
        comps, flags = super().components(begin, end, informational=informational)
        modes = {g.domain: g.mode for g in self.gpus}
        for d, c in comps.items():
            comps[d] = Component(
                c.domain, c.joules, c.provenance, modes.get(d, c.kind), c.scope, c.additive
            )
        return comps, flags

    def close(self) -> None:
        if self._inited and self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # shutting down; nothing to report
                pass
            self._inited = False


def resolve_visible(nv: Any, spec: str | None, count: int) -> tuple[list[int], set[int]]:
    """NVML indices selected by a ``CUDA_VISIBLE_DEVICES`` value, and those reached via MIG.

    ``None`` → every GPU. Parsing stops at the first entry that names no device (CUDA's rule).
    """
    if spec is None:
        return list(range(count)), set()
    uuids: list[str] | None = None

    def all_uuids() -> list[str]:
        nonlocal uuids
        if uuids is None:
            uuids = [
                _s(nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i))) for i in range(count)
            ]
        return uuids

    out: list[int] = []
    mig: set[int] = set()
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            break
        idx: int | None = None
        if item.lstrip("-").isdigit():
            n = int(item)
            idx = n if 0 <= n < count else None
        elif item.startswith("MIG-"):
            idx = _mig_parent(nv, item, all_uuids)
            if idx is not None:
                mig.add(idx)
        else:
            pref = item if item.startswith("GPU-") else f"GPU-{item}"
            hits = [i for i, u in enumerate(all_uuids()) if u.startswith(pref)]
            idx = hits[0] if len(hits) == 1 else None
        if idx is None:
            break
        if idx not in out:
            out.append(idx)
    return out, mig


def _mig_parent(nv: Any, item: str, all_uuids: Any) -> int | None:
    rest = item[len("MIG-") :]
    if rest.startswith("GPU-"):  # old form MIG-GPU-<uuid>/<gi>/<ci>
        gpu_uuid = rest.split("/", 1)[0]
        hits = [i for i, u in enumerate(all_uuids()) if u == gpu_uuid]
        return hits[0] if hits else None
    try:  # new form MIG-<uuid>: ask NVML for the parent device
        h = nv.nvmlDeviceGetHandleByUUID(item)
        parent = nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(h)
        return int(nv.nvmlDeviceGetIndex(parent))
    except Exception:  # any NVML failure: not a device we can name
        return None
