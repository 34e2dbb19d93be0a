"""Selectors and compression policies, on a FleetState built from real device/link profiles."""

import pytest

from fedenergy.codecs import parse_codec
from fedenergy.server import (
    AccuracyAwarePolicy,
    BatteryAwareSelector,
    BudgetSelector,
    EnergyGreedySelector,
    FixedPolicy,
    FleetState,
    NodeInfo,
    PerLinkPolicy,
    RandomSelector,
    UtilityPerJouleSelector,
    fixed_forecaster,
)
from fedenergy.server.policies import DEFAULT_PER_LINK

MIX = [("phone", "lte"), ("rpi4", "wifi"), ("laptop", "ethernet"), ("jetson-orin-nano", "wifi")]


def fleet(n=40, seed=0, **kw):
    infos = [NodeInfo(1000 + i, i, *MIX[i % 4], num_examples=50 + i, **kw) for i in range(n)]
    st = FleetState(infos, seed=seed, infra_kwh_per_gb=0.059)
    st.flops_per_example = 5e4
    st.download_bytes = 10_000
    return st


def fc(st):
    """The forecast the selectors get: per-link, so they vectorise it (the per-node path is
    compared with the vectorised one in test_selection_speedpath.py)."""
    return fixed_forecaster(st, "none", 9_640)


ALL = [
    lambda: RandomSelector(seed=3),
    EnergyGreedySelector,
    lambda: UtilityPerJouleSelector(seed=3),
]


@pytest.mark.parametrize("make", ALL)
def test_selectors_are_deterministic_for_a_seed_and_respect_k(make):
    a, b = fleet(), fleet()
    for rnd in range(1, 6):
        pa = make().select(rnd, a.ordered(), 10, a, fc(a))
        pb = make().select(rnd, b.ordered(), 10, b, fc(b))
        assert pa == pb and len(pa) == len(set(pa)) == 10
        assert set(pa) <= set(a.ordered())
        for nid in pa:  # same history on both sides
            a.observe_train(nid, rnd, 1.0)
            b.observe_train(nid, rnd, 1.0)


def test_forecast_before_and_after_participation():
    st = fleet()
    phone, pi = 1000, 1001  # phone on LTE, rpi4 on Wi-Fi
    # with a start-up per call (the default) the Pi pays 15.4 s of ClientApp start-up on one of
    # its 4 cores (2.29 + 4.53 / 4 = 3.4225 W); the phone's client runs inside its app: none
    assert st.forecast(pi, "none", 9_640).compute_j > 3.4225 * 15.4
    assert st.forecast(phone, "none", 9_640).compute_j < 1.0
    st.startup = "off"  # without it, LTE's radio tail makes the phone the dearer node
    assert st.forecast(phone, "none", 9_640).total_j > 3 * st.forecast(pi, "none", 9_640).total_j
    before = st.forecast(pi, "none", 9_640)
    st[pi].observed_compute_j, st[pi].observed_compute_s = 123.0, 4.0
    st[pi].observed_upload_bytes["none"] = 500
    after = st.forecast(pi, "none", 9_640)
    assert after.compute_j == 123.0 and after.upload_j < before.upload_j


def test_greedy_picks_the_cheapest():
    st = fleet()
    chosen = EnergyGreedySelector().select(1, st.ordered(), 10, st, fc(st))
    costs = sorted(fc(st)(n).total_j for n in st.ordered())
    assert sorted(fc(st)(n).total_j for n in chosen) == costs[:10]


def test_utility_selector_never_starves_a_node():
    st = fleet(n=40)
    sel = UtilityPerJouleSelector(seed=1, exploration=0.2, max_staleness=8)
    last_seen = {n: 0 for n in st.ordered()}
    for rnd in range(1, 61):
        chosen = sel.select(rnd, st.ordered(), 8, st, fc(st))
        for nid in chosen:
            st.observe_train(nid, rnd, 1.0 + 0.01 * (nid % 7))
            last_seen[nid] = rnd
        if rnd >= 20:  # after warm-up every node has trained within the staleness bound + slack
            gaps = [rnd - last_seen[n] for n in st.ordered()]
            assert max(gaps) <= 8 + 40 // 8 + 1, (rnd, max(gaps))
    assert all(st[n].participations > 0 for n in st.ordered())


