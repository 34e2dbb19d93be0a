"""The radio as a state machine per node (fedenergy.physics.radio, through the call model),
checked against figures worked out by hand from data/links.toml.

Constants used:
  lte:  13 / 6 Mbit/s; download power (51.97 x 13 + 1288.04) mW = 1.96365 W, upload
        (438.39 x 6 + 1288.04) mW = 3.91838 W; tail 1060.0 mW for 11.576 s (12.27056 J);
        promotion 1210.7 mW for 260.1 ms (0.31490307 J)
  wifi: 20 / 10 Mbit/s; tail 119.3 mW for 0.238 s; promotion 124.4 mW for 79.1 ms
  keep-alive (flower): polls every 3 s and heartbeats every 20 s -> one exchange every
        1 / (1/3 + 1/20) = 60/23 s; 300 B each way
A call below: 1,300,000 B down (10.4 Mbit / 13 = 0.8 s: 1.57092 J), 2 s of compute, 600,000 B
up (4.8 Mbit / 6 = 0.8 s: 3.134704 J).
"""

import math

import numpy as np
import pytest

from fedenergy.physics import radio
from fedenergy.physics.call import call_energy, call_energy_many
from fedenergy.physics.network import get_link, link_table

DOWN, UP, GAP = 1_300_000, 600_000, 2.0
LTE_DOWN_J, LTE_UP_J = 1.96365 * 0.8, 3.91838 * 0.8
TAIL_J = 1.060 * 11.576  # 12.27056
PROMO_J = 1.2107 * 0.2601  # 0.31490307
KEEP_S = 60 / 23
# one keep-alive exchange on LTE: 2400 bit up at 6 Mbit/s, 2400 bit down at 13 Mbit/s
LTE_EXCHANGE_J = 3.91838 * 2400 / 6e6 + 1.96365 * 2400 / 13e6  # 0.0019298723 J


def _approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-12)


def _lte_call(idle_s, keepalive=None):
    return call_energy(get_link("lte"), DOWN, UP, 0.0, 0.0, GAP, idle_s=idle_s, keepalive=keepalive)


def test_a_call_that_stands_alone_pays_a_promotion_and_its_full_tail():
    e = _lte_call(None)
    assert e.download_radio_j == _approx(0.31490307 + 1.57092)  # promotion, then the download
    # the tail after the download, cut by the upload 2 s later; the upload; its full tail
    assert e.upload_radio_j == _approx(1.060 * 2.0 + 3.134704 + 12.27056)
    assert e.radio_end_s == _approx(0.2601 + 0.8 + 2.0 + 0.8)  # the promotion delays it all


def test_first_call_of_a_run_promotes_and_leaves_its_tail_to_what_follows():
    e = _lte_call(math.inf)
    assert e.download_radio_j == _approx(0.31490307 + 1.57092)
    assert e.upload_radio_j == _approx(1.060 * 2.0 + 3.134704)  # no tail yet
    assert radio.closing_j(radio.SCALAR, get_link("lte").terms, 0.0) == _approx(12.27056)


def test_two_calls_within_the_tail_cut_it_and_need_no_second_promotion():
    first, second = _lte_call(math.inf), _lte_call(5.0)
    # the second call's download starts 5 s after the first's upload ended: 5 s of tail
    assert second.download_radio_j == _approx(1.060 * 5.0 + 1.57092)  # 6.87092 J
    assert second.upload_radio_j == _approx(1.060 * 2.0 + 3.134704)
    assert second.radio_end_s == _approx(0.8 + 2.0 + 0.8)  # no promotion delay
    closing = radio.closing_j(radio.SCALAR, get_link("lte").terms, 0.0)
    total = first.download_radio_j + first.upload_radio_j + second.download_radio_j
    total += second.upload_radio_j + closing
    # the state machine by hand: one promotion, two transfers each way, two 2 s gaps, the
    # 5 s cut tail and one full tail at the end
    by_hand = 0.31490307 + 2 * (1.57092 + 2.12 + 3.134704) + 5.3 + 12.27056
    assert total == _approx(by_hand)  # 31.3894861 J


def test_two_calls_beyond_the_tail_promote_twice():
    second = _lte_call(20.0)
    # the first call's full tail (11.576 s, then idle), a promotion, the download
    assert second.download_radio_j == _approx(12.27056 + 0.31490307 + 1.57092)
    assert second.radio_end_s == _approx(0.2601 + 3.6)


