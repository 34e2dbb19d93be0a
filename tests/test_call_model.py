"""The one call-energy model (fedenergy.physics.call), checked against figures worked out by hand
from the constants of data/devices.toml and data/links.toml, and against its users: the energy
mod's report, the coordinator's forecasts (one node, many nodes) and the failed-call rows.

The hand figures are written out as numbers. Constants used (devices.toml, links.toml; all
cores, so the busy power is the active power; the compute model itself is tests/test_compute_model):
  phone:  7.3e10 FLOP/s, 4.0 W, idle 0.5 W, no start-up
  laptop: 1.86e11 FLOP/s, 35.0 W, idle 5.0 W
  rpi4:   1.05e10 FLOP/s, 6.82 W, idle 2.29 W, 4 cores, 3.84e-4 s/step, start-up 15.4 s on 1 core
  lte:    13 / 6 Mbit/s, alpha_down 51.97, alpha_up 438.39 mW per Mbit/s, beta 1288.04 mW,
          tail 1060.0 mW for 11.576 s
  wifi:   20 / 10 Mbit/s, alpha_down 137.01, alpha_up 283.17, beta 132.86, tail 119.3 mW, 0.238 s
  ethernet: 940 / 940 Mbit/s, alpha 0.2 both ways, beta 700.0, no tail
"""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedenergy.client.mod import build_report
from fedenergy.physics.call import call_energy, call_energy_many, modeled_call
from fedenergy.physics.compute import ComputeTerms, call_compute_many
from fedenergy.physics.devices import device_catalog, get_device
from fedenergy.physics.network import get_link, link_catalog, link_table
from fedenergy.server.failed import failed_call_rows
from fedenergy.server.fleet_state import FleetState
from fedenergy.server.node import NodeInfo

REL = 1e-12
# LTE: download power (51.97 * 13 + 1288.04) mW = 1.96365 W, upload (438.39 * 6 + 1288.04) mW
# = 3.91838 W; 1,300,000 B down = 10.4 Mbit / 13 Mbit/s = 0.8 s; 600,000 B up = 4.8 / 6 = 0.8 s
LTE_DOWN_J = 1.96365 * 0.8  # 1.57092 J of transfer
LTE_UP_J = 3.91838 * 0.8  # 3.134704 J of transfer
LTE_TAIL_J = 1.060 * 11.576  # 12.27056 J, a full tail
GB_J = 0.059 * 3.6e6  # 212,400 J per GB at 0.059 kWh/GB
# promotion from idle before a call's first transfer (a call with no clock stands alone):
# LTE 1210.7 mW for 260.1 ms, Wi-Fi 124.4 mW for 79.1 ms
LTE_PROMO_J = 1.2107 * 0.2601  # 0.31490307 J
WIFI_PROMO_J = 0.1244 * 0.0791  # 0.00984004 J


def _approx(x):
    return pytest.approx(x, rel=REL, abs=1e-12)


def test_phone_on_lte_with_a_compute_gap_shorter_than_the_tail():
    e = modeled_call(get_device("phone"), get_link("lte"), 1.46e11, 1_300_000, 600_000, 0.059)
    assert e.compute_s == _approx(2.0)  # 1.46e11 FLOPs / 7.3e10 FLOP/s
    assert e.compute_j == _approx(8.0)  # 2 s x 4 W
    # whole-device boundary (the default): the 0.5 W idle base over the 1.6 s of transfers
    assert e.wait_j == _approx(0.8) and e.startup_j == 0.0
    assert e.download_s == _approx(0.8) and e.upload_s == _approx(0.8)
    # a promotion, the download; the upload is charged the tail that leads up to it (cut 2 s
    # after the download), its transfer and, the call standing alone, its full tail
    assert e.download_radio_j == _approx(0.31490307 + 1.57092)  # 1.88582307 J
    assert e.upload_radio_j == _approx(1.060 * 2.0 + 3.134704 + 12.27056)  # 17.525264 J
    assert e.download_infra_j == _approx(0.0013 * 212_400)  # 276.12 J
    assert e.upload_infra_j == _approx(0.0006 * 212_400)  # 127.44 J
    assert e.download_j == _approx(1.88582307 + 276.12)
    assert e.upload_j == _approx(17.525264 + 127.44)
    # compute, waiting and radio (no infrastructure on the device)
    assert e.device_j == _approx(8.0 + 0.8 + 1.88582307 + 17.525264)
    assert e.network_j == _approx(1.88582307 + 276.12 + 17.525264 + 127.44)
    assert e.total_j == _approx(430.97108707 + 0.8)


