"""Selectors: who trains this round. Each ranks the online candidates; a small wrapper takes k.

All selectors are deterministic for a seed (no global random state). Candidates arrive in a
run-independent order (by partition id).

A selector is handed the fleet and a Forecaster (:mod:`fedenergy.server.forecasters`; a plain
function of a node id is called once per node). Selections over 100,000 nodes are vectorised on
FleetState's columns (``FleetState.rows``, ``column``) and the forecaster's
``forecast_columns``, and choose exactly what a per-node loop would (the same ids in the same
order; tests/test_selection_speedpath.py compares them with the plain implementations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedenergy.server.fleet_state import FleetState
from fedenergy.server.forecasters import Forecaster, ForecastFn, as_forecaster


class Selector(Protocol):
    def select(
        self,
        server_round: int,
        candidates: Sequence[int],
        k: int,
        fleet: FleetState,
        forecast: Forecaster | ForecastFn,
    ) -> list[int]:
        """Choose at most ``k`` node ids among ``candidates`` for ``server_round``."""
        ...


@dataclass(frozen=True)
class RandomSelector:
    """Uniform sampling without replacement (FedAvg's baseline), deterministic per seed+round."""

    seed: int = 0
    stream: int = 0  # separate streams for train and evaluate selections

    def select(self, server_round, candidates, k, fleet=None, forecast=None) -> list[int]:
        ordered = list(candidates)
        k = min(k, len(ordered))
        rng = np.random.default_rng([self.seed, self.stream, server_round])
        picks = rng.choice(len(ordered), size=k, replace=False)
        return [ordered[i] for i in sorted(picks.tolist())]


# -- vectorised helpers ----------------------------------------------------------------------------
def _as_list(candidates: Sequence[int]) -> list[int]:
    return candidates if isinstance(candidates, list) else list(candidates)


def _smallest(values: np.ndarray, m: int) -> np.ndarray:
    """Positions of the ``m`` smallest ``values``, ascending, ties by position: the first ``m``
    of a stable sort (what ``sorted(..., key=...)[:m]`` takes), without sorting everything."""
    n = len(values)
    m = min(m, n)
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    if m < n:
        kth = np.partition(values, m - 1)[m - 1]
        idx = np.flatnonzero(values <= kth) if not np.isnan(kth) else np.arange(n)
    else:
        idx = np.arange(n)
    return idx[np.argsort(values[idx], kind="stable")][:m]


def forecast_columns(
    candidates: list[int], rows: np.ndarray, fleet: FleetState, forecast: Forecaster | ForecastFn
) -> tuple[np.ndarray, np.ndarray]:
    """Forecast total_j and device_j of every candidate (``rows``: their FleetState rows), as
    arrays aligned with ``candidates``: the floats ``forecast(c)`` gives."""
    return as_forecaster(forecast, fleet).forecast_columns(candidates, rows)


@dataclass(frozen=True)
class EnergyGreedySelector:
    """The k nodes with the cheapest forecast joules (ties by partition order)."""

    def select(self, server_round, candidates, k, fleet, forecast) -> list[int]:
        cands = _as_list(candidates)
        total, _ = forecast_columns(cands, fleet.rows(cands), fleet, forecast)
        return [cands[i] for i in _smallest(total, k).tolist()]


def explore_slots(sel: UtilityPerJouleSelector, server_round: int, k: int) -> int:
    """Exploration slots this round: ``exploration * k`` rounded up or down at random (seeded per
    round, on a stream of its own) so that the long-run share is exactly ``exploration``."""
    want = sel.exploration * k
    base = math.floor(want + 1e-12)
    frac = want - base
    if frac <= 1e-12:
        return base
    u = np.random.default_rng([sel.seed, 0x0078, server_round]).random()
    return base + (1 if u < frac else 0)


@dataclass(frozen=True)
class UtilityPerJouleSelector:
    """Oort-style statistical utility per forecast joule, with exploration and fairness.

    utility = n_examples x last training loss (Oort's |B| * sqrt(mean loss^2), with the mean
    loss the client reports), plus Oort's staleness bonus sqrt(0.1 * ln(round) / last_round);
    score = utility / forecast_joules ** energy_weight. Nodes never seen get an optimistic
    utility (the best observed). ``exploration`` of the k slots go to random unexplored nodes
    while any remain — exploration x k slots on average: its integer part every round, one more
    with probability its fractional part (a seeded draw), so a share of 0.1 with k = 4 explores
    0.4 nodes a round, not 1; a node idle for ``max_staleness`` rounds — a never-tried node counts
    as idle since round 0 — is included first (fairness: no node starves and every partition
    keeps contributing data).
    """

    seed: int = 0
    exploration: float = 0.2
    max_staleness: int = 20
    energy_weight: float = 1.0

    def select(self, server_round, candidates, k, fleet, forecast) -> list[int]:
        cands = _as_list(candidates)
        k = min(k, len(cands))
        if k <= 0:
            return []
        rng = np.random.default_rng([self.seed, 0x0077, server_round])
        rows = fleet.rows(cands)
        last_round = fleet.column("last_round", rows)
        cost: np.ndarray | None = None  # forecast total per candidate, computed when needed

        def costs() -> np.ndarray:
            nonlocal cost
            if cost is None:
                cost = forecast_columns(cands, rows, fleet, forecast)[0]
            return cost

        taken = np.zeros(len(cands), dtype=bool)  # by position; candidate ids are unique rows
        chosen: list[int] = []  # positions
        # 1. fairness: the nodes without a usable update for longer than the staleness bound
        # come first, longest-idle first (a never-tried node has been idle since round 0:
        # exploration alone would not bound its wait, e.g. with exploration 0). Two limits keep
        # stale nodes that fail or are offline from starving the round of usable updates: one
        # whose call of the previous round brought nothing usable sits this round out, and
        # they take at most k - 1 of k > 1 slots.
        last_tried = fleet.column("last_tried", rows)
        failed_last = (last_tried == server_round - 1) & (last_tried > last_round)
        stale = np.flatnonzero((server_round - last_round > self.max_staleness) & ~failed_last)
        stale = stale[np.argsort(last_round[stale], kind="stable")][: max(1, k - 1)]
        chosen.extend(stale.tolist())
        taken[stale] = True
        # 2. exploration among never-tried nodes
        fresh = np.flatnonzero((fleet.column("participations", rows) == 0) & ~taken)
        n_explore = min(len(fresh), k - len(chosen), explore_slots(self, server_round, k))
        if n_explore > 0:  # cheaper unexplored nodes are likelier to be tried
            weights = 1.0 / np.maximum(costs()[fresh], 1e-12)
            picks = rng.choice(len(fresh), size=n_explore, replace=False, p=weights / weights.sum())
            explored = fresh[np.sort(picks)]
            chosen.extend(explored.tolist())
            taken[explored] = True
        # 3. exploitation: best utility per joule
        m = k - len(chosen)
        if m > 0:
            has_loss = fleet.column("has_loss", rows)
            util = fleet.column("examples", rows) * fleet.column("loss", rows)
            seen = util[has_loss]
            if not len(seen):
                optimistic = 1.0
            elif np.isnan(seen).any():  # Python's max, as the per-node loop takes it
                optimistic = max(seen.tolist())
            else:
                optimistic = float(seen.max())
            util = np.where(has_loss, util, optimistic)
            if server_round > 1:  # Oort's bonus over the last round a node was involved in
                involved = np.maximum(last_round, last_tried)
                old = np.flatnonzero(involved > 0)
                scale = 0.1 * math.log(server_round)
                util[old] = util[old] + optimistic * np.sqrt(scale / involved[old])
            base = np.maximum(costs(), 1e-12)
            if self.energy_weight == 1.0:
                den = base  # x ** 1.0 == x
            else:  # Python's pow per distinct cost (numpy's may differ in the last bit)
                values, inverse = np.unique(base, return_inverse=True)
                den = np.array([v**self.energy_weight for v in values.tolist()])[inverse]
            rest = np.flatnonzero(~taken)
            score = util[rest] / den[rest]
            chosen.extend(rest[_smallest(-score, m)].tolist())
        return [cands[i] for i in chosen]


@dataclass(frozen=True)
class BatteryAwareSelector:
    """Skip nodes whose battery would fall below ``floor`` (fraction of capacity) after the
    forecast call, then let ``inner`` choose among the rest."""

    inner: Selector
    floor: float = 0.2

    def select(self, server_round, candidates, k, fleet, forecast) -> list[int]:
        cands = _as_list(candidates)
        rows = fleet.rows(cands)
        ok = ~fleet.column("has_batt", rows)  # mains powered: always fine
        pos = np.flatnonzero(~ok)
        if len(pos):
            sub = rows[pos]
            _, device_j = forecast_columns([cands[i] for i in pos.tolist()], sub, fleet, forecast)
            left = fleet.column("battery", sub) - device_j
            ok[pos] = left >= self.floor * fleet.column("capacity", sub)
        chosen = cands if ok.all() else [cands[i] for i in np.flatnonzero(ok).tolist()]
        return self.inner.select(server_round, chosen, k, fleet, forecast)


@dataclass(frozen=True)
class BudgetSelector:
    """Keep the forecast joules of the round within ``budget_j``: take ``inner``'s choice in
    its order while it fits; then fill remaining slots with the cheapest nodes that still fit."""

    inner: Selector
    budget_j: float

    def select(self, server_round, candidates, k, fleet, forecast) -> list[int]:
        cands = _as_list(candidates)
        chosen, spent = [], 0.0
        for c in self.inner.select(server_round, cands, k, fleet, forecast):
            cost = forecast(c).total_j
            if spent + cost <= self.budget_j:
                chosen.append(c)
                spent += cost
        if len(chosen) >= k:
            return chosen
        rows = fleet.rows(cands)
        rest = np.flatnonzero(~np.isin(rows, fleet.rows(chosen)))  # not chosen (by id)
        total, _ = forecast_columns([cands[i] for i in rest.tolist()], rows[rest], fleet, forecast)
        # cheapest first; once one does not fit, no dearer one does (spent is unchanged)
        for j in _smallest(total, k - len(chosen) + 1).tolist():
            if len(chosen) >= k:
                break
            cost = float(total[j])
            if spent + cost > self.budget_j:
                break
            chosen.append(cands[int(rest[j])])
            spent += cost
        return chosen


SELECTORS = ("random", "greedy", "utility")
