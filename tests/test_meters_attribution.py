"""Attribution against fake trees and the fake NVML: GPU energy by GPU use, nanosecond CPU
shares, unattributed parts, Jetson rails, cached detection. Expected figures are by hand."""

from __future__ import annotations

import math
import os
import time

import pytest

from fedenergy.client.measured import compute_components
from fedenergy.meters.cputime import FineAccounting
from fedenergy.meters.detect import DetectCache, detect
from fedenergy.meters.jetson import JetsonMeter
from fedenergy.meters.rapl import RaplMeter
from fedenergy.report import EnergyReport
from tests.fakes.nvml import FakeGpu, FakeNVML
from tests.fakes.sysfs import (
    FakeClock,
    ManualAccounting,
    battery,
    cgroup_cpu_stat,
    cpuacct_usage,
    gpu_load,
    jetson_hwmon,
    proc_children,
    proc_schedstat,
    proc_stat,
    rapl_zone,
    set_energy,
    task_schedstat,
)

P, CHILD, OTHER = 4242, 4243, 5151  # our tree: P and its worker CHILD; OTHER: another client
UUID = "GPU-aaaa1111-0000-0000-0000-000000000000"


def tree(root, p_ns=0, child_ns=0, cpus=None):
    """Fake /proc: P with one child, OTHER (visible), and /proc/schedstat for ``cpus``."""
    task_schedstat(root, P, p_ns)
    proc_children(root, P, [CHILD])
    task_schedstat(root, CHILD, child_ns)
    task_schedstat(root, OTHER, 0)
    if cpus is not None:
        proc_schedstat(root, cpus)


def rapl(root):
    rapl_zone(root, "intel-rapl:0", "package-0", 0)
    rapl_zone(root, "intel-rapl:0:0", "dram", 0)


def setup(root, gpus, **kw):
    clock = FakeClock()
    acct = kw.pop("accounting", None) or FineAccounting(str(root), pid=P, proc_root=str(root))
    ms = detect(
        str(root),
        nvml=FakeNVML(gpus),
        clock=clock,
        accounting=acct,
        poll=False,
        cuda_visible_devices=None,
    )
    return ms, clock, next(m for m in ms.candidates if m.name == "nvml")._nvml


# --- GPU energy by GPU use ---------------------------------------------------------------------
def test_gpu_bound_client_on_busy_cpu_gets_its_gpus_energy(tmp_path):
    rapl(tmp_path)
    tree(tmp_path, cpus=[0] * 16)
    gpu = FakeGpu(UUID, energy_mj=0, procs={CHILD: 2 << 30, OTHER: 1 << 30})
    ms, clock, nv = setup(tmp_path, [gpu])
    ms.begin("train")
    set_energy(tmp_path, "intel-rapl:0", 160_000_000)  # 160 J: 16 busy CPUs
    set_energy(tmp_path, "intel-rapl:0:0", 20_000_000)  # 20 J
    proc_schedstat(tmp_path, [1_000_000_000] * 16)  # machine: 16 CPU-s
    task_schedstat(tmp_path, P, 500_000_000)  # the tree: 0.5 + 0.5 = 1 CPU-s → 1/16
    task_schedstat(tmp_path, CHILD, 500_000_000)
    gpu.energy_mj = 300_000  # 300 J
    gpu.run({CHILD: 95}, seconds=1.0)  # only our worker used the SMs (OTHER holds memory)
    clock.advance(1.0)
    r = ms.end("train")
    assert r.total_j == 480.0
    assert r.shares["cpu"].value == pytest.approx(1 / 16)
    assert r.shares["gpu[0]"].basis == "gpu-use" and r.shares["gpu[0]"].value == 1.0
    # 180 J × 1/16 + 300 J × 1 (a CPU-time share would have given 480/16 = 30 J)
    assert r.process_j == pytest.approx(180 / 16 + 300)
    assert r.unattributed_j == 0.0 and r.attribution_status == "complete"
    assert {a.part: a.process_j for a in r.attribution} == pytest.approx(
        {"cpu": 11.25, "gpu[0]": 300.0}
    )
    assert r.covers == "cpu packages + dram (rapl) + gpu[0] (nvml)"


def test_two_clients_sharing_a_gpu_split_by_sm_samples(tmp_path):
    rapl(tmp_path)
    tree(tmp_path, cpus=[0, 0])
    gpu = FakeGpu(UUID, energy_mj=0, procs={P: 1 << 30, OTHER: 1 << 30})
    ms, clock, nv = setup(tmp_path, [gpu])
    gpu.run({P: 10, OTHER: 10}, seconds=2.0)  # before the window: not counted
    ms.begin("w")
    gpu.energy_mj = 90_000
    gpu.run({P: 60, OTHER: 30}, seconds=1.0)
    ms.total[-1].sample()  # NVML: the poll thread's read, mid-window
    gpu.run({P: 60, OTHER: 30}, seconds=1.0)
    task_schedstat(tmp_path, P, 1_000_000)
    proc_schedstat(tmp_path, [1_000_000, 1_000_000])
    clock.advance(2.0)
    r = ms.end("w")
    s = r.shares["gpu[0]"]
    assert (s.basis, s.process, s.machine) == ("gpu-use", 60 * 12, 90 * 12)
    assert r.process_j == pytest.approx(90.0 * 2 / 3)  # RAPL did not move


