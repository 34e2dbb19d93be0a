"""A user's policy, a user's selector and a subclass of EnergyAwareStrategy get the vectorised
forecasts too, through the public interface (a policy's ``per_link``, the strategy's
``forecaster()``, ``Forecaster.forecast_columns``), and choose what the per-node path chooses."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from fedenergy.codecs import parse_codec
from fedenergy.ledger import Ledger
from fedenergy.server import EnergyAwareStrategy, EnergyGreedySelector, UtilityPerJouleSelector
from fedenergy.server.forecasters import PlannedForecaster
from fedenergy.server.selectors import forecast_columns
from fedenergy.sim.tasks import get_task
from tests.test_selection_speedpath import SELECTORS, _reference, give_history, random_fleet

CELLULAR = ("lte", "3g", "5g")


class CellularSaver:
    """A user's policy: top-k on cellular links, int8 elsewhere; the global model in int8 to
    LTE nodes. Its codecs depend on the node only through its known flag and link."""

    per_link = True

    def __init__(self) -> None:
        self.asked = 0  # codec_for calls

    def codec_for(self, node, server_round):
        self.asked += 1
        cellular = node.known and node.link.id in CELLULAR
        return parse_codec("topk:0.05" if cellular else "int8")

    def downlink_for(self, node, server_round):
        return parse_codec("int8" if node.known and node.link.id == "lte" else "none")

    def observe(self, server_round, accuracy):
        return None


class OpaqueSaver(CellularSaver):
    """The same codecs, without the per-link declaration: forecast node by node."""

    per_link = False


class CheapestFirst:
    """A user's selector: the k cheapest forecasts, from the forecaster's columns."""

    def select(self, server_round, candidates, k, fleet, forecast):
        cands = list(candidates)
        total, _ = forecast_columns(cands, fleet.rows(cands), fleet, forecast)
        return [cands[i] for i in np.argsort(total, kind="stable")[:k].tolist()]


class MyStrategy(EnergyAwareStrategy):
    """A user's subclass of the strategy (its own evaluation aggregation)."""

    def aggregate_evaluate(self, server_round, replies):
        return super().aggregate_evaluate(server_round, replies)


class _Grid:
    def __init__(self, ids):
        self.ids = list(ids)

    def get_node_ids(self):
        return list(self.ids)


def _count_forecasts(fleet):
    """Count the fleet's per-node forecasts (``FleetState.forecast`` calls)."""
    calls = {"n": 0}
    plain = fleet.forecast

    def counted(*args, **kwargs):
        calls["n"] += 1
        return plain(*args, **kwargs)

    fleet.forecast = counted
    return calls


@pytest.fixture(scope="module")
def arrays():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    return ArrayRecord(get_task("digits").make_model().state_dict())


def _strategy(tmp_path, fleet, policy, cls=MyStrategy, selector=None):
    return cls(
        FedAvg(),
        fleet,
        Ledger(tmp_path / f"{type(policy).__name__}.sqlite"),
        "t",
        {},
        fraction_train=0.15,
        selector=selector,
        policy=policy,
    )


def test_a_users_policy_and_a_subclass_get_the_vectorised_forecasts(tmp_path, arrays):
    fleet = random_fleet(11, n=160, unknown=20)
    calls = _count_forecasts(fleet)
    policy = CellularSaver()
    strategy = _strategy(tmp_path, fleet, policy)
    strategy.outbox.begin_round(arrays, ConfigRecord({"lr": 0.1}))
    fc = strategy.forecaster()
    assert isinstance(fc, PlannedForecaster) and fc.per_link
    rng = np.random.default_rng(3)
    classes = len({(st.known, st.link.id) for st in fleet.nodes.values()})
    user = {"user-cheapest": CheapestFirst, **SELECTORS}
    for rnd in range(1, 4):
        online = fleet.online(rnd)
        for name, make in user.items():
            calls["n"], policy.asked = 0, 0
            fast = make().select(rnd, online, 20, fleet, fc)
            vectorised = calls["n"]
            # BudgetSelector prices its inner choice (at most k nodes) one by one
            assert vectorised == 0 or (name.startswith("budget") and vectorised <= 20), name
            # once per class in each forecast_columns (at most 3 a selection), once per node else
            assert policy.asked <= 3 * classes + vectorised, name
            calls["n"] = 0
            per_node = make().select(rnd, online, 20, fleet, lambda nid: fc.forecast(nid))
            if name in ("greedy", "budget", "user-cheapest"):  # these price every candidate
                assert calls["n"] >= len(online), name
            assert fast == per_node, (rnd, name)
            if name != "user-cheapest":
                assert fast == _reference(make(), rnd, online, 20, fleet, fc), (rnd, name)
        give_history(fleet, rng, rnd)


@pytest.mark.parametrize(
    "make", [EnergyGreedySelector, lambda: UtilityPerJouleSelector(seed=4), CheapestFirst]
)
def test_configure_train_hands_any_selector_the_vectorised_forecaster(tmp_path, arrays, make):
    """Through configure_train: a subclass with a per-link user policy makes no per-node
    forecast and selects what the same policy without the declaration selects node by node."""
    chosen = {}
    for policy in (CellularSaver(), OpaqueSaver()):
        fleet = random_fleet(5, n=120, unknown=10)
        calls = _count_forecasts(fleet)
        strategy = _strategy(tmp_path, fleet, policy, selector=make())
        msgs = strategy.configure_train(1, arrays, ConfigRecord({"lr": 0.1}), _Grid(fleet.nodes))
        chosen[policy.per_link] = sorted(m.metadata.dst_node_id for m in msgs)  # (any order)
        if policy.per_link:
            assert calls["n"] == 0
        else:
            assert calls["n"] >= len(fleet.online(1))
        assert len(chosen[policy.per_link]) == int(0.15 * len(fleet.nodes))
        strategy.ledger.close()
    assert chosen[True] == chosen[False]
