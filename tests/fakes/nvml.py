"""A fake ``pynvml`` module object, with the handful of NVML calls the meter uses.

Units as NVML's: energy in mJ (``nvmlDeviceGetTotalEnergyConsumption``), power in mW
(``nvmlDeviceGetPowerUsage``). Return codes from nvml.h.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
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

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> float:
        self._n("power")
        if h.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if h.power_mw is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return h.power_mw
