"""The compute model (fedenergy.physics.compute) against figures worked out by hand from the
constants of data/devices.toml, and the steps a call's work carries, from the handler or the
torch counter through the report and its validation.

Constants used (devices.toml):
  rpi4:   1.05e10 FLOP/s all 4 cores, active 6.82 W, idle 2.29 W, 3.84e-4 s/step, start-up 15.4 s
  jetson-orin-nano: 1.28e11 FLOP/s, 15.0 W, 5.0 W, 1 core (GPU), 5.1e-4 s/step, start-up 17.6 s
                    on one of 6 CPU cores
  phone:  7.3e10 FLOP/s, 8 cores, 4.0 W, 0.5 W, 1.06e-4 s/step, no start-up
  wifi:   20 / 10 Mbit/s, alpha_down 137.01, alpha_up 283.17, beta 132.86, tail 119.3 mW, 0.238 s
"""

import numpy as np
import pytest
import torch

from fedenergy.client.mod import build_report
from fedenergy.client.torch_work import TorchCalls
from fedenergy.physics.call import modeled_call
from fedenergy.physics.compute import (
    ComputeTerms,
    Work,
    call_compute,
    call_compute_many,
    steps_for,
)
from fedenergy.physics.devices import device_catalog, get_device
from fedenergy.physics.flops import PassCache
from fedenergy.physics.network import get_link
from fedenergy.report import EnergyReport, ReportError, validate_report


def _approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-12)


RPI4 = get_device("rpi4").terms


def test_one_thread_gets_a_core_share_of_throughput_and_of_the_power_above_idle():
    # 2.625e9 FLOPs on 1 of 4 cores: 1.05e10 / 4 = 2.625e9 FLOP/s -> 1 s; 100 steps x 3.84e-4 s
    c = call_compute(RPI4, Work(2.625e9, 100, 32, 1), "device", "per-call")
    assert c.compute_s == _approx(1.0384)
    # whole device: 2.29 W idle + (6.82 - 2.29) W x 1/4 = 3.4225 W while busy
    assert c.compute_j == _approx(3.4225 * 1.0384)
    assert c.wait_w == 2.29  # idle power while the call waits on its network
    # start-up: 15.4 s with one core busy, at the same 3.4225 W
    assert c.startup_s == 15.4 and c.startup_j == _approx(3.4225 * 15.4)
    m = call_compute(RPI4, Work(2.625e9, 100, 32, 1), "marginal", "per-call")
    assert m.compute_s == c.compute_s
    assert m.compute_j == _approx(1.1325 * 1.0384)  # only the 1.1325 W above idle
    assert m.startup_j == _approx(1.1325 * 15.4) and m.wait_w == 0.0


def test_all_cores_and_more_threads_than_cores_use_the_whole_device():
    # 2.1e10 FLOPs / 1.05e10 FLOP/s = 2 s at the full 6.82 W; 8 threads on 4 cores: still 4
    for threads in (0, 4, 8):
        c = call_compute(RPI4, Work(2.1e10, 0, 0, threads), "device", "off")
        assert c.compute_s == _approx(2.0) and c.compute_j == _approx(13.64)
        assert c.startup_j == 0.0 and c.startup_s == 0.0
    # 2 threads: half the rate, 4 s, at 2.29 + 4.53 / 2 = 4.555 W
    two = call_compute(RPI4, Work(2.1e10, 0, 0, 2), "device", "off")
    assert two.compute_s == _approx(4.0) and two.compute_j == _approx(4.555 * 4.0)


def test_a_gpu_profile_is_not_scaled_by_cpu_threads():
    # jetson: 1 core (the GPU); 1.28e11 FLOPs = 1 s + 10 steps x 5.1e-4 s, at 15 W
    c = call_compute(get_device("jetson-orin-nano").terms, Work(1.28e11, 10, 32, 1))
    assert c.compute_s == _approx(1.0051) and c.compute_j == _approx(15.0 * 1.0051)
    # the start-up is CPU work: one of its 6 CPU cores, 5 W + 10 W / 6, for 17.6 s = 117.3 J
    assert c.startup_j == _approx((5.0 + 10.0 / 6) * 17.6)


def test_small_model_training_is_bound_by_the_step_term():
    # the default digits call: 74 examples, batch 32, 5 epochs = 15 steps, 3,813,740 FLOPs, on
    # one thread of a Pi 4: 3,813,740 / 2.625e9 = 1.4528533e-3 s of FLOPs, 15 x 3.84e-4 = 5.76e-3
    c = call_compute(RPI4, Work(3_813_740, steps_for(74, 32, 5), 32, 1), "device", "off")
    assert steps_for(74, 32, 5) == 15
    assert c.compute_s == _approx(3_813_740 / 2.625e9 + 15 * 3.84e-4)
    assert 15 * 3.84e-4 > 2 * (3_813_740 / 2.625e9)  # the step term dominates


