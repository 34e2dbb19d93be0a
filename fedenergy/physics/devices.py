"""Device profiles for simulated compute energy (constants and sources in data/devices.toml).

Model: time = FLOPs / train_flops_per_s; energy = time x active_power_w. The throughput is the
*effective* FP32 rate sustained on small-model training, not the datasheet peak. The rule is
written once, in ``modeled_compute``; a call's whole energy is :mod:`fedenergy.physics.call`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cache

from fedenergy.physics.constants import Num, check_entry, load_table

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
    # the file whose entry this is, as provenance names it (a user catalog's file name)
    origin: str = field(default="devices.toml", compare=False, repr=False)

    def compute_time_s(self, flops: float) -> float:
        """Seconds this device needs for ``flops`` floating-point operations."""
        return modeled_compute(flops, self.train_flops_per_s, self.active_power_w)[1]

    def compute_energy_j(self, flops: float) -> float:
        """Joules this device spends on ``flops`` (active power over the compute time)."""
        return modeled_compute(flops, self.train_flops_per_s, self.active_power_w)[0]

    def provenance(self) -> str:
        """The model and constants behind a modeled compute figure (kept short: it travels in
        every report; the constants and their sources are in data/devices.toml)."""
        return f"{self.origin}:{self.id}"


# the keys of a catalog entry: the profile's own fields, as the TOML tables spell them
TOML_NAMES = {"cls": "class"}
ENTRY_KEYS = frozenset(
    {TOML_NAMES.get(f.name, f.name) for f in fields(DeviceProfile)} - {"id", "origin"}
)
KINDS = ("edge", "datacenter")


def _build(
    key: str, e: dict, origin: str = "devices.toml", extra: frozenset = frozenset()
) -> DeviceProfile:
    """The profile of entry ``key`` of a devices table (packaged or a user's: the same rules);
    ValueError names the entry and the field. ``extra``: keys the caller reads itself."""
    check_entry("device", key, e, NUMERIC, ENTRY_KEYS | extra)
    for name in ("label", "kind", "class"):
        if name in e and not isinstance(e[name], str):
            raise ValueError(f"device {key!r}: field {name!r} must be a string, got {e[name]!r}")
    prof = DeviceProfile(
        id=key,
        label=str(e.get("label", key)),
        kind=str(e.get("kind", "edge")),
        cls=str(e.get("class", key)),
        sources=dict(e["sources"]),
        origin=origin,
        **{f: float(e[f]) for f in NUMERIC},
    )
    if prof.kind not in KINDS:
        raise ValueError(f"device {key!r}: field 'kind' must be one of {KINDS}, got {prof.kind!r}")
    for f, ok, rule in (
        ("train_flops_per_s", prof.train_flops_per_s > 0, "> 0"),
        ("active_power_w", prof.active_power_w > 0, "> 0"),
        ("idle_power_w", prof.idle_power_w >= 0, ">= 0"),
        ("pue", prof.pue >= 1.0, ">= 1"),
        ("battery_wh", prof.battery_wh >= 0, ">= 0"),
    ):
        if not ok:
            raise ValueError(f"device {key!r}: field {f!r} must be {rule}, got {e[f]!r}")
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
