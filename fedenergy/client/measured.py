"""Measured compute energy for deployed nodes: hardware meters around a call, plus start-up cost.

A deployed SuperNode opts in with ``meter="auto"`` in its node config (simulated nodes keep the
device model: host sensors say nothing about a virtual Raspberry Pi). Optional node-config keys:
``sysfs-root`` (read sysfs elsewhere, e.g. in a container) and ``tdp-w`` (CPU TDP override for the
modeled fallback).

The call's compute figure is the process tree's share of the machine energy (by part: CPU time for
the CPU side, GPU use for GPUs; an undefined share is reported ``unattributed``, see
docs/meters.md); the machine total is reported beside it (``machine_j``), never added. In Flower's
deployment each call runs in a fresh ``flwr-clientapp`` process whose imports cost CPU seconds
before the handler starts: that start-up cost is charged once per process, at the J per busy
CPU-second the call itself was measured at.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import Context, RecordDict

from fedenergy.meters import Measurement, cached_detect, startup_cost
from fedenergy.protocol import STARTUP_STATE_KEY
from fedenergy.report import MAX_TEXT, UNMETERED, Component


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
    meters = cached_detect(str(root) if root else None, float(tdp) if tdp else None)
    with meters.window(f"call-{uuid.uuid4().hex}") as handle:
        result = call()
    m: Measurement = handle.measurement
    prov, source = _provenance(m)
    comps = compute_components(kind, m, prov, source)
    charged = _startup_component(kind, ctx.state, m, prov, source) if startup else None
    startup_s = 0.0
    if charged is not None:
        comps.append(charged[0])
        startup_s = charged[1]
    return result, MeasuredCall(tuple(comps), m.total_j, m.duration_s, startup_s)


def compute_components(kind: str, m: Measurement, prov: str, source: str) -> list[Component]:
    """The call's compute components: the process tree's attributed joules, and — for parts of
    the total whose share is undefined — an ``unmetered`` component whose source names the
    unattributed joules (never a measured 0 J; the machine total is ``machine_j`` beside)."""
    parts = ", ".join(
        f"{a.part} {a.process_j:.4g}/{a.machine_j:.4g} J ({m.shares[a.share].basis})"
        for a in m.attribution
        if a.process_j is not None
    )
    cover = f"{m.total_j:.4g} J {m.covers or m.total_scope}"
    comps = []
    if m.attribution_status != "unattributed":
        text = f"{source}; process share of {cover}: {parts}"
        comps.append(Component(kind, "compute", m.process_j, prov, text[:MAX_TEXT]))
    if m.unattributed_j > 0 or m.attribution_status == "unattributed":
        what = ", ".join(a.part for a in m.attribution if a.process_j is None)
        text = f"unattributed: {m.unattributed_j:.4g} J of {cover} ({what}: share undefined)"
        comps.append(Component(kind, "compute", 0.0, UNMETERED, text[:MAX_TEXT]))
    return comps


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