def test_steps_for_counts_short_last_batches_and_unknowns():
    assert steps_for(64, 32, 1) == 2 and steps_for(65, 32, 1) == 3 and steps_for(1, 32, 3) == 3
    assert steps_for(74, 0, 5) == 0 and steps_for(74, 32, 0) == 0
    got = steps_for(np.array([1, 32, 33, 0]), 32, 2)
    assert got.tolist() == [2, 2, 4, 0]


def test_a_call_on_wifi_adds_the_idle_base_over_the_transfers_on_the_whole_device_boundary():
    # phone (no start-up), 1.46e11 FLOPs on all 8 cores = 2 s at 4.0 W; wifi: 2,500,000 B down
    # = 20 Mbit / 20 = 1 s, 1,250,000 B up = 1 s
    e = modeled_call(
        get_device("phone"), get_link("wifi"), 1.46e11, 2_500_000, 1_250_000, 0.0, steps=0
    )
    assert e.compute_s == _approx(2.0) and e.compute_j == _approx(8.0)
    assert e.wait_j == _approx(0.5 * 2.0)  # 0.5 W idle over the 2 s of transfers
    assert e.startup_j == 0.0
    # the radio, the call standing alone (physics/radio.py): a promotion (124.4 mW x 79.1 ms)
    # before the download; the 2 s gap outlasts the 0.238 s tail, so the upload pays that tail
    # and a second promotion first, and its own full tail after it
    promo, tail = 0.1244 * 0.0791, 0.1193 * 0.238
    down_radio = promo + (137.01 * 20 + 132.86) / 1000
    up_radio = tail + promo + (283.17 * 10 + 132.86) / 1000 + tail
    assert e.download_radio_j == _approx(down_radio) and e.upload_radio_j == _approx(up_radio)
    assert e.device_j == _approx(8.0 + 1.0 + down_radio + up_radio)
    m = modeled_call(
        get_device("phone"),
        get_link("wifi"),
        1.46e11,
        2_500_000,
        1_250_000,
        0.0,
        boundary="marginal",
    )
    # marginal: 3.5 W above idle over 2 s; nothing while waiting; the radio as its model gives it
    assert m.compute_j == _approx(7.0) and m.wait_j == 0.0
    assert m.download_radio_j == e.download_radio_j and m.upload_radio_j == e.upload_radio_j


def test_the_start_up_lengthens_the_gap_that_cuts_the_download_tail():
    # rpi4 on wifi, 0 FLOPs: the gap between download and upload is the 15.4 s start-up, so the
    # download's tail runs in full (0.238 s) and the upload promotes the radio again; with the
    # start-up off, the upload follows at once (no tail between, no second promotion)
    wifi = get_link("wifi")
    on = modeled_call(get_device("rpi4"), wifi, 0.0, 2_500_000, 1_250_000, 0.0)
    off = modeled_call(get_device("rpi4"), wifi, 0.0, 2_500_000, 1_250_000, 0.0, startup="off")
    promo, tail = 0.1244 * 0.0791, 0.1193 * 0.238
    up = (283.17 * 10 + 132.86) / 1000  # 1,250,000 B at 10 Mbit/s = 1 s
    assert on.upload_radio_j == _approx(tail + promo + up + tail)
    assert off.upload_radio_j == _approx(up + tail)
    assert (
        on.download_radio_j
        == off.download_radio_j
        == _approx(promo + (137.01 * 20 + 132.86) / 1000)
    )
    assert on.startup_j == _approx(3.4225 * 15.4) and off.startup_j == 0.0


@pytest.mark.parametrize("boundary", ["device", "marginal"])
@pytest.mark.parametrize("startup", ["per-call", "off"])
def test_the_vectorised_compute_equals_the_scalar_one_bit_for_bit(boundary, startup):
    rng = np.random.default_rng(3)
    devices = list(device_catalog().values())
    n = 300
    di = rng.integers(0, len(devices), n)
    flops = rng.choice([0.0, 3.8e6, 2.5e9, 7e12], n) * rng.uniform(0.5, 2.0, n)
    steps = rng.choice([0, 1, 15, 4000], n)
    threads = rng.choice([0, 1, 2, 8, 200], n)
    terms = ComputeTerms(*(np.array([d.terms[k] for d in devices])[di] for k in range(7)))
    many = call_compute_many(terms, flops, steps, threads, boundary, startup)
    for i in range(n):
        w = Work(float(flops[i]), int(steps[i]), 0, int(threads[i]))
        one = call_compute(devices[di[i]].terms, w, boundary, startup)
        for f in one._fields:
            assert np.asarray(getattr(many, f))[i] == getattr(one, f), (f, i)


