"""The vectorised selection path chooses exactly what the plain per-node code chose.

``_reference_*`` below are the selectors, ``FleetState.ordered``/``online`` and
``prior_forecast`` as they were before FleetState got numpy columns (one Python call per node);
the tests run both on random fleets — mixed devices and links, availability < 1, batteries,
unknown nodes (lazy discovery), training history, observed compute and upload bytes — and
compare node ids in order, and forecasts float for float.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedenergy.ledger import EnergyRow
from fedenergy.physics.devices import device_catalog
from fedenergy.physics.network import link_catalog
from fedenergy.report import Component
from fedenergy.server import (
    BatteryAwareSelector,
    BudgetSelector,
    EnergyGreedySelector,
    FleetState,
    NodeInfo,
    RandomSelector,
    UtilityPerJouleSelector,
    fixed_forecaster,
)
from fedenergy.server.forecast import Forecast, TrainCall
from fedenergy.server.forecasters import PlannedForecaster
from fedenergy.server.node import PRIOR_PROFILE, profiles
from fedenergy.server.selectors import explore_slots
from fedenergy.sim.fleet import is_online


# -- the per-node reference implementations --------------------------------------------------------
def _reference_ordered(fleet):
    last = 1 << 62
    pairs = sorted(
        [(st.info.partition_id if st.known else last, n) for n, st in fleet.nodes.items()]
    )
    return [n for _, n in pairs]


def _reference_online(fleet, server_round):
    return [
        n
        for n in _reference_ordered(fleet)
        if is_online(
            fleet.seed, server_round, fleet[n].info.partition_id, fleet[n].info.availability
        )
    ]


def _reference_prior(fleet, codec_label, payload_bytes):
    known = [n for n, st in fleet.nodes.items() if st.known]
    if not known:
        return None
    fcs = [fleet.forecast(n, codec_label, payload_bytes) for n in known]
    names = ("compute_j", "download_j", "upload_j", "device_j")
    return Forecast(*(float(np.mean([getattr(f, a) for f in fcs])) for a in names))


def _reference_greedy(server_round, candidates, k, fleet, forecast):
    ranked = sorted(enumerate(candidates), key=lambda ic: (forecast(ic[1]).total_j, ic[0]))
    return [c for _, c in ranked[:k]]


def _reference_utility(sel, server_round, candidates, k, fleet, forecast):
    k = min(k, len(candidates))
    if k <= 0:
        return []
    rng = np.random.default_rng([sel.seed, 0x0077, server_round])
    states = {c: fleet[c] for c in candidates}
    joules: dict[int, float] = {}

    def cost(c):
        if c not in joules:
            joules[c] = forecast(c).total_j
        return joules[c]

    chosen = []

    def sits_out(c):  # its call of the previous round brought nothing usable
        st = states[c]
        return st.last_tried == server_round - 1 and st.last_tried > st.last_round

    stale = [
        c
        for c in candidates
        if server_round - states[c].last_round > sel.max_staleness and not sits_out(c)
    ]
    stale.sort(key=lambda c: states[c].last_round)
    chosen.extend(stale[: max(1, k - 1)])
    taken = set(chosen)
    fresh = [c for c in candidates if states[c].participations == 0 and c not in taken]
    n_explore = min(len(fresh), k - len(chosen), explore_slots(sel, server_round, k))
    if n_explore > 0:
        weights = np.array([1.0 / max(cost(c), 1e-12) for c in fresh])
        picks = rng.choice(len(fresh), size=n_explore, replace=False, p=weights / weights.sum())
        chosen.extend(fresh[i] for i in sorted(picks.tolist()))
    seen = [
        states[c].info.num_examples * states[c].last_loss
        for c in candidates
        if states[c].last_loss is not None
    ]
    optimistic = max(seen) if seen else 1.0

    def score(c):
        st = states[c]
        util = st.info.num_examples * st.last_loss if st.last_loss is not None else optimistic
        involved = max(st.last_round, st.last_tried)
        if involved > 0 and server_round > 1:
            util += optimistic * math.sqrt(0.1 * math.log(server_round) / involved)
        return util / max(cost(c), 1e-12) ** sel.energy_weight

    taken = set(chosen)
    rest = [c for c in candidates if c not in taken]
    rest.sort(key=lambda c: -score(c))
    chosen.extend(rest[: k - len(chosen)])
    return chosen


def _reference(sel, server_round, candidates, k, fleet, forecast):
    """The plain selection of ``sel`` (wrappers included)."""
    if isinstance(sel, RandomSelector):
        return sel.select(server_round, candidates, k, fleet, forecast)
    if isinstance(sel, EnergyGreedySelector):
        return _reference_greedy(server_round, candidates, k, fleet, forecast)
    if isinstance(sel, UtilityPerJouleSelector):
        return _reference_utility(sel, server_round, candidates, k, fleet, forecast)
    if isinstance(sel, BatteryAwareSelector):
        ok = []
        for c in candidates:
            st = fleet[c]
            if st.capacity_j is None or st.battery_j is None:
                ok.append(c)
            elif st.battery_j - forecast(c).device_j >= sel.floor * st.capacity_j:
                ok.append(c)
        return _reference(sel.inner, server_round, ok, k, fleet, forecast)
    if isinstance(sel, BudgetSelector):
        chosen, spent = [], 0.0
        for c in _reference(sel.inner, server_round, candidates, k, fleet, forecast):
            cost = forecast(c).total_j
            if spent + cost <= sel.budget_j:
                chosen.append(c)
                spent += cost
        for c in sorted(
            (c for c in candidates if c not in chosen), key=lambda c: forecast(c).total_j
        ):
            if len(chosen) >= k:
                break
            cost = forecast(c).total_j
            if spent + cost <= sel.budget_j:
                chosen.append(c)
                spent += cost
        return chosen
    raise TypeError(sel)


# -- random fleets -------------------------------------------------------------------------------
DEVICES = sorted(device_catalog())
LINKS = sorted(link_catalog())


def random_fleet(seed: int, n: int = 400, unknown: int = 60) -> FleetState:
    rng = np.random.default_rng(seed)
    ids = rng.choice(2**62, size=n + unknown, replace=False).tolist()
    ids = [x + (2**63 if i % 2 else 0) for i, x in enumerate(ids)]  # Flower's ids are uint64
    infos = [
        NodeInfo(
            ids[i],
            i,
            DEVICES[int(rng.integers(len(DEVICES)))],
            LINKS[int(rng.integers(len(LINKS)))],
            num_examples=int(rng.integers(0, 40)),  # few sizes: many equal forecasts (ties)
            availability=float(rng.choice([1.0, 0.8, 0.5])),
            battery_initial=float(rng.uniform(0.0005, 0.01)),
            recharge_per_round=float(rng.choice([0.0, 0.001])),
        )
        for i in range(n)
    ]
    fleet = FleetState(infos, seed=seed, infra_kwh_per_gb=0.059)
    fleet.flops_per_example = 5e4
    fleet.download_bytes = 10_000
    for nid in ids[n:]:
        fleet.add_unknown(nid)
    return fleet


def give_history(fleet: FleetState, rng: np.random.Generator, server_round: int) -> None:
    """A round of history through FleetState's own methods and by direct assignment."""
    nodes = list(fleet.nodes)
    picked = rng.choice(len(nodes), size=min(40, len(nodes)), replace=False).tolist()
    rows = []
    for j, i in enumerate(picked):
        nid = nodes[i]
        loss = float(rng.choice([0.5, 1.0, 1.5, 2.0]))  # repeated values: ties in the score
        fleet.observe_train(nid, server_round, loss)
        if j % 3 == 0:
            joules, seconds = float(rng.uniform(0.01, 5)), float(rng.uniform(0, 40))
            comp = (Component("train", "compute", joules, "modeled", "test"),)
            rows.append(EnergyRow(str(nid), "train", "train", joules, 0, seconds, "ok", comp))
            up = (Component("upload", "radio", 0.5, "modeled", "test"),)
            nbytes = int(rng.integers(0, 20_000))  # 0 bytes too: no upload radio at all
            rows.append(EnergyRow(str(nid), "train", "upload", 0.5, nbytes, 0.1, "ok", up))
        elif j % 3 == 1:  # direct assignments must reach the columns as well
            st = fleet[nid]
            st.observed_compute_j, st.observed_compute_s = float(rng.uniform(0.01, 5)), None
            st.observed_upload_bytes["int8"] = int(rng.integers(1, 9_000))
            if st.battery_j is not None:
                st.battery_j *= 0.5
    fleet.observe_rows(rows, {n: "none" for n in nodes})
    # calls that came back with nothing usable (failed, offline): tried, not trained
    untrained = [nodes[i] for i in range(len(nodes)) if i not in set(picked)]
    fleet.observe_tried(untrained[: len(untrained) // 4], server_round)
    fleet.recharge()


def forecasts(fleet: FleetState) -> dict:
    """Forecasters of several kinds (the selectors vectorise all but the plain function)."""
    by_link = {"lte": ("topk:0.05", 700), "3g": ("topk:0.05", 700), "ethernet": ("fp16", 5_000)}

    def plan(st):  # codec, payload and download size by link, as EnergyAwareStrategy's policies
        label, payload = by_link.get(st.link.id, ("int8", 2_500)) if st.known else ("int8", 2_500)
        return TrainCall(label, payload, 4_000 if label == "int8" else 9_000)

    return {
        "forecaster": fixed_forecaster(fleet, "none", 9_640),
        "forecaster-int8": fixed_forecaster(fleet, "int8", 2_500),
        "per-link": PlannedForecaster(fleet, plan, per_link=True),
        "plain": lambda nid: fleet.forecast(nid, "none", 9_640),  # a function: per node
    }


SELECTORS = {
    "random": lambda: RandomSelector(seed=5),
    "greedy": EnergyGreedySelector,
    "utility": lambda: UtilityPerJouleSelector(seed=5, max_staleness=2),
    "utility-w": lambda: UtilityPerJouleSelector(seed=1, energy_weight=0.7, exploration=0.5),
    "battery": lambda: BatteryAwareSelector(UtilityPerJouleSelector(seed=2), floor=0.3),
    "budget": lambda: BudgetSelector(EnergyGreedySelector(), 30.0),
    "budget-util": lambda: BudgetSelector(UtilityPerJouleSelector(seed=3), 12.0),
    "budget-battery": lambda: BudgetSelector(
        BatteryAwareSelector(RandomSelector(seed=4), floor=0.2), 20.0
    ),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selections_match_the_per_node_reference(seed):
    fleet = random_fleet(seed)
    rng = np.random.default_rng(100 + seed)
    checked = 0
    for rnd in range(1, 7):
        assert fleet.ordered() == _reference_ordered(fleet)
        online = fleet.online(rnd)
        assert online == _reference_online(fleet, rnd)
        for fname, fc in forecasts(fleet).items():
            for sname, make in SELECTORS.items():
                for k in (1, 25, len(online) + 5):
                    fast = make().select(rnd, online, k, fleet, fc)
                    ref = _reference(make(), rnd, online, k, fleet, fc)
                    assert fast == ref, (rnd, fname, sname, k)
                    checked += 1
        if rnd == 3:  # lazy discovery learns a few unknown nodes mid-run
            unknown = [n for n, st in fleet.nodes.items() if not st.known][:10]
            for j, nid in enumerate(unknown):
                fleet.add(NodeInfo(nid, 1000 + j, DEVICES[j % len(DEVICES)], LINKS[j % len(LINKS)]))
        give_history(fleet, rng, rnd)
    assert checked > 0


@pytest.mark.parametrize("seed", [0, 3])
def test_forecast_many_equals_forecast_float_for_float(seed):
    fleet = random_fleet(seed)
    rng = np.random.default_rng(seed)
    for rnd in range(1, 4):
        give_history(fleet, rng, rnd)
    nodes = list(fleet.nodes)
    rows = fleet.rows(nodes)
    for down in (0, 10_000, 3_000_000):
        fleet.download_bytes = down
        for label, payload in (("none", 9_640), ("int8", 2_500), ("none", -1_500)):
            many = fleet.forecast_many(rows, label, payload)
            for i, nid in enumerate(nodes):
                f = fleet.forecast(nid, label, payload)
                got = tuple(float(col[i]) for col in many)
                assert got == (f.compute_j, f.download_j, f.upload_j, f.device_j), (nid, down)
            prior = _reference_prior(fleet, label, payload)
            assert fleet.prior_forecast(label, payload) == prior


def test_prior_without_known_nodes_and_unknown_only_fleets():
    fleet = FleetState([], seed=0, infra_kwh_per_gb=0.059)
    fleet.flops_per_example = 5e4
    for nid in (7, 3, 11):
        fleet.add_unknown(nid)
    assert fleet.ordered() == [3, 7, 11] == _reference_ordered(fleet)
    fc = fixed_forecaster(fleet, "none", 1_000)
    for sname, make in SELECTORS.items():
        assert make().select(1, fleet.online(1), 2, fleet, fc) == _reference(
            make(), 1, fleet.online(1), 2, fleet, fc
        ), sname
    device, link = profiles(*PRIOR_PROFILE)
    assert fleet.forecast(3, "none", 1_000) == fleet.prior_forecast("none", 1_000)
    assert device.id, link.id


def test_energy_aware_strategy_forecast_is_vectorised_and_exact():
    """EnergyAwareStrategy's forecaster with the per-link policy (codecs and downlink by link)."""
    pytest.importorskip("torch")
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.supercore.task_identity import TaskIdentity

    from fedenergy.ledger import Ledger
    from fedenergy.server import EnergyAwareStrategy, PerLinkPolicy
    from fedenergy.server.build import make_aggregator
    from fedenergy.sim.tasks import get_task

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    fleet = random_fleet(7, n=200, unknown=30)
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp(prefix="speedpath-"))
    strategy = EnergyAwareStrategy(
        make_aggregator("fedavg"),
        fleet,
        Ledger(tmp / "ledger.sqlite"),
        "t",
        {},
        policy=PerLinkPolicy(),
    )
    arrays = ArrayRecord(get_task("digits").make_model().state_dict())
    strategy.outbox.begin_round(arrays, ConfigRecord({"lr": 0.1}))
    fc = strategy.forecaster()
    assert isinstance(fc, PlannedForecaster) and fc.per_link
    rng = np.random.default_rng(0)
    for rnd in range(1, 4):
        online = fleet.online(rnd)
        for sname, make in SELECTORS.items():
            fast = make().select(rnd, online, 20, fleet, fc)
            assert fast == _reference(make(), rnd, online, 20, fleet, fc), sname
        give_history(fleet, rng, rnd)