def test_a_gap_longer_than_the_tail_gets_the_full_tail_and_a_negative_one_none():
    long = modeled_call(get_device("phone"), get_link("lte"), 2.19e12, 1_300_000, 600_000, 0.059)
    assert long.compute_s == _approx(30.0) and long.compute_j == _approx(120.0)
    # the download's full tail, then a second promotion before the upload
    assert long.upload_radio_j == _approx(12.27056 + 0.31490307 + 3.134704 + 12.27056)
    neg = call_energy(get_link("lte"), 1_300_000, 600_000, 0.059, compute_s=-1.0)
    assert neg.upload_radio_j == _approx(3.134704 + 12.27056)


def test_laptop_on_wifi_at_another_infrastructure_intensity():
    # 1.86e10 FLOPs / 1.86e11 FLOP/s = 0.1 s x 35 W = 3.5 J; 2,500,000 B down = 20 Mbit / 20 =
    # 1 s, 1,250,000 B up = 10 Mbit / 10 = 1 s; download power (137.01 * 20 + 132.86) mW =
    # 2.87306 W, upload (283.17 * 10 + 132.86) mW = 2.96456 W; tail 0.1193 W, cut to the 0.1 s
    # gap (the start-up off: with it, the 4.25 s start-up outlasts the tail)
    laptop, wifi = get_device("laptop"), get_link("wifi")
    e = modeled_call(laptop, wifi, 1.86e10, 2_500_000, 1_250_000, 0.1, startup="off")
    assert e.compute_s == _approx(0.1) and e.compute_j == _approx(3.5)
    assert e.download_radio_j == _approx(0.00984004 + 2.87306)
    assert e.upload_radio_j == _approx(0.1193 * 0.1 + 2.96456 + 0.1193 * 0.238)
    assert e.download_infra_j == _approx(0.0025 * 0.1 * 3.6e6)  # 900 J
    assert e.upload_infra_j == _approx(0.00125 * 0.1 * 3.6e6)  # 450 J
    assert e.wait_j == _approx(5.0 * 2.0)  # 5 W idle over the 2 s of transfers
    # a 1 s gap outlasts Wi-Fi's 0.238 s tail
    longer = modeled_call(laptop, wifi, 1.86e11, 2_500_000, 1, 0.1, startup="off")
    assert longer.compute_j == _approx(35.0)
    # the download's full tail, a promotion, 1 byte up (8 bit / 10 Mbit/s = 0.8 us), its tail
    assert longer.upload_radio_j == _approx(0.0283934 + 0.00984004 + 2.96456 * 8e-7 + 0.0283934)


def test_rpi4_on_ethernet_has_no_tail():
    # 1.05e10 FLOPs / 1.05e10 FLOP/s = 1 s x 6.82 W; 117,500,000 B = 940 Mbit / 940 Mbit/s = 1 s
    # at (0.2 * 940 + 700) mW = 0.888 W, both ways
    e = modeled_call(get_device("rpi4"), get_link("ethernet"), 1.05e10, 117_500_000, 117_500_000)
    assert e.compute_j == _approx(6.82)
    # the start-up: 15.4 s on 1 of 4 cores at 2.29 + 4.53 / 4 = 3.4225 W; 2.29 W over the 2 s
    assert e.startup_j == _approx(3.4225 * 15.4) and e.wait_j == _approx(2.29 * 2.0)
    assert e.download_radio_j == _approx(0.888) and e.upload_radio_j == _approx(0.888)
    assert e.download_s == _approx(1.0) and e.upload_s == _approx(1.0)
    # the default intensity, 0.059 kWh/GB: 0.1175 GB x 212,400 J/GB
    assert e.download_infra_j == _approx(0.1175 * GB_J) == e.upload_infra_j