def test_unknown_boundary_or_start_up_mode_is_refused():
    with pytest.raises(ValueError, match="boundary"):
        call_compute(RPI4, Work(1.0), "wall", "off")
    with pytest.raises(ValueError, match="start-up"):
        call_compute(RPI4, Work(1.0), "device", "sometimes")


# -- steps through the report ----------------------------------------------------------------


def _report(**kw):
    args = dict(steps=15, batch=32, threads=1)
    args.update(kw)
    return build_report("train", 1, 0, "rpi4", "wifi", 3_813_740, 60_000, 12_000, 0.059, **args)


def test_the_report_carries_steps_batch_threads_boundary_and_start_up():
    rep = _report()
    got, flags = validate_report(rep.to_record())
    assert (got.steps, got.batch, got.threads, got.boundary) == (15, 32, 1, "device")
    assert got.startup_s == 15.4 and flags == []
    by = {(c.phase, c.domain): c.joules for c in got.components}
    busy = 3_813_740 / 2.625e9 + 15 * 3.84e-4
    assert by[("train", "compute")] == _approx(3.4225 * busy)
    assert by[("startup", "compute")] == _approx(3.4225 * 15.4)
    # 60,000 B down = 0.48 Mbit / 20 = 0.024 s, 12,000 B up = 0.096 / 10 = 0.0096 s, at 2.29 W
    assert by[("train", "idle")] == _approx(2.29 * (0.024 + 0.0096))
    marginal = _report(boundary="marginal", startup="off")
    kinds = {(c.phase, c.domain) for c in marginal.components}
    assert ("train", "idle") not in kinds and ("startup", "compute") not in kinds


def test_an_old_report_without_the_new_fields_is_still_valid():
    rec = _report().to_record()
    for key in ("steps", "batch", "threads", "boundary", "startup-s"):
        del rec[key]
    got, _ = validate_report(rec)
    assert (got.steps, got.batch, got.threads, got.boundary, got.startup_s) == (0, 0, 0, "", 0.0)


@pytest.mark.parametrize(
    "key, value",
    [
        ("steps", -1),
        ("steps", True),
        ("steps", 1.5),
        ("steps", 10**13),
        ("threads", 10**6),
        ("batch", "32"),
        ("boundary", "wall-meter"),
        ("boundary", 3),
        ("startup-s", -1.0),
        ("startup-s", float("nan")),
        ("startup-s", 1e9),
    ],
)
def test_hostile_values_of_the_new_fields_are_rejected(key, value):
    rec = _report().to_record()
    rec[key] = value
    with pytest.raises(ReportError):
        EnergyReport.from_record(rec)


def test_a_huge_step_count_is_implausible_for_the_device():
    # 1e11 steps x 3.84e-4 s = 3.84e7 s, beyond a week of computing
    rec = _report().to_record()
    rec["steps"] = 10**11  # the node claims a short call of a hundred billion steps
    with pytest.raises(ReportError, match="with 100000000000 steps"):
        EnergyReport.from_record(rec)


def test_counted_torch_work_carries_optimizer_steps_and_batch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(40, 8), torch.randint(0, 2, (40,))
    with TorchCalls(PassCache()) as seen:
        for start in range(0, 40, 16):  # batches of 16, 16, 8: 3 steps
            opt.zero_grad()
            xb, yb = x[start : start + 16], y[start : start + 16]
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
    counted = seen.counted()
    assert counted.steps == 3 and counted.batch == 16
    assert counted.backwards == 3  # one backward pass per step reached the model
    with TorchCalls(PassCache()) as seen, torch.no_grad():
        model.eval()
        model(x)
    ev = seen.counted()
    assert ev.steps == 0 and ev.backwards == 0 and ev.calls == 1 and ev.batch == 40


def test_the_run_settings_name_the_boundary_and_start_up_mode():
    from fedenergy.settings import Settings

    assert (Settings().boundary, Settings().startup) == ("device", "per-call")
    Settings(boundary="marginal", startup="off").check()
    with pytest.raises(ValueError, match="boundary"):
        Settings(boundary="wall").check()
    with pytest.raises(ValueError, match="startup"):
        Settings(startup="sometimes").check()