def test_a_compute_gap_beyond_the_tail_promotes_the_upload():
    e = call_energy(get_link("wifi"), 2_500_000, 1_250_000, 0.0, 0.0, 1.0, idle_s=math.inf)
    # 2.5 MB at 20 Mbit/s = 1 s at 2.87306 W; 1.25 MB at 10 Mbit/s = 1 s at 2.96456 W; the
    # 1 s gap outlasts Wi-Fi's 0.238 s tail: a full tail, then a promotion before the upload
    assert e.download_radio_j == _approx(0.1244 * 0.0791 + 2.87306)
    assert e.upload_radio_j == _approx(0.1193 * 0.238 + 0.1244 * 0.0791 + 2.96456)
    assert e.radio_end_s == _approx(0.0791 + 1.0 + 1.0 + 0.0791 + 1.0)


def test_keepalive_on_lte_keeps_the_radio_connected_between_calls():
    keep = radio.keepalive_from_table()
    assert keep.interval_s == _approx(KEEP_S)
    assert (keep.bytes_up, keep.bytes_down) == (300, 300)
    e = _lte_call(20.0, keep)
    # 20 s gap: exchanges at 60/23 s intervals, 7 inside (7 x 2.6087 = 18.26 s); each restarts
    # the 11.576 s tail, so the radio is in its tail for all 20 s and never promotes
    assert e.download_radio_j == _approx(1.060 * 20.0 + 7 * LTE_EXCHANGE_J + 1.57092)
    assert e.radio_end_s == _approx(3.6)
    # the end of a run 10 s after the last transfer: 3 exchanges, then the full tail
    closing = radio.closing_j(radio.SCALAR, get_link("lte").terms, 10.0, keep)
    assert closing == _approx(3 * (1.060 * KEEP_S + LTE_EXCHANGE_J) + 12.27056)


def test_keepalive_on_wifi_promotes_for_every_exchange():
    keep = radio.keepalive_from_table()
    e = call_energy(get_link("wifi"), 2_500_000, 0, 0.0, 0.0, 0.0, idle_s=10.0, keepalive=keep)
    # 10 s: 3 exchanges (3 x 2.6087 = 7.83 s); Wi-Fi's 0.238 s tail runs out before each, so
    # each period is a full tail + a promotion + the exchange (2400 bit at 10 and 20 Mbit/s,
    # at 2.96456 and 2.87306 W); the last 2.17 s: a full tail and the download's promotion
    exchange = 2.96456 * 2400 / 10e6 + 2.87306 * 2400 / 20e6
    period = 0.1193 * 0.238 + 0.1244 * 0.0791
    assert e.download_radio_j == _approx(3 * (period + exchange) + period + 2.87306)


def test_ethernet_has_no_promotion_and_no_tail():
    e = call_energy(get_link("ethernet"), 1_175_000, 1_175_000, 0.0, 0.0, 1.0, idle_s=30.0)
    # 9.4 Mbit at 940 Mbit/s = 0.01 s at (0.2 x 940 + 700) mW = 0.888 W
    assert e.download_radio_j == _approx(0.888 * 0.01)
    assert e.upload_radio_j == _approx(0.888 * 0.01)


def test_a_node_that_never_transferred_closes_with_nothing():
    lte = get_link("lte").terms
    assert radio.closing_j(radio.SCALAR, lte, math.inf) == 0.0
    assert radio.closing_j(radio.SCALAR, lte, math.inf, radio.keepalive_from_table()) == 0.0


@pytest.mark.parametrize("keep", [None, radio.keepalive_from_table()], ids=["plain", "keepalive"])
def test_vectorised_equals_scalar_float_for_float(keep):
    names = ["lte", "wifi", "3g", "5g", "5g-mmwave", "ethernet"]
    links = [get_link(n) for n in names]
    table = link_table(links)
    rng = np.random.default_rng(7)
    n = 400
    index = rng.integers(0, len(links), n)
    down = rng.integers(0, 3_000_000, n)
    up = rng.integers(0, 1_000_000, n)
    gap = rng.uniform(-1.0, 30.0, n)
    idle = rng.uniform(0.0, 40.0, n)
    idle[::7] = np.inf
    many = call_energy_many(table, index, down, up, 0.059, 1.0, gap, idle_s=idle, keepalive=keep)
    closing = radio.closing_j(radio.ARRAYS, table.take(index), idle, keep)
    for i in range(n):
        one = call_energy(
            links[index[i]],
            int(down[i]),
            int(up[i]),
            0.059,
            1.0,
            float(gap[i]),
            idle_s=float(idle[i]),
            keepalive=keep,
        )
        for field in ("download_radio_j", "upload_radio_j", "radio_end_s", "download_s"):
            assert getattr(many, field)[i] == getattr(one, field), (i, field)
        lone = radio.closing_j(radio.SCALAR, links[index[i]].terms, float(idle[i]), keep)
        assert closing[i] == lone
    standalone = call_energy_many(table, index, down, up, 0.059, 1.0, gap)
    for i in range(0, n, 17):
        one = call_energy(links[index[i]], int(down[i]), int(up[i]), 0.059, 1.0, float(gap[i]))
        assert standalone.upload_radio_j[i] == one.upload_radio_j
        assert standalone.download_radio_j[i] == one.download_radio_j