def test_nothing_one_way_costs_nothing_that_way():
    lte = get_link("lte")
    # no upload after the download (standing alone): a promotion, the download, its full tail
    e = call_energy(lte, 1_300_000, 0, 0.059, compute_j=8.0, compute_s=2.0)
    assert e.download_radio_j == _approx(0.31490307 + 1.57092 + 12.27056)
    assert e.upload_radio_j == 0.0 and e.upload_infra_j == 0.0 and e.upload_s == 0.0
    assert e.total_j == _approx(8.0 + 14.15638307 + 276.12)
    # only an upload (the centralized baseline): promotion, transfer and tail, no download
    e = call_energy(lte, 0, 600_000, 0.059)
    assert e.download_radio_j == 0.0 and e.download_infra_j == 0.0 and e.download_s == 0.0
    assert e.upload_radio_j == _approx(0.31490307 + 15.405264) and e.upload_s == _approx(0.8)
    assert call_energy(lte, 0, 0, 0.059).total_j == 0.0


def test_zero_flops_cost_no_compute_and_leave_no_gap():
    # the phone has no per-call start-up (its client runs inside the app)
    e = modeled_call(get_device("phone"), get_link("lte"), 0, 1_300_000, 600_000, 0.059)
    assert e.compute_j == 0.0 and e.compute_s == 0.0
    assert e.download_radio_j == _approx(0.31490307 + 1.57092)
    assert e.upload_radio_j == _approx(15.405264)  # the upload follows at once: no tail between


def _random_calls(rng, n):
    links = list(link_catalog().values())
    devices = list(device_catalog().values())
    li = rng.integers(0, len(links), n)
    di = rng.integers(0, len(devices), n)
    flops = rng.choice([0.0, 1e6, 3.7e9, 2.5e11, 9e12], n) * rng.uniform(0.5, 2.0, n)
    down = rng.choice([0, 1, 1500, 60_000, 1_300_000, 90_000_000], n)
    up = rng.choice([0, 1, 2_500, 600_000, 40_000_000], n)
    return links, devices, li, di, flops, down, up


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_vectorised_model_equals_the_scalar_one_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    n = 400
    links, devices, li, di, flops, down, up = _random_calls(rng, n)
    kwh = float(rng.uniform(0.0, 0.2))
    steps = rng.choice([0, 1, 15, 3000], n)
    threads = rng.choice([0, 1, 4], n)
    boundary = ("device", "marginal")[seed % 2]
    dev_terms = ComputeTerms(*(np.array([devices[i].terms[k] for i in di]) for k in range(7)))
    c = call_compute_many(dev_terms, flops, steps, threads, boundary, "per-call")
    table = link_table(links)
    terms = table.take(li)
    extra = dict(wait_w=c.wait_w, startup_j=c.startup_j, startup_s=c.startup_s)
    many = call_energy_many(table, li, down, up, kwh, c.compute_j, c.compute_s, **extra)
    fields = (
        "compute_j",
        "compute_s",
        "download_radio_j",
        "upload_radio_j",
        "download_infra_j",
        "upload_infra_j",
        "download_s",
        "upload_s",
        "wait_j",
        "startup_j",
        "startup_s",
        "download_j",
        "upload_j",
        "network_j",
        "local_j",
        "device_j",
        "total_j",
    )
    for i in range(n):
        one = modeled_call(
            devices[di[i]],
            links[li[i]],
            float(flops[i]),
            int(down[i]),
            int(up[i]),
            kwh,
            steps=int(steps[i]),
            threads=int(threads[i]),
            boundary=boundary,
        )
        for f in fields:
            assert np.asarray(getattr(many, f))[i] == getattr(one, f), (f, i)  # bit for bit
    # one download size for all nodes (as a round's forecasts have it), a scalar condition
    shared = call_energy_many(terms, None, 60_000, up, kwh, c.compute_j, c.compute_s, **extra)
    for i in range(0, n, 7):
        one = call_energy(
            links[li[i]],
            60_000,
            int(up[i]),
            kwh,
            c.compute_j[i],
            c.compute_s[i],
            wait_w=c.wait_w[i],
            startup_j=c.startup_j[i],
            startup_s=c.startup_s[i],
        )
        assert shared.download_j[i] == one.download_j and shared.device_j[i] == one.device_j


def test_a_link_table_holds_the_scalar_constants():
    links = list(link_catalog().values())
    table = link_table(links)
    for i, link in enumerate(links):
        assert tuple(col[i] for col in table) == tuple(link.terms)
    lte = get_link("lte").terms
    assert lte.down_bps == 13e6 and lte.up_bps == 6e6 and lte.tail_s == 11.576
    assert lte.down_w == _approx(1.96365) and lte.up_w == _approx(3.91838)
    assert lte.tail_w == _approx(1.060)


