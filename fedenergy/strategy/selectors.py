"""Selectors: who trains this round. Each ranks the online candidates; a small wrapper takes k.

All selectors are deterministic for a seed (no global random state). Candidates arrive in a
run-independent order (by partition id).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedenergy.strategy.state import FleetState, Forecast

ForecastFn = Callable[[int], Forecast]


class Selector(Protocol):
    def select(
        self,
        server_round: int,
        candidates: Sequence[int],
        k: int,
        fleet: FleetState,
        forecast: ForecastFn,
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


@dataclass(frozen=True)
class EnergyGreedySelector:
    """The k nodes with the cheapest forecast joules (ties by partition order)."""

    def select(self, server_round, candidates, k, fleet, forecast) -> list[int]:
        ranked = sorted(enumerate(candidates), key=lambda ic: (forecast(ic[1]).total_j, ic[0]))
        return [c for _, c in ranked[:k]]


@dataclass(frozen=True)
class UtilityPerJouleSelector:
    """Oort-style statistical utility per forecast joule, with exploration and fairness.

    utility = n_examples x last training loss (Oort's |B| * sqrt(mean loss^2), with the mean
    loss the client reports), plus Oort's staleness bonus sqrt(0.1 * ln(round) / last_round);
    score = utility / forecast_joules ** energy_weight. Nodes never seen get an optimistic
    utility (the best observed). ``exploration`` of the k slots go to random unexplored nodes
    while any remain; a node idle for ``max_staleness`` rounds is included first (fairness:
    no node starves and every partition keeps contributing data).
    """

    seed: int = 0
    exploration: float = 0.2
    max_staleness: int = 20
    energy_weight: float = 1.0

    def select(self, server_round, candidates, k, fleet, forecast) -> list[int]:
        k = min(k, len(candidates))
        if k <= 0:
            return []
        rng = np.random.default_rng([self.seed, 0x0077, server_round])
        states = {c: fleet[c] for c in candidates}
        joules: dict[int, float] = {}  # forecast total per node, computed once per selection

        def cost(c: int) -> float:
            if c not in joules:
                joules[c] = forecast(c).total_j
            return joules[c]

        chosen: list[int] = []
        # 1. fairness: the longest-idle nodes past the staleness bound come first
        stale = [
            c
            for c in candidates
            if server_round - states[c].last_round > self.max_staleness and states[c].last_round > 0
        ]
        stale.sort(key=lambda c: states[c].last_round)
        chosen.extend(stale[:k])
        # 2. exploration among never-tried nodes
        taken = set(chosen)
        fresh = [c for c in candidates if states[c].participations == 0 and c not in taken]
        n_explore = min(len(fresh), k - len(chosen), math.ceil(self.exploration * k))
        if n_explore > 0:  # cheaper unexplored nodes are likelier to be tried
            weights = np.array([1.0 / max(cost(c), 1e-12) for c in fresh])
            picks = rng.choice(len(fresh), size=n_explore, replace=False, p=weights / weights.sum())
            chosen.extend(fresh[i] for i in sorted(picks.tolist()))
        # 3. exploitation: best utility per joule
        seen = [
            states[c].info.num_examples * states[c].last_loss
            for c in candidates
            if states[c].last_loss is not None
        ]
        optimistic = max(seen) if seen else 1.0

        def score(c: int) -> float:
            st = states[c]
            util = st.info.num_examples * st.last_loss if st.last_loss is not None else optimistic
            if st.last_round > 0 and server_round > 1:
                util += optimistic * math.sqrt(0.1 * math.log(server_round) / st.last_round)
            return util / max(cost(c), 1e-12) ** self.energy_weight

        taken = set(chosen)
        rest = [c for c in candidates if c not in taken]
        rest.sort(key=lambda c: -score(c))
        chosen.extend(rest[: k - len(chosen)])
        return chosen


@dataclass(frozen=True)
class BatteryAwareSelector:
    """Skip nodes whose battery would fall below ``floor`` (fraction of capacity) after the
    forecast call, then let ``inner`` choose among the rest."""

    inner: Selector
    floor: float = 0.2

    def select(self, server_round, candidates, k, fleet, forecast) -> list[int]:
        ok = []
        for c in candidates:
            st = fleet[c]
            if st.capacity_j is None or st.battery_j is None:
                ok.append(c)
            elif st.battery_j - forecast(c).device_j >= self.floor * st.capacity_j:
                ok.append(c)
        return self.inner.select(server_round, ok, k, fleet, forecast)


@dataclass(frozen=True)
class BudgetSelector:
    """Keep the forecast joules of the round within ``budget_j``: take ``inner``'s choice in
    its order while it fits; then fill remaining slots with the cheapest nodes that still fit."""

    inner: Selector
    budget_j: float

    def select(self, server_round, candidates, k, fleet, forecast) -> list[int]:
        chosen, spent = [], 0.0
        for c in self.inner.select(server_round, candidates, k, fleet, forecast):
            cost = forecast(c).total_j
            if spent + cost <= self.budget_j:
                chosen.append(c)
                spent += cost
        for c in sorted(
            (c for c in candidates if c not in chosen), key=lambda c: forecast(c).total_j
        ):
            if len(chosen) >= k:
                break
            cost = forecast(c).total_j
            if spent + cost <= self.budget_j:
                chosen.append(c)
                spent += cost
        return chosen


SELECTORS = ("random", "greedy", "utility")
