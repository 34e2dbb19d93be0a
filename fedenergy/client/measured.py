"""Measured compute energy for deployed nodes: hardware meters around a call, plus start-up cost.

A deployed SuperNode opts in with ``meter="auto"`` in its node config (simulated nodes keep the
device model: host sensors say nothing about a virtual Raspberry Pi). Optional node-config keys:
``sysfs-root`` (read sysfs elsewhere, e.g. in a container) and ``tdp-w`` (CPU TDP override for the
modeled fallback).

The call's compute figure is the process tree's share of the machine energy (CPU-time share, see
docs/meters.md); the machine total is reported beside it (``machine_j``), never added. In Flower's
deployment each call runs in a fresh ``flwr-clientapp`` process whose imports cost CPU seconds
before the handler starts: that start-up cost is charged once per process, at the J per busy
CPU-second the call itself was measured at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import Context, RecordDict

from fedenergy.meters import Measurement, detect, startup_cost
from fedenergy.protocol import STARTUP_STATE_KEY
from fedenergy.report import Component


@dataclass(frozen=True)
class MeasuredCall:
    """What the meters saw around one call."""

    components: tuple[Component, ...]
    machine_j: float
    seconds: float
    startup_s: float = 0.0  # CPU seconds of the process start-up charged (0: none charged)


def wants_measurement(ctx: Context) -> bool:
    return str(ctx.node_config.get("meter", "model")) == "auto"


def _provenance(m: Measurement) -> tuple[str, str]:
    provs = sorted(set(m.provenance.values()))
    kind = "measured" if any(p.startswith("measured") for p in provs) else "modeled"
    return kind, ", ".join(provs)


def measure_call(
    kind: str, ctx: Context, call: Callable[[], object], startup: bool = True
) -> tuple[object, MeasuredCall]:
    """Run ``call`` inside a meter window; return its result and the measured components
    (with ``startup``, the start-up of a process not charged yet among them: the run's
    ``startup`` setting, as for simulated devices)."""
    root = ctx.node_config.get("sysfs-root")
    tdp = ctx.node_config.get("tdp-w")
    meters = detect(sysfs_root=str(root) if root else None, tdp_w=float(tdp) if tdp else None)
    try:
        with meters.window("call") as handle:
            result = call()
        m: Measurement = handle.measurement
    finally:
        meters.close()
    prov, source = _provenance(m)
    share = f"process share {m.process_share:.3f} of {m.total_j:.4g} J ({m.total_scope})"
    comps = [Component(kind, "compute", m.process_j, prov, f"{source}; {share}")]
    charged = _startup_component(kind, ctx.state, m, prov, source) if startup else None
    startup_s = 0.0
    if charged is not None:
        comps.append(charged[0])
        startup_s = charged[1]
    return result, MeasuredCall(tuple(comps), m.total_j, m.duration_s, startup_s)


def _startup_component(
    kind: str, state: RecordDict, m: Measurement, prov: str, source: str
) -> tuple[Component, float] | None:
    """Charge this process's pre-call CPU time once per process (keyed by its start time);
    the component and its CPU seconds."""
    from flwr.app import ConfigRecord

    cost = startup_cost()
    seen = state.config_records.get(STARTUP_STATE_KEY)
    if seen is not None and seen.get("started-at") == cost.started_at:
        return None
    state[STARTUP_STATE_KEY] = ConfigRecord({"started-at": cost.started_at})
    pre_call_cpu_s = max(0.0, cost.cpu_s - m.process_cpu_s)
    rate = m.process_j / m.process_cpu_s if m.process_cpu_s > 0 else 0.0
    comp = Component(
        "startup",
        "compute",
        pre_call_cpu_s * rate,
        "modeled",
        f"process start-up {pre_call_cpu_s:.3f} CPU-s x {rate:.3g} J/CPU-s measured in the call "
        f"({source}; {prov})",
    )
    return comp, pre_call_cpu_s