# (device, FLOPs, busy W on 1 thread, idle W, start-up s, per-core FLOP/s, s per step, gap > tail)
# rpi4: 2.29 + 4.53 / 4 = 3.4225 W, 1.05e10 / 4 FLOP/s; phone: 0.5 + 3.5 / 8 = 0.9375 W, 7.3e10 / 8
CASES = [
    # a Pi's 15.4 s start-up alone outlasts LTE's 11.576 s tail
    ("rpi4", 2.625e8, 3.4225, 2.29, 15.4, 2.625e9, 3.84e-4, True),  # gap 15.50576 s
    ("rpi4", 2.625e9, 3.4225, 2.29, 15.4, 2.625e9, 3.84e-4, True),  # gap 16.40576 s
    ("phone", 9.125e9, 0.9375, 0.5, 0.0, 9.125e9, 1.06e-4, False),  # gap 1.00159 s
    ("phone", 1.825e11, 0.9375, 0.5, 0.0, 9.125e9, 1.06e-4, True),  # gap 20.00159 s
]


@pytest.mark.parametrize("device, flops, busy_w, idle_w, start_s, rate, step_s, outlasts", CASES)
def test_report_forecast_and_failed_estimate_agree_on_the_same_call(
    device, flops, busy_w, idle_w, start_s, rate, step_s, outlasts
):
    """One train call (74 examples, batch 32, 5 epochs = 15 steps, 1 thread) on LTE: the energy
    mod's report, the coordinator's forecast (per node and vectorised) and the failed-call
    estimate, each on the parts it covers."""
    link, down, up, kwh = "lte", 1_300_000, 600_000, 0.059
    examples = 74
    report = build_report(
        "train", 1, 0, device, link, int(flops), down, up, kwh, steps=15, batch=32, threads=1
    )
    fleet = FleetState([NodeInfo(7, 0, device, link, num_examples=examples)], 0, kwh)
    fleet.flops_per_example = flops / examples
    fleet.batch_size, fleet.local_epochs, fleet.threads = 32, 5, 1
    fleet.default_upload_overhead = 1_000
    forecast = fleet.forecast(7, "none", up - 1_000, download_bytes=down)
    many = fleet.forecast_many(np.array([0]), "none", up - 1_000, download_bytes=down)

    def part(phase, domain=None):
        return sum(
            c.joules
            for c in report.components
            if c.phase == phase and (domain is None or c.domain == domain)
        )

    # the report and the forecast: compute (busy, waiting, start-up), download and upload
    local = report.phase_j("train") + report.phase_j("startup")
    assert forecast.compute_j == local
    assert forecast.download_j == part("download") and forecast.upload_j == part("upload")
    assert forecast.device_j == local + part("download", "radio") + part("upload", "radio")
    assert [float(col[0]) for col in many] == [
        forecast.compute_j,
        forecast.download_j,
        forecast.upload_j,
        forecast.device_j,
    ]
    # by hand: busy at the 1-thread power, the idle base over the 1.6 s of transfers, the
    # start-up on one core
    busy_s = flops / rate + 15 * step_s
    assert part("train", "compute") == _approx(busy_w * busy_s)
    assert part("train", "idle") == _approx(idle_w * 1.6)
    assert part("startup") == _approx(busy_w * start_s)
    gap = busy_s + start_s
    assert (gap > 11.576) == outlasts
    # the radio (the call stands alone here: a promotion first, its own full tail at the end);
    # before the upload the tail after the download, cut by the upload where the gap is short
    assert part("download", "radio") == _approx(LTE_PROMO_J + LTE_DOWN_J)
    before_up = LTE_TAIL_J + LTE_PROMO_J if outlasts else 1.060 * gap
    assert part("upload", "radio") == _approx(before_up + LTE_UP_J + LTE_TAIL_J)

    # the failed-call estimate: the download it was sent and the forecast compute
    rows = failed_call_rows(fleet[7], "train", "timeout", down, forecast, kwh)
    by_phase = {r.phase: r for r in rows}
    assert set(by_phase) == {"download", "train"}
    assert by_phase["train"].joules == forecast.compute_j == local
    failed_dl = by_phase["download"]
    # nothing was uploaded after it, so its full tail is its own: the report's download + a tail
    assert failed_dl.joules == _approx(LTE_PROMO_J + LTE_DOWN_J + LTE_TAIL_J + 0.0013 * GB_J)
    assert failed_dl.joules == _approx(part("download") + LTE_TAIL_J)
    assert failed_dl.bytes == down and failed_dl.seconds == _approx(0.8)