def test_cpu_only_client_gets_none_of_a_busy_gpu(tmp_path):
    rapl(tmp_path)
    tree(tmp_path, cpus=[0, 0])
    gpu = FakeGpu(UUID, energy_mj=0, procs={OTHER: 1 << 30})
    ms, clock, nv = setup(tmp_path, [gpu])
    ms.begin("w")
    gpu.energy_mj = 200_000
    gpu.run({OTHER: 99}, seconds=1.0)
    set_energy(tmp_path, "intel-rapl:0", 10_000_000)
    task_schedstat(tmp_path, P, 1_000_000_000)
    proc_schedstat(tmp_path, [1_000_000_000, 1_000_000_000])
    clock.advance(1.0)
    r = ms.end("w")
    assert r.shares["gpu[0]"].value == 0.0
    assert r.process_j == pytest.approx(10.0 * 0.5)


def test_idle_gpu_sole_context_holder_by_context(tmp_path):
    rapl(tmp_path)
    tree(tmp_path, cpus=[0])
    gpu = FakeGpu(UUID, energy_mj=0, procs={CHILD: 1 << 30})
    ms, clock, nv = setup(tmp_path, [gpu])
    ms.begin("w")
    gpu.energy_mj = 40_000  # idle power, no sample in the window
    clock.advance(1.0)
    r = ms.end("w")
    s = r.shares["gpu[0]"]
    assert s.basis == "gpu-context" and s.value == 1.0
    assert r.process_j == pytest.approx(40.0)


def test_shared_gpu_without_samples_is_unattributed_not_zero(tmp_path):
    rapl(tmp_path)
    tree(tmp_path, cpus=[0])
    gpu = FakeGpu(UUID, energy_mj=0, procs={P: 1, OTHER: 1}, util_supported=False)
    ms, clock, nv = setup(tmp_path, [gpu])
    ms.begin("w")
    gpu.energy_mj = 50_000
    set_energy(tmp_path, "intel-rapl:0", 8_000_000)
    task_schedstat(tmp_path, P, 2_000_000)
    proc_schedstat(tmp_path, [4_000_000])
    clock.advance(1.0)
    r = ms.end("w")
    assert r.shares["gpu[0]"].value is None
    assert "gpu-attribution-undefined:gpu[0]" in r.flags
    assert r.unattributed_j == 50.0 and r.process_j == pytest.approx(4.0)
    assert r.attribution_status == "partial"
    comps = compute_components("train", r, "measured", "measured:rapl:package-0")
    assert [(c.provenance, c.joules) for c in comps] == [
        ("measured", pytest.approx(4.0)),
        (
            "unmetered",
            0.0,
        ),
    ]
    assert comps[1].source.startswith("unattributed: 50 J of 58 J") and "gpu[0]" in comps[1].source


def test_holders_outside_our_pid_namespace_never_give_zero(tmp_path):
    # In a container NVML reports host pids: 99999 does not exist here and could be this tree.
    rapl(tmp_path)
    tree(tmp_path, cpus=[0])
    gpu = FakeGpu(UUID, energy_mj=0, procs={99999: 1 << 30})
    ms, clock, nv = setup(tmp_path, [gpu])
    ms.begin("w")
    gpu.energy_mj = 70_000
    gpu.run({99999: 80}, seconds=1.0)
    clock.advance(1.0)
    r = ms.end("w")
    assert r.shares["gpu[0]"].value is None and r.unattributed_j == 70.0


def test_mig_gpu_without_process_samples_sole_holder(tmp_path):
    rapl(tmp_path)
    tree(tmp_path, cpus=[0])
    gpu = FakeGpu(UUID, energy_mj=0, mig=True, util_supported=False, procs={P: 1 << 30})
    ms, clock, nv = setup(tmp_path, [gpu])
    ms.begin("w")
    gpu.energy_mj = 12_000
    clock.advance(1.0)
    r = ms.end("w")
    assert "mig-shared:gpu[0]" in r.flags
    assert r.shares["gpu[0]"].basis == "gpu-context" and r.process_j == pytest.approx(12.0)


