"""The run's clock, on which every node's radio is a state machine (coordinator side).

The radio of a node is modeled over the whole run (:mod:`fedenergy.physics.radio`): a transfer
is charged the tail of the node's previous transfer (cut where it starts within it) or a
promotion from idle. That needs one clock for the run, which the coordinator keeps:

* ``virtual`` (simulation): the time of the federation the run models, not of the host. The
  messages of a round's train phase are sent at the clock's time; the phase ends when its last
  call's last transfer ends on the model's timeline (promotions, transfers, compute), and the
  evaluate phase is sent then; the next round starts when that one ends. Rounds run back to
  back, as a synchronous federation with no server-side delay would run them.
* ``wall`` (deployment): seconds since the run began on the coordinator's own clock; a node's
  last transfer ends when its reply is taken.
* ``off``: no clock; every call stands alone (a promotion, its own tail in full).

With each message the coordinator sends the node's idle time (``fe-radio-idle-s``: seconds
since its last transfer ended; the energy mod charges the call from it), and keeps the node's
last transfer end in the fleet column ``radio_end``, from which its forecasts, failed-call and
stock-call rows take the same idle time: one figure, whoever computes it. At the end of the
run :meth:`RunClock.closing_rows` charges each node's last tail, which no later transfer cut.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from fedenergy.ledger import EnergyRow
from fedenergy.physics import radio
from fedenergy.physics.call import call_energy
from fedenergy.physics.network import LinkProfile
from fedenergy.report import Component
from fedenergy.server.fleet_state import FleetState
from fedenergy.server.forecast import idle_s

VIRTUAL, WALL, OFF = "virtual", "wall", "off"
CLOCKS = (VIRTUAL, WALL, OFF)
CLOSING_CALL = "run-end"  # the ledger call of the tails charged at the end of the run
CLOSING_SOURCE = "radio tail after the node's last transfer of the run (no later transfer cut it)"


class RunClock:
    """The run's clock and what was sent on it; each node's last transfer end lives in the
    fleet's ``radio_end`` column."""

    def __init__(
        self,
        kind: str = VIRTUAL,
        keepalive: radio.KeepAlive | None = None,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        if kind not in CLOCKS:
            raise ValueError(f"unknown radio clock {kind!r}; choose {', '.join(CLOCKS)}")
        self.kind, self.keepalive, self._wall = kind, keepalive, wall
        self._t0 = wall()
        self._virtual = 0.0  # the virtual clock's time
        self._phase_end = 0.0  # the latest transfer end of the phase under way (virtual)
        self.stamps: dict[tuple[int, str], tuple[float, float | None]] = {}  # sent: clock, idle

    def now(self) -> float | None:
        """The clock's time (s since the run began); None when it is off."""
        if self.kind == OFF:
            return None
        return self._virtual if self.kind == VIRTUAL else self._wall() - self._t0

    def idle(self, fleet: FleetState, node_id: int) -> float | None:
        """Seconds since ``node_id``'s last transfer ended, now (``math.inf``: none yet; None:
        no clock)."""
        end = fleet.cols.get("radio_end", fleet.cols.row[node_id])
        return idle_s(self.now(), end)

    def sent(self, fleet: FleetState, node_id: int, call: str) -> float | None:
        """A ``call`` message goes to ``node_id`` now: its idle time, remembered with the
        clock (None: no clock; the message then carries none)."""
        if node_id not in fleet or (now := self.now()) is None:
            return None
        idle = max(self.idle(fleet, node_id), 0.0)  # (never negative on a monotonic clock)
        self.stamps[(node_id, call)] = (now, idle)
        return idle

    def idle_sent(self, node_id: int, call: str) -> float | None:
        """The idle time sent with ``node_id``'s ``call`` message (None: none)."""
        stamp = self.stamps.get((node_id, call))
        return None if stamp is None else stamp[1]

    def transferred(
        self,
        fleet: FleetState,
        node_id: int,
        call: str,
        link: LinkProfile,
        bytes_down: int,
        bytes_up: int,
        compute_s: float,
    ) -> None:
        """``node_id``'s ``call`` moved these bytes around ``compute_s`` of compute: its last
        transfer's end on the clock becomes the node's ``radio_end`` (the call model's
        timeline from the stamp, virtual; the reply's arrival, wall)."""
        stamp = self.stamps.get((node_id, call))
        if stamp is None or node_id not in fleet or (bytes_down <= 0 and bytes_up <= 0):
            return
        if self.kind == VIRTUAL:
            e = call_energy(
                link, bytes_down, bytes_up, 0.0, 0.0, compute_s, idle_s=stamp[1],
                keepalive=self.keepalive,
            )  # fmt: skip
            end = stamp[0] + e.radio_end_s
            self._phase_end = max(self._phase_end, end)
        else:
            end = self._wall() - self._t0
        fleet.cols.set("radio_end", fleet.cols.row[node_id], end)

    def state(self, fleet: FleetState) -> dict[str, np.ndarray]:
        """The clock's state after a phase, as arrays (kept with a round's checkpoint): the
        virtual time and each node's last transfer end."""
        cols = fleet.cols  # node_ids are in row order: row i holds node_ids[i]
        return {
            "virtual": np.array([self._virtual], dtype=np.float64),
            "node_ids": np.array([int(n) for n in cols.node_ids], dtype=np.uint64),
            "radio_end": cols.column("radio_end").astype(np.float64, copy=True),
        }

    def restore(self, fleet: FleetState, state: dict[str, np.ndarray]) -> None:
        """Continue from :meth:`state`'s arrays (a resumed run): the virtual time, and the last
        transfer end of each node the fleet holds again."""
        self._virtual = self._phase_end = float(state["virtual"][0])
        ends = zip(state["node_ids"].tolist(), state["radio_end"].tolist(), strict=True)
        for node_id, end in ends:
            if int(node_id) in fleet:
                fleet.cols.set("radio_end", fleet.cols.row[int(node_id)], end)

    def end_phase(self, call: str) -> None:
        """The replies of the ``call`` phase are in: the virtual clock moves to its last
        transfer's end; the phase's stamps are forgotten."""
        self._virtual = max(self._virtual, self._phase_end)
        self.stamps = {k: v for k, v in self.stamps.items() if k[1] != call}

    def closing_rows(self, fleet: FleetState) -> list[EnergyRow]:
        """The end of the run: each node's radio after its last transfer (the full tail; with
        keep-alive, the exchanges until now before it), one ``run-end`` upload row each."""
        now = self.now()
        if now is None:
            return []
        rows = []
        for node_id in fleet.ordered():
            st = fleet[node_id]
            end = fleet.cols.get("radio_end", fleet.cols.row[node_id])
            if math.isnan(end):
                continue
            link = st.link.terms
            j = radio.closing_j(radio.SCALAR, link, max(now - end, 0.0), self.keepalive)
            if j <= 0.0:
                continue
            src = f"{st.link.provenance()}; {CLOSING_SOURCE}"
            comp = (Component("upload", "radio", j, "modeled", src),)
            rows.append(EnergyRow(str(node_id), CLOSING_CALL, "upload", j, 0, 0.0, "ok", comp))
        return rows
