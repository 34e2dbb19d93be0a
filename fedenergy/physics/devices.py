"""Device profiles for simulated compute energy (constants and sources in data/devices.toml).

A profile holds all-core figures: the *effective* FP32 rate sustained on small-model training
(not the datasheet peak) and the whole-device power with every core busy and idle, the number of
cores they are for, the framework's overhead per training step and the start-up time of a fresh
ClientApp process. The compute model that turns them into seconds and joules is written once, in
:mod:`fedenergy.physics.compute`; a call's whole energy is :mod:`fedenergy.physics.call`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cache

from fedenergy.physics.compute import ComputeTerms, Work, call_compute
from fedenergy.physics.constants import check_entry, load_table

NUMERIC = (
    "train_flops_per_s",
    "active_power_w",
    "idle_power_w",
    "cores",
    "step_overhead_s",
    "startup_s",
    "cpu_cores",
    "pue",
    "battery_wh",
)


@dataclass(frozen=True)
class DeviceProfile:
    """One device class. Units: FLOP/s, W, s, Wh; cores a count (>= 1; 1 for a GPU, whose
    throughput the client's CPU threads do not scale); pue is dimensionless (>= 1)."""

    id: str
    label: str
    kind: str  # "edge" | "datacenter"
    cls: str  # phone | sbc | jetson | laptop | server
    train_flops_per_s: float  # all cores
    active_power_w: float  # whole device, all cores busy
    idle_power_w: float  # whole device, idle
    cores: float = 1.0
    step_overhead_s: float = 0.0  # framework overhead per training step
    startup_s: float = 0.0  # one CPU core busy starting a fresh ClientApp process
    cpu_cores: float = 1.0  # CPU cores (a GPU profile's host CPU; else the same as cores)
    pue: float = 1.0
    battery_wh: float = 0.0
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    # the file whose entry this is, as provenance names it (a user catalog's file name)
    origin: str = field(default="devices.toml", compare=False, repr=False)

    @property
    def terms(self) -> ComputeTerms:
        """The constants the compute model reads."""
        return ComputeTerms(
            self.train_flops_per_s,
            self.active_power_w,
            self.idle_power_w,
            self.cores,
            self.step_overhead_s,
            self.startup_s,
            self.cpu_cores,
        )

    def compute_time_s(self, flops: float, steps: int = 0, threads: int = 0) -> float:
        """Busy seconds of ``flops`` and ``steps`` on ``threads`` (0: all cores)."""
        return call_compute(self.terms, Work(flops, steps, 0, threads)).compute_s

    def compute_energy_j(self, flops: float, steps: int = 0, threads: int = 0) -> float:
        """Whole-device joules of that busy time (:mod:`fedenergy.physics.compute`)."""
        return call_compute(self.terms, Work(flops, steps, 0, threads)).compute_j

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


def _whole(n: float) -> bool:
    return n >= 1 and n == int(n)


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
        ("idle_power_w", 0 <= prof.idle_power_w <= prof.active_power_w, ">= 0, <= active"),
        ("cores", _whole(prof.cores), "a whole number >= 1"),
        ("cpu_cores", _whole(prof.cpu_cores), "a whole number >= 1"),
        ("step_overhead_s", prof.step_overhead_s >= 0, ">= 0"),
        ("startup_s", prof.startup_s >= 0, ">= 0"),
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
