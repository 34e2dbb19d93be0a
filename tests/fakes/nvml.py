"""A fake ``pynvml`` module object, with the handful of NVML calls the meter uses.

Units as NVML's: energy in mJ (``nvmlDeviceGetTotalEnergyConsumption``), power in mW
(``nvmlDeviceGetPowerUsage``), utilization samples with µs time stamps and % values
(``nvmlDeviceGetProcessUtilization``: samples newer than the given time stamp, NOT_FOUND when
there is none), compute processes with their used memory in bytes
(``nvmlDeviceGetComputeRunningProcesses``). Return codes from nvml.h.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        self.value = value
        super().__init__(f"NVML error {value}")


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA A100-SXM4-40GB"
    energy_mj: int | None = 0  # None: counter not supported (pre-Volta)
    power_mw: float | None = 100_000  # None: power not supported
    mig: bool = False
    lost: bool = False  # every reading raises GPU_IS_LOST
    mig_uuids: list[str] = field(default_factory=list)
    procs: dict[int, int] = field(default_factory=dict)  # pid -> used GPU memory (bytes)
    samples: list[tuple[int, int, int]] = field(default_factory=list)  # (pid, µs, smUtil %)
    util_supported: bool = True
    procs_supported: bool = True
    clock_us: int = 1_000_000

    def run(self, uses: dict[int, int], seconds: float, period_s: float = 1 / 6) -> None:
        """Append driver samples: every ``period_s`` for ``seconds``, pid -> smUtil % (as the
        driver samples, one entry per pid that used the GPU in that period)."""
        for _ in range(round(seconds / period_s)):
            self.clock_us += round(period_s * 1e6)
            for pid, sm in uses.items():
                self.samples.append((pid, self.clock_us, sm))


@dataclass
class _ProcInfo:
    pid: int
    usedGpuMemory: int | None


@dataclass
class _UtilSample:
    pid: int
    timeStamp: int
    smUtil: int
    memUtil: int = 0
    encUtil: int = 0
    decUtil: int = 0


@dataclass
class _MigHandle:
    uuid: str
    parent: FakeGpu


class FakeNVML:
    """Pass as ``nvml=`` to NvmlMeter/detect. Mutate ``gpus[i]`` to drive readings."""

    NVMLError = NVMLError
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED

    def __init__(self, gpus: list[FakeGpu], init_error: int | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.calls: dict[str, int] = {}
        self.inited = False

    def _n(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def nvmlInit(self) -> None:
        self._n("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.inited = True

    def nvmlShutdown(self) -> None:
        self.inited = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        if not 0 <= i < len(self.gpus):
            raise NVMLError(2)
        return self.gpus[i]

    def nvmlDeviceGetIndex(self, h: FakeGpu) -> int:
        return self.gpus.index(h)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes):
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for g in self.gpus:
            if g.uuid == uuid:
                return g
            if uuid in g.mig_uuids:
                return _MigHandle(uuid, g)
        raise NVMLError(6)  # NOT_FOUND

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, h: _MigHandle) -> FakeGpu:
        return h.parent

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return h.uuid

    def nvmlDeviceGetName(self, h: FakeGpu) -> bytes:
        return h.name.encode()  # older bindings return bytes

    def nvmlDeviceGetMigMode(self, h: FakeGpu) -> list[int]:
        return [int(h.mig), int(h.mig)]

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeGpu) -> int:
        self._n("energy")
        if h.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if h.energy_mj is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return h.energy_mj

    def nvmlDeviceGetProcessUtilization(self, h: FakeGpu, lastSeenTimeStamp: int = 0) -> list:
        self._n("process-util")
        if h.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if not h.util_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        out = [_UtilSample(p, ts, sm) for p, ts, sm in h.samples if ts > lastSeenTimeStamp]
        if not out:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return out

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeGpu) -> list:
        self._n("processes")
        if h.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if not h.procs_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return [_ProcInfo(p, m) for p, m in h.procs.items()]

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> float:
        self._n("power")
        if h.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if h.power_mw is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return h.power_mw