def test_the_model_is_pure_no_flower_no_torch():
    code = (
        "import sys, fedenergy.physics.call; "
        "print(sorted(m for m in ('flwr', 'torch') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]  # this tree's fedenergy, first on the path
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "[]"


def test_report_forecast_and_failed_estimate_agree_over_a_node_s_call_sequence():
    """Two train calls of a phone on LTE on the run's virtual clock (server/radio_clock.py):
    the energy mod's report, the forecast (per node and vectorised) and the failed-call
    estimate, each given the same idle time, give the same floats; summed over the node's
    calls and its run-end tail they are the radio state machine's energy, by hand."""
    from fedenergy.server.radio_clock import RunClock

    kwh, down, up = 0.059, 1_300_000, 600_000
    fleet = FleetState(
        [NodeInfo(7, 0, "phone", "lte", num_examples=100), NodeInfo(8, 1, "phone", "lte", 500)],
        0,
        kwh,
    )
    fleet.flops_per_example = 1.46e9  # node 7: 1.46e11 FLOPs = 2 s at 7.3e10; node 8: 10 s
    fleet.default_upload_overhead = 1_000
    clock = RunClock("virtual")
    lte = get_link("lte")

    def one_call(nid, flops):
        fleet.clock_s = clock.now()
        forecast = fleet.forecast(nid, "none", up - 1_000, download_bytes=down)
        many = fleet.forecast_many(fleet.rows([nid]), "none", up - 1_000, download_bytes=down)
        idle = clock.sent(fleet, nid, "train")
        report = build_report("train", 1, 0, "phone", "lte", flops, down, up, kwh, idle_s=idle)
        failed = failed_call_rows(fleet[nid], "train", "timeout", down, forecast, kwh, idle_s=idle)
        return forecast, many, report, {r.phase: r for r in failed}, idle

    def part(report, phase, domain=None):
        return sum(
            c.joules
            for c in report.components
            if c.phase == phase and (domain is None or c.domain == domain)
        )

    radio_sum = 0.0
    for k, want_idle in enumerate([math.inf, 8.0]):
        forecast, many, report, failed, idle = one_call(7, int(1.46e11))
        assert idle == _approx(want_idle)
        assert forecast.download_j == part(report, "download") == failed["download"].joules
        assert forecast.upload_j == part(report, "upload")
        assert forecast.compute_j == part(report, "train") == failed["train"].joules
        assert [float(col[0]) for col in many] == [
            forecast.compute_j,
            forecast.download_j,
            forecast.upload_j,
            forecast.device_j,
        ]
        # by hand: a promotion on the first call; on the second, 8 s of the first's tail
        lead = LTE_PROMO_J if k == 0 else 1.060 * 8.0
        assert part(report, "download", "radio") == _approx(lead + LTE_DOWN_J)
        assert part(report, "upload", "radio") == _approx(1.060 * 2.0 + LTE_UP_J)  # no tail
        radio_sum += part(report, "download", "radio") + part(report, "upload", "radio")
        clock.transferred(fleet, 7, "train", lte, down, up, report.compute_s)
        if k == 0:  # node 8 computes 10 s in the same phase: the next starts when it is done
            *_, report8, _, _ = one_call(8, int(7.3e11))
            clock.transferred(fleet, 8, "train", lte, down, up, report8.compute_s)
        clock.end_phase("train")
        # node 8 ends at 0.2601 + 0.8 + 10 + 0.8 s, node 7 at 0.2601 + 0.8 + 2 + 0.8 s: 8 s
        # apart (10 s is within LTE's 11.576 s tail: node 8's upload needs no promotion)
        assert clock.now() == _approx(11.8601 if k == 0 else 11.8601 + 3.6)
    closing = {r.node_id: r.joules for r in clock.closing_rows(fleet)}
    assert closing == {"7": _approx(LTE_TAIL_J), "8": _approx(LTE_TAIL_J)}
    # the node's radio over the run, by hand: one promotion, two transfers each way, two 2 s
    # compute gaps, 8 s of cut tail and the last full tail
    by_hand = LTE_PROMO_J + 2 * (LTE_DOWN_J + 2.12 + LTE_UP_J) + 8.48 + LTE_TAIL_J
    assert radio_sum + closing["7"] == _approx(by_hand)