def test_keepalive_rejects_a_period_that_is_not_positive():
    with pytest.raises(ValueError, match="interval"):
        radio.KeepAlive(0.0, 1, 1)


def test_keepalive_per_hour():
    """The figures docs/constants.md quotes: an hour between two transfers with keep-alive."""
    keep = radio.keepalive_from_table()
    lte, wifi = get_link("lte").terms, get_link("wifi").terms
    hour = 3599.9  # just under the 1380th exchange (1380 x 60/23 s = 3600 s)
    lte_j, _ = radio.gap(radio.SCALAR, lte, hour, keep)
    # 1379 exchanges, the radio in its tail throughout: 1.06 W x 3599.9 s + 1379 x 1.93 mJ
    assert lte_j == _approx(1.060 * hour + 1379 * LTE_EXCHANGE_J)
    assert lte_j == pytest.approx(3818.7, abs=1.2)  # "3.8 kJ per hour" (1380 exchanges: 3818.7)
    wifi_j, _ = radio.gap(radio.SCALAR, wifi, hour, keep)
    period = 0.1193 * 0.238 + 0.1244 * 0.0791 + 2.96456 * 2400 / 10e6 + 2.87306 * 2400 / 20e6
    # 1379 periods, then the rest (2.51 s) outlasts the tail: a full tail and a promotion
    assert wifi_j == _approx(1379 * period + 0.1193 * 0.238 + 0.1244 * 0.0791)
    assert 1380 * period == pytest.approx(54.2, abs=0.05)  # "54.2 J per hour"


def test_the_keepalive_setting_is_checked_and_off_by_default():
    from fedenergy.plan import message_config
    from fedenergy.protocol import CFG_KEEPALIVE
    from fedenergy.settings import Settings

    assert Settings().keepalive is False
    with pytest.raises(ValueError, match="keepalive must be true or false"):
        Settings(keepalive="yes").check()
    on = Settings(keepalive=True).check()
    assert message_config(on, on.resolve().uplink)[CFG_KEEPALIVE] is True
    assert Settings.from_run_config({"keepalive": True}).keepalive is True


def test_the_wall_clock_of_a_deployed_run_places_transfers_when_replies_arrive():
    from fedenergy.server.fleet_state import FleetState
    from fedenergy.server.node import NodeInfo
    from fedenergy.server.radio_clock import RunClock

    now = [100.0]
    fleet = FleetState([NodeInfo(7, 0, "phone", "lte", num_examples=10)], 0, 0.059)
    clock = RunClock("wall", wall=lambda: now[0])
    now[0] = 105.0
    assert clock.sent(fleet, 7, "train") == math.inf  # no transfer yet this run
    now[0] = 106.5  # the reply is taken 1.5 s later: the node's last transfer ended then
    clock.transferred(fleet, 7, "train", get_link("lte"), DOWN, UP, GAP)
    clock.end_phase("train")
    now[0] = 110.0
    assert clock.sent(fleet, 7, "evaluate") == _approx(3.5)
    assert clock.idle_sent(7, "evaluate") == _approx(3.5)
    assert RunClock("off").sent(fleet, 7, "train") is None  # no clock: calls stand alone
    with pytest.raises(ValueError, match="unknown radio clock"):
        RunClock("sundial")


def test_the_mod_reads_the_radio_from_the_per_message_config():
    from flwr.app import ConfigRecord

    from fedenergy.client.mod import radio_config
    from fedenergy.protocol import CFG_KEEPALIVE, CFG_RADIO_IDLE

    assert radio_config(ConfigRecord()) == (None, None)  # no clock: the call stands alone
    assert radio_config(ConfigRecord({CFG_RADIO_IDLE: -1.0})) == (math.inf, None)  # first
    idle, keep = radio_config(ConfigRecord({CFG_RADIO_IDLE: 4.5, CFG_KEEPALIVE: True}))
    assert idle == 4.5 and keep == radio.keepalive_from_table()
