"""What running the experiment itself cost: this host's energy over a simulation.

The ledger holds the modeled energy of the *simulated* devices. The machine that runs the
simulation spends energy too (its CPUs, and its GPUs when clients hold them), which is what a
meter such as Zeus or CodeCarbon would report for the experiment. :func:`metered_experiment`
reads this host's best meters (:func:`fedenergy.meters.detect.detect`: RAPL, NVML GPUs, board
rails or battery; a modeled CPU figure where nothing measures) over the whole run. On a Ray
cluster only the driver's host is metered; the record says so.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

WINDOW = "fedenergy-experiment"


@contextlib.contextmanager
def metered_experiment(on_cluster: bool = False) -> Iterator[dict[str, Any]]:
    """Meter this host over the ``with`` block; the yielded dict is filled on exit with the
    record :func:`experiment_record` makes (left empty when no meter could be opened)."""
    record: dict[str, Any] = {}
    meters = None
    try:
        from fedenergy.meters.detect import detect

        meters = detect()
        meters.begin(WINDOW)
    except Exception as err:  # no meter is no reason to refuse a simulation
        log.warning("the experiment's own energy is not metered: %s", err)
        if meters is not None:
            meters.close()
        meters = None
        record.update(unmetered_record(f"no meter could be opened: {err}"))
    try:
        yield record
    finally:
        if meters is not None:
            try:
                m = meters.end(WINDOW)
                record.update(experiment_record(m, meters.fallback, on_cluster))
            except Exception as err:
                record.update(unmetered_record(f"the meters failed: {err}"))
            finally:
                meters.close()


def experiment_record(measurement: Any, fallback: str | None, on_cluster: bool) -> dict:
    """The host's energy over the run as a plain dict: total J, what it covers, each domain's
    joules with its provenance, and whether any of it is modeled."""
    comps = {
        d: {"joules": c.joules, "provenance": c.provenance}
        for d, c in measurement.components.items()
    }
    modeled = fallback is not None or any(
        str(c["provenance"]).startswith("modeled") for c in comps.values()
    )
    scope = (
        "this host (the driver); the cluster's workers are not metered"
        if on_cluster
        else ("this host")
    )
    return {
        "joules": measurement.total_j,
        "seconds": measurement.duration_s,
        "provenance": "modeled" if modeled else "measured",
        "covers": f"{measurement.total_scope}: {scope}",
        "components": comps,
    }


def unmetered_record(reason: str) -> dict:
    """The record of a run whose host energy is not known, with why."""
    return {"joules": None, "provenance": "unmetered", "reason": reason}


def describe(record: dict) -> str:
    """One line for the console."""
    if record.get("joules") is None:
        return f"the experiment itself: unmetered ({record.get('reason', 'no meter')})"
    sources = ", ".join(sorted({str(c["provenance"]) for c in record["components"].values()}))
    return (
        f"the experiment itself: {record['joules']:.4g} J over {record['seconds']:.1f} s, "
        f"{record['covers']} ({sources}; not part of the totals above)"
    )
