"""The validation suite's adapter: the one place it calls fedenergy's physics.

Each function answers one question a published measurement asks of the model (a device's power
in a state, a training run's time, a radio's power at a throughput, a federation's joules).
When the physics API changes, re-point these; the cases in ``validation_cases.py`` stay as
they are. Device and link ids resolve in the packaged catalog plus ``validation_catalog.toml``
(profiles a case needs that the package does not ship, loaded by fedenergy's own catalog loader).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import tomllib  # noqa: E402
from functools import cache  # noqa: E402

from fedenergy.physics.call import modeled_call  # noqa: E402
from fedenergy.physics.catalog import Catalog, load_catalog  # noqa: E402
from fedenergy.physics.compute import DEVICE, OFF, Work, call_compute  # noqa: E402
from fedenergy.physics.constants import load_table  # noqa: E402
from fedenergy.physics.devices import DeviceProfile  # noqa: E402
from fedenergy.physics.network import LinkProfile, radio_power_w, transfer_time_s  # noqa: E402

# Profiles a case needs that the packaged catalog lacks (each number sourced, read by fedenergy's
# own catalog loader under the packaged rules); the packaged constants are not touched.
VALIDATION_CATALOG = Path(__file__).resolve().parent / "validation_catalog.toml"


@cache
def catalog() -> Catalog:
    """The packaged catalog plus the validation-local entries (``validation_catalog.toml``)."""
    return load_catalog([VALIDATION_CATALOG])


def get_device(device_id: str) -> DeviceProfile:
    """A device profile of :func:`catalog` (packaged or validation-local)."""
    return catalog().device(device_id)


def get_link(link_id: str) -> LinkProfile:
    """A link profile of :func:`catalog`."""
    return catalog().link(link_id)


def catalog_entries(table: str) -> dict[str, dict]:
    """The raw entries of ``table`` ("devices" | "links"): the packaged ones and the
    validation-local ones (which :func:`catalog` refuses to let clash with packaged ids)."""
    local = tomllib.loads(VALIDATION_CATALOG.read_text()).get(table, {})
    return {**load_table(table)[table], **local}


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


def model_transfer_device_w(link_id: str, device_id: str, direction: str, mbps: float) -> float:
    """Whole-device power (W) while ``device_id`` moves data one way at ``mbps`` over
    ``link_id``: the radio's power (above the device's base, as Huang et al.'s model gives it)
    plus the power the compute model charges while a call waits on its network under the
    whole-device boundary (``wait_w``: the device's idle base)."""
    wait_w = call_compute(get_device(device_id).terms, Work(), DEVICE, OFF).wait_w
    return model_radio_power_w(link_id, direction, mbps) + float(wait_w)


def constant_sources(table: str, entry: str) -> dict[str, str]:
    """The ``sources`` table of one catalog entry (e.g. ``("links", "5g")``): field -> text."""
    return dict(catalog_entries(table)[entry].get("sources", {}))


def constant(ref: str) -> tuple[object, str]:
    """Value and source text of the constant ``"table:id.field"`` (KeyError when absent)."""
    table, rest = ref.split(":", 1)
    entry, field = rest.rsplit(".", 1)
    e = catalog_entries(table)[entry]
    return e[field], str(e.get("sources", {}).get(field, ""))