def test_stale_nodes_that_never_answer_cannot_starve_the_run():
    """Two slots a round and a quarter of the fleet dead (sent train calls, never a usable
    update): the run's health rule stops after three rounds in a row without one; stale dead
    nodes sit a round out after a failed call and take at most one slot of two."""
    st = fleet(n=40)
    sel = UtilityPerJouleSelector(seed=1, exploration=0.0, max_staleness=4)
    dead = set(st.ordered()[1::4])  # not the cheapest devices: utility alone would not pick them
    for nid in st.ordered():  # every node trained once; since then the dead fail every call
        st.observe_train(nid, 1, 1.0)
    picks: dict[int, list[int]] = {n: [] for n in dead}
    empty_streak = longest = 0
    for rnd in range(2, 61):
        chosen = sel.select(rnd, st.ordered(), 2, st, fc(st))
        alive = [n for n in chosen if n not in dead]
        for nid in alive:
            st.observe_train(nid, rnd, 1.0 + 0.01 * (nid % 7))
        for nid in set(chosen) & dead:
            picks[nid].append(rnd)
        st.observe_tried(chosen, rnd)
        empty_streak = 0 if alive else empty_streak + 1
        longest = max(longest, empty_streak)
    assert longest < 3
    tried = [rounds for rounds in picks.values() if len(rounds) > 1]
    assert tried  # the staleness bound keeps reaching them ...
    for rounds in tried:  # ... but never in two rounds in a row
        assert min(b - a for a, b in zip(rounds, rounds[1:], strict=False)) >= 2, rounds
    nid = next(n for n in dead if picks[n])
    assert st[nid].last_tried == picks[nid][-1] and st[nid].last_round == 1


def test_utility_prefers_cheap_nodes_once_explored():
    st = fleet(n=40)
    st.startup = "off"  # the network costs alone: LTE nodes are the dear ones
    sel = UtilityPerJouleSelector(seed=0, exploration=0.0, max_staleness=1000)
    for nid in st.ordered():
        st.observe_train(nid, 1, 1.0)
    chosen = sel.select(2, st.ordered(), 10, st, fc(st))
    assert not [n for n in chosen if st[n].link.id == "lte"]


@pytest.mark.parametrize("make", ALL)
def test_budget_is_never_exceeded(make):
    st = fleet()
    for budget in (1.0, 5.0, 20.0, 60.0):
        chosen = BudgetSelector(make(), budget).select(1, st.ordered(), 10, st, fc(st))
        assert sum(fc(st)(n).total_j for n in chosen) <= budget + 1e-9
        assert len(chosen) <= 10
    rich = BudgetSelector(make(), 1e9).select(1, st.ordered(), 10, st, fc(st))
    assert len(rich) == 10


@pytest.mark.parametrize("make", ALL)
def test_battery_floor_is_never_violated(make):
    st = fleet(battery_initial=0.0012)  # phones: 18 Wh x 0.12 % ~ 79 J; mains nodes unaffected
    sel = BatteryAwareSelector(make(), floor=0.001)
    for rnd in range(1, 30):
        chosen = sel.select(rnd, st.ordered(), 20, st, fc(st))
        for nid in chosen:
            s = st[nid]
            if s.capacity_j is not None:
                s.battery_j -= fc(st)(nid).device_j  # drain by what the call costs the device
                assert s.battery_j >= 0.001 * s.capacity_j - 1e-9
    phones = [n for n in st.ordered() if st[n].capacity_j is not None]
    assert phones and all(st[n].battery_j >= 0.001 * st[n].capacity_j - 1e-9 for n in phones)


def test_availability_is_seeded_and_roughly_right():
    st = fleet(n=200, availability=0.5)
    a, b = st.online(3), st.online(3)
    assert a == b and a != st.online(4)
    assert 70 < len(a) < 130


def test_batteries_drain_and_recharge():
    st = fleet(battery_initial=0.5, recharge_per_round=0.1)
    phone = st[1000]
    full = phone.capacity_j
    assert phone.battery_j == pytest.approx(0.5 * full)
    st.recharge()
    assert phone.battery_j == pytest.approx(0.6 * full)
    for _ in range(10):
        st.recharge()
    assert phone.battery_j == pytest.approx(full)


def test_policies():
    st = fleet()
    phone, eth = st[1000], st[1002]
    assert FixedPolicy(parse_codec("int8")).codec_for(phone, 1).label() == "int8"
    per_link = PerLinkPolicy()
    assert per_link.codec_for(phone, 1).name == "topk"
    assert per_link.codec_for(eth, 1).label() == DEFAULT_PER_LINK["ethernet"]  # int8 now
    acc = AccuracyAwarePolicy(per_link, relaxed=parse_codec("none"), patience=2, min_gain=0.01)
    for a in (0.2, 0.4, 0.6):
        acc.observe(0, a)
    assert acc.codec_for(phone, 4).name == "topk"
    acc.observe(0, 0.601)
    acc.observe(0, 0.603)  # stalled for 2 rounds -> relax
    assert acc.codec_for(phone, 6).label() == "none"
    acc.observe(0, 0.7)
    assert acc.codec_for(phone, 7).name == "topk"
