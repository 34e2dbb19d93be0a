"""The device radio as a state machine per node, over the node's transfers on the run's clock.

States (Huang et al., MobiSys 2012, for LTE, 3G and Wi-Fi; the other links by analogy, with
their own constants in data/links.toml):

* **idle**: no energy above the device's base (the radio's paging wake-ups are part of the
  device's idle power, which the compute model owns);
* **promotion**: idle -> connected before a transfer can start: ``promo_s`` seconds at
  ``promo_mw``; it delays the transfer by ``promo_s`` on the node's clock;
* **transfer**: Huang's ``alpha * throughput + beta`` over the transfer time
  (:func:`fedenergy.physics.network.radio_power_w`);
* **tail**: after each transfer the radio stays connected for ``tail_s`` at ``tail_mw`` (the
  average over the tail, LTE's short and long DRX cycles included: Huang's measured tail power
  is that average), unless the node's next transfer starts first: then the tail is cut there
  and the next transfer needs no promotion. Once the tail has run out the radio is idle again.

How a node's timeline is charged (the partition every user of the model shares): each interval
from the end of one transfer to the end of the next belongs to the later transfer, i.e. a
transfer's radio energy is the tail (cut) and the promotion (if any) that lead up to it, plus
the transfer itself. The tail after the node's last transfer in the run belongs to nobody
later: :func:`closing_j` charges it once, at the end of the run. Summed over a node's calls
plus its closing, this is exactly the state machine's energy over the run.

Keep-alive (:class:`KeepAlive`): a deployed Flower SuperNode exchanges small messages with the
SuperLink while it waits for work (pull requests and heartbeats). With the option on, the
intervals between a node's transfers are cut into keep-alive periods: each exchange restarts
the tail (on a cellular link whose tail outlasts the period, the radio never returns to idle)
and costs its own small transfer; the exchanges are taken as instantaneous on the clock.

Every function takes ``ops`` (scalar or numpy, see :data:`SCALAR`, :data:`ARRAYS`) so that one
expression serves one node (Python floats) and many nodes at once (arrays), float for float.
Pure: numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import numpy as np

from fedenergy.physics.constants import Num, check_sources, load_table

KEEPALIVE_FIELDS = ("poll_s", "heartbeat_s", "bytes_up", "bytes_down")


class Ops(NamedTuple):
    """The choices the models make, for scalars or for arrays."""

    where: Callable
    minimum: Callable
    maximum: Callable
    floor: Callable
    isfinite: Callable


def _pick(cond, a, b):
    return a if cond else b


def _where(cond, a, b):
    """``np.where``; a scalar condition just picks its side (the same values)."""
    if isinstance(cond, (bool, np.bool_)):
        return a if cond else b
    return np.where(cond, a, b)


def _floor(x: float) -> float:
    return float(math.floor(x))


SCALAR = Ops(_pick, min, max, _floor, math.isfinite)
ARRAYS = Ops(_where, np.minimum, np.maximum, np.floor, np.isfinite)


@dataclass(frozen=True)
class KeepAlive:
    """Small exchanges a waiting node makes with the server: one every ``interval_s`` seconds,
    ``bytes_up`` sent and ``bytes_down`` received each (see :func:`keepalive_from_table`)."""

    interval_s: float
    bytes_up: int
    bytes_down: int

    def __post_init__(self) -> None:
        if not (self.interval_s > 0 and math.isfinite(self.interval_s)):
            raise ValueError(f"keep-alive interval must be > 0 s, got {self.interval_s}")
        if self.bytes_up < 0 or self.bytes_down < 0:
            raise ValueError("keep-alive bytes must be >= 0")


def segment(ops: Ops, link, gap_s: Num) -> tuple[Num, Num]:
    """(joules, delay s) of a gap of ``gap_s`` (>= 0, finite) between two transfers, with no
    traffic inside: the tail, cut at ``gap_s``, and the promotion of the next transfer where
    the tail ran out first (its delay then ``promo_s``, else 0)."""
    expired = gap_s >= link.tail_s
    tail_j = link.tail_w * ops.minimum(gap_s, link.tail_s)
    promo_j = link.promo_w * link.promo_s
    return ops.where(expired, tail_j + promo_j, tail_j), ops.where(expired, link.promo_s, 0.0)


def exchange_j(link, keepalive: KeepAlive) -> Num:
    """The transfer energy of one keep-alive exchange (its time is taken as 0 on the clock)."""
    up_s = keepalive.bytes_up * 8 / link.up_bps
    down_s = keepalive.bytes_down * 8 / link.down_bps
    return link.up_w * up_s + link.down_w * down_s


def gap(ops: Ops, link, gap_s: Num, keepalive: KeepAlive | None = None) -> tuple[Num, Num]:
    """(joules, delay s) of a gap of ``gap_s`` (>= 0, finite) between two of a node's
    transfers: :func:`segment`, or with ``keepalive`` the exchanges every ``interval_s``
    inside it, each a segment of its own plus its transfer, then the rest up to the next
    transfer."""
    if keepalive is None:
        return segment(ops, link, gap_s)
    period = keepalive.interval_s
    n = ops.floor(gap_s / period)
    rest = gap_s - n * period
    per_j, _ = segment(ops, link, period)
    rest_j, delay = segment(ops, link, rest)
    return n * (per_j + exchange_j(link, keepalive)) + rest_j, delay


def lead_in(
    ops: Ops, link, idle_s: Num | None, keepalive: KeepAlive | None = None
) -> tuple[Num, Num]:
    """(joules, delay s) before a call's first transfer, ``idle_s`` after the node's previous
    transfer ended (``math.inf``: none in this run, or None: the call stands alone): the gap
    (:func:`gap`) after a previous transfer, else a promotion from idle."""
    promo = (link.promo_w * link.promo_s, link.promo_s)
    if idle_s is None:
        return promo
    seen = ops.isfinite(idle_s)
    if isinstance(seen, np.ndarray) and not seen.any():  # no node transferred yet: promotions
        return promo  # (the values np.where would pick, without computing the other side)
    finite = ops.where(seen, ops.maximum(idle_s, 0.0), 0.0)
    gap_j, delay = gap(ops, link, finite, keepalive)
    return ops.where(seen, gap_j, promo[0]), ops.where(seen, delay, promo[1])


def closing_j(ops: Ops, link, after_s: Num, keepalive: KeepAlive | None = None) -> Num:
    """The radio after a node's last transfer of the run, which ended ``after_s`` before the
    run did (``math.inf``: the node never transferred: 0 J): the full tail (nothing cuts it);
    with ``keepalive``, the exchanges the node makes until the run ends (each a period of
    :func:`segment` plus its transfer) before it."""
    seen = ops.isfinite(after_s)
    full = link.tail_w * link.tail_s
    if keepalive is None:
        return ops.where(seen, full, 0.0)
    finite = ops.where(seen, ops.maximum(after_s, 0.0), 0.0)
    n = ops.floor(finite / keepalive.interval_s)
    per_j, _ = segment(ops, link, keepalive.interval_s)
    return ops.where(seen, n * (per_j + exchange_j(link, keepalive)) + full, 0.0)


@cache
def keepalive_from_table(name: str = "flower") -> KeepAlive:
    """The keep-alive of ``[keepalive.<name>]`` in data/links.toml: polls every ``poll_s`` and
    heartbeats every ``heartbeat_s`` merged into one schedule at their combined rate."""
    e = load_table("links")["keepalive"][name]
    check_sources("keep-alive", name, e, KEEPALIVE_FIELDS)
    interval = 1.0 / (1.0 / float(e["poll_s"]) + 1.0 / float(e["heartbeat_s"]))
    return KeepAlive(interval, int(e["bytes_up"]), int(e["bytes_down"]))
