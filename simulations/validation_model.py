"""The validation suite's adapter: the one place it calls fedenergy's physics.

Each function answers one question a published measurement asks of the model (a device's power
in a state, a training run's time, a radio's power at a throughput, a federation's joules).
When the physics API changes, re-point these; the cases in ``validation_cases.py`` stay as
they are.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fedenergy.physics.call import modeled_call  # noqa: E402
from fedenergy.physics.compute import DEVICE, OFF, Work, call_compute  # noqa: E402
from fedenergy.physics.constants import load_table  # noqa: E402
from fedenergy.physics.devices import get_device  # noqa: E402
from fedenergy.physics.network import get_link, radio_power_w, transfer_time_s  # noqa: E402


def model_power_w(device_id: str, state: str) -> float:
    """Whole-device power (W) of ``device_id`` in ``state``: "idle" (booted, waiting) or "load"
    (all cores busy, the state a training loop puts the device in)."""
    dev = get_device(device_id)
    if state == "idle":
        return dev.idle_power_w
    if state == "load":
        return dev.active_power_w
    raise ValueError(f"unknown state {state!r}")


def _training(device_id: str, flops: float, steps: int, batch: int):
    # the compute model (physics/compute.py) on all of the device's cores (threads 0: the way
    # the published benchmarks ran: PyTorch's default threads), whole-device, no start-up
    work = Work(flops, steps, batch, 0)
    return call_compute(get_device(device_id).terms, work, DEVICE, OFF)


def model_train_time_s(device_id: str, flops: float, steps: int, batch: int) -> float:
    """Seconds ``device_id`` takes for a training run of ``flops`` FLOPs in ``steps`` steps of
    ``batch`` samples: FLOPs at the device's rate plus the per-step overhead."""
    return float(_training(device_id, flops, steps, batch).compute_s)


def model_train_energy_j(device_id: str, flops: float, steps: int, batch: int) -> float:
    """Joules ``device_id`` spends on that training run (whole-device, busy)."""
    return float(_training(device_id, flops, steps, batch).compute_j)


def model_radio_power_w(link_id: str, direction: str, mbps: float) -> float:
    """Radio power (W) of ``link_id`` while moving data one way ("down" | "up") at ``mbps``."""
    link = get_link(link_id)
    if direction == "down":
        return radio_power_w(link.alpha_down_mw_per_mbps, mbps, link.beta_mw)
    if direction == "up":
        return radio_power_w(link.alpha_up_mw_per_mbps, mbps, link.beta_mw)
    raise ValueError(f"unknown direction {direction!r}")


def model_link_mbps(link_id: str, direction: str) -> float:
    """The link profile's own throughput (Mbit/s) one way."""
    link = get_link(link_id)
    return link.down_mbps if direction == "down" else link.up_mbps


def model_transfer_energy_j(
    link_id: str, nbytes: float, direction: str, mbps: float | None = None
) -> float:
    """Radio joules to move ``nbytes`` one way at ``mbps`` (default: the link's throughput),
    the transfer alone: no tail, no promotion, no infrastructure."""
    rate = model_link_mbps(link_id, direction) if mbps is None else mbps
    return model_radio_power_w(link_id, direction, rate) * transfer_time_s(nbytes, rate * 1e6)


def model_federation_j(
    device_id: str, link_id: str, flops: float, bytes_down: int, bytes_up: int, calls: int
) -> float:
    """Joules of ``calls`` identical train calls of ``flops`` each on ``device_id`` over
    ``link_id`` (compute, radio both ways with tails, infrastructure): the call model, summed
    (each call standing alone, no start-up: a published setup's own process)."""
    one = modeled_call(
        get_device(device_id), get_link(link_id), flops, bytes_down, bytes_up, startup=OFF
    )
    return float(one.total_j) * calls


def constant_sources(table: str, entry: str) -> dict[str, str]:
    """The ``sources`` table of one catalog entry (e.g. ``("links", "5g")``): field -> text."""
    return dict(load_table(table)[table][entry].get("sources", {}))


def constant(ref: str) -> tuple[object, str]:
    """Value and source text of the constant ``"table:id.field"`` (KeyError when absent)."""
    table, rest = ref.split(":", 1)
    entry, field = rest.rsplit(".", 1)
    e = load_table(table)[table][entry]
    return e[field], str(e.get("sources", {}).get(field, ""))
