"""Device profiles for simulated compute energy (constants and sources in data/devices.toml).

Model: time = FLOPs / train_flops_per_s; energy = time x active_power_w. The throughput is the
*effective* FP32 rate sustained on small-model training, not the datasheet peak. The rule is
written once, in ``modeled_compute``; a call's whole energy is :mod:`fedenergy.physics.call`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from fedenergy.physics.constants import Num, check_sources, load_table

NUMERIC = ("train_flops_per_s", "active_power_w", "idle_power_w", "pue", "battery_wh")


def modeled_compute(flops: Num, flops_per_s: Num, power_w: Num) -> tuple[Num, Num]:
    """(joules, seconds) of ``flops`` at ``flops_per_s`` drawing ``power_w``: seconds = FLOPs /
    rate, joules = seconds x power. Scalars or numpy arrays alike (elementwise: the same floats)."""
    seconds = flops / flops_per_s
    return seconds * power_w, seconds


@dataclass(frozen=True)
class DeviceProfile:
    """One device class. Units: FLOP/s, W, Wh; pue is dimensionless (>= 1)."""

    id: str
    label: str
    kind: str  # "edge" | "datacenter"
    cls: str  # phone | sbc | jetson | laptop | server
    train_flops_per_s: float
    active_power_w: float
    idle_power_w: float
    pue: float = 1.0
    battery_wh: float = 0.0
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def compute_time_s(self, flops: float) -> float:
        """Seconds this device needs for ``flops`` floating-point operations."""
        return modeled_compute(flops, self.train_flops_per_s, self.active_power_w)[1]

    def compute_energy_j(self, flops: float) -> float:
        """Joules this device spends on ``flops`` (active power over the compute time)."""
        return modeled_compute(flops, self.train_flops_per_s, self.active_power_w)[0]

    def provenance(self) -> str:
        """The model and constants behind a modeled compute figure (kept short: it travels in
        every report; the constants and their sources are in data/devices.toml)."""
        return f"devices.toml:{self.id}"


def _build(key: str, e: dict) -> DeviceProfile:
    check_sources("device", key, e, NUMERIC)
    prof = DeviceProfile(
        id=key,
        label=str(e.get("label", key)),
        kind=str(e.get("kind", "edge")),
        cls=str(e.get("class", key)),
        sources=dict(e["sources"]),
        **{f: float(e[f]) for f in NUMERIC},
    )
    if prof.train_flops_per_s <= 0 or prof.active_power_w <= 0 or prof.idle_power_w < 0:
        raise ValueError(f"device {key!r}: throughput and active power must be > 0")
    if prof.pue < 1.0:
        raise ValueError(f"device {key!r}: pue must be >= 1")
    return prof


@cache
def device_catalog() -> dict[str, DeviceProfile]:
    """All shipped device profiles by id (built and validated once per process; read-only)."""
    return {k: _build(k, v) for k, v in load_table("devices")["devices"].items()}


def get_device(name: str) -> DeviceProfile:
    """Look a device profile up by id; a clear error lists the known ids."""
    cat = device_catalog()
    if name not in cat:
        raise ValueError(f"unknown device {name!r}; known devices: {', '.join(sorted(cat))}")
    return cat[name]