# --- nanosecond CPU shares -------------------------------------------------------------------
def test_5ms_call_gets_a_finite_nonzero_labelled_share(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    tree(tmp_path, p_ns=10**9, cpus=[7 * 10**9, 9 * 10**9])
    acct = FineAccounting(str(tmp_path), pid=P, proc_root=str(tmp_path))
    assert not acct.coarse and acct.machine_source.endswith("proc/schedstat")
    m = RaplMeter(str(tmp_path), clock=FakeClock(), accounting=acct, poll=False)
    m.begin("evaluate")
    set_energy(tmp_path, "intel-rapl:0", 60_000)  # 60 mJ (12 W for 5 ms)
    task_schedstat(tmp_path, P, 10**9 + 5_000_000)  # the call ran 5 ms
    proc_schedstat(tmp_path, [7 * 10**9 + 10_000_000, 9 * 10**9 + 10_000_000])  # 20 ms busy
    m.clock.advance(0.005)
    r = m.end("evaluate")
    assert r.process_cpu_s == pytest.approx(0.005) and r.machine_cpu_s == pytest.approx(0.020)
    assert r.process_share == pytest.approx(0.25)
    assert math.isfinite(r.process_j) and r.process_j == pytest.approx(0.015)
    s = r.shares["cpu"]
    assert s.basis == "cpu-time" and "schedstat" in s.source
    assert r.flags == [] and r.attribution_status == "complete"


def test_tick_machine_clock_is_flagged_coarse_for_short_windows(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    tree(tmp_path, p_ns=0)
    proc_stat(tmp_path, busy=1000, idle=1000)
    acct = FineAccounting(str(tmp_path), pid=P, proc_root=str(tmp_path))
    assert acct.coarse and "(ticks)" in acct.source
    m = RaplMeter(str(tmp_path), clock=FakeClock(), accounting=acct, poll=False)
    m.begin("q")
    set_energy(tmp_path, "intel-rapl:0", 50_000)
    task_schedstat(tmp_path, P, 5_000_000)  # 5 ms; the tick clock saw no tick
    m.clock.advance(0.005)
    r = m.end("q")
    # the machine's busy time includes the tree's: raised to 5 ms, share 1, flagged
    assert r.process_share == 1.0 and r.process_j == pytest.approx(0.05)
    assert r.flags == ["coarse-cpu-clock"]


def test_cgroup_v2_cpu_stat_against_cpuacct(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    cg = "system.slice/flower-supernode.service"
    cgroup_cpu_stat(tmp_path, cg, 1_000_000)
    cpuacct_usage(tmp_path, 500 * 10**9)
    acct = FineAccounting(str(tmp_path), cgroup=cg)
    assert "usage_usec" in acct.source and "cpuacct.usage" in acct.source
    m = RaplMeter(str(tmp_path), clock=FakeClock(), accounting=acct, poll=False)
    m.begin("train")
    set_energy(tmp_path, "intel-rapl:0", 2_000_000)
    cgroup_cpu_stat(tmp_path, cg, 1_005_000)  # +5 ms
    cpuacct_usage(tmp_path, 500 * 10**9 + 40_000_000)  # +40 ms
    m.clock.advance(0.01)
    r = m.end("train")
    assert r.process_share == pytest.approx(0.125) and r.process_j == pytest.approx(0.25)


def test_live_5ms_busy_loop_has_a_defined_share():
    acct = FineAccounting()
    ms_set = detect(accounting=acct, poll=False, nvml=FakeNVML([]))
    try:
        with ms_set.window("tiny") as w:
            t0 = time.process_time_ns()
            while time.process_time_ns() - t0 < 5_000_000:
                pass
        r = w.measurement
    finally:
        ms_set.close()
    assert r.process_cpu_s >= 0.005
    assert 0.0 < r.process_share <= 1.0 and math.isfinite(r.process_j)
    assert r.shares["cpu"].defined and "process_time_ns" in r.shares["cpu"].source


def test_undefined_share_is_unattributed_never_a_measured_zero(tmp_path):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    m = RaplMeter(
        str(tmp_path), clock=FakeClock(), accounting=ManualAccounting(step=0.0), poll=False
    )
    m.begin("w")
    set_energy(tmp_path, "intel-rapl:0", 3_000_000)
    r = m.end("w")
    assert r.flags == ["attribution-undefined"]
    assert r.process_j == 0.0 and r.unattributed_j == 3.0 and r.total_j == 3.0
    assert r.attribution_status == "unattributed"
    comps = compute_components("evaluate", r, "measured", "measured:rapl:package-0")
    assert [(c.provenance, c.joules) for c in comps] == [("unmetered", 0.0)]
    assert "unattributed: 3 J" in comps[0].source
    # the report stays valid under the strict validation of untrusted reports
    rep = EnergyReport(
        "evaluate", 1, 0, "rpi4", "wifi", 10, 10, 0, 0.01, tuple(comps), machine_j=3.0
    )
    back = EnergyReport.from_record(rep.to_record())
    assert back.components == rep.components and back.total_j == 0.0


# --- Jetson rails ------------------------------------------------------------------------------
def jetson(root, load):
    jetson_hwmon(root, {1: ("VDD_IN", 10_000), 2: ("VDD_CPU", 3_000), 3: ("VDD_GPU", 4_000)})
    if load is not None:
        gpu_load(root, load)
    acct = ManualAccounting(proc=0.0, mach=0.0, step=0.0)
    return JetsonMeter(str(root), clock=FakeClock(), accounting=acct, poll=False), acct


@pytest.mark.parametrize("load", [0, 600, None])
def test_jetson_gpu_rail_by_gpu_load(tmp_path, load):
    m, acct = jetson(tmp_path, load)
    assert m.probe().available
    m.begin("w")
    acct.proc, acct.mach = 1.0, 2.0  # CPU share 0.5
    m.clock.advance(2.0)
    r = m.end("w")
    assert r.total_j == 20.0 and r.joules["soc.rail[VDD_GPU]"] == 8.0
    if load == 0:  # idle GPU: its rail is idle power, split by CPU time like the rest
        assert r.process_j == pytest.approx(10.0) and r.unattributed_j == 0.0
    else:  # busy (or unknown) GPU: no per-process GPU use on a Jetson → unattributed
        assert r.process_j == pytest.approx((20.0 - 8.0) * 0.5)
        assert r.unattributed_j == 8.0
        assert "gpu-attribution-undefined:jetson-gpu" in r.flags
    assert r.covers == "whole device (jetson VDD_IN)"


# --- cached detection ------------------------------------------------------------------------
def test_detection_is_cached_per_process_and_invalidated(tmp_path, monkeypatch):
    rapl(tmp_path)
    clock = FakeClock()
    cache = DetectCache(ttl_s=300.0, clock=clock)
    nv = FakeNVML([FakeGpu(UUID, energy_mj=0)])
    kw = {"nvml": nv, "accounting": ManualAccounting(), "poll": False}
    a = cache.get(str(tmp_path), **kw)
    assert cache.get(str(tmp_path), **kw) is a  # probed once
    assert cache.get(str(tmp_path), tdp_w=20.0, **kw) is not a  # other settings: own entry
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert cache.get(str(tmp_path), **kw) is not a
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert cache.get(str(tmp_path), **kw) is a
    clock.advance(301.0)
    b = cache.get(str(tmp_path), **kw)
    assert b is not a  # expired: probed again (a charger unplugged, a driver loaded)
    with b.window("w") as w:
        nv.gpus[0].lost = True  # the GPU fell off the bus: read error at the window's end
    assert "read-error:gpu[0]" in w.measurement.flags
    nv.gpus[0].lost = False
    assert cache.get(str(tmp_path), **kw) is not b  # a faulted set is probed again
    c = cache.get(str(tmp_path), **kw)
    cache.invalidate()
    assert cache.get(str(tmp_path), **kw) is not c
    assert os.getpid() in {k[0] for k in cache._sets}


def test_fine_clocks_count_live_and_reaped_children():
    import subprocess
    import sys

    acct = FineAccounting()
    before = acct.process_cpu_s()
    code = (
        "import sys, time\n"
        "while time.process_time() < 0.2: pass\n"
        "print('ready', flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        assert child.pid in acct.tree_pids()
        live = acct.process_cpu_s() - before
        assert live >= 0.2  # the child's schedstat (ns): no tick rounding down
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    assert acct.process_cpu_s() - before >= live  # reaped: now in RUSAGE_CHILDREN


def test_gpu_inside_a_battery_total_is_attributed_apart(tmp_path):
    # Laptop on battery: the battery is the total, the NVML GPU is inside it (informational).
    battery(tmp_path, power_uw=20_000_000)  # 20 W
    gpu = FakeGpu(UUID, energy_mj=0, procs={os.getpid(): 1 << 30})  # this process: sole user
    acct = ManualAccounting(proc=0.0, mach=0.0, step=0.0)
    ms, clock, nv = setup(tmp_path, [gpu], accounting=acct)
    assert [m.name for m in ms.total] == ["battery"] and [m.name for m in ms.info] == ["nvml"]
    ms.begin("w")
    gpu.energy_mj = 8_000  # 8 J of the 20 J
    acct.proc, acct.mach = 1.0, 2.0  # CPU share 0.5
    clock.advance(1.0)
    r = ms.end("w")
    assert r.total_j == 20.0 and r.joules["gpu[0]"] == 8.0
    assert r.process_j == pytest.approx((20.0 - 8.0) * 0.5 + 8.0)
    assert {a.part: a.machine_j for a in r.attribution} == {"cpu": 12.0, "gpu[0]": 8.0}
