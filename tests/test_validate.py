"""The validation suite (simulations/validate.py): runs, writes its JSON schema, and its printed
summary is the statistics of its own cases. Pure model evaluation: no Flower, well under a
second."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import math
import re
import statistics
import sys
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[1] / "simulations"
if str(SIM) not in sys.path:
    sys.path.insert(0, str(SIM))

import validation_cases as vc  # noqa: E402
import validation_model as vm  # noqa: E402

from fedenergy.physics.constants import load_table  # noqa: E402

_spec = importlib.util.spec_from_file_location("fe_validate", SIM / "validate.py")
validate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(validate)

KEYS = {"case", "source", "measured", "modeled", "rel_error", "fitted"}
SUMMARY = re.compile(
    r"^summary: validating=(\d+) fitted=(\d+) median_abs_error=([\d.]+)% "
    r"within_2x=(\d+)/(\d+) within_20pct=(\d+)/(\d+) worst_factor=([\d.]+)x$",
    re.M,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run of the CLI: its stdout and the JSON it wrote."""
    out = tmp_path_factory.mktemp("validate")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert validate.main(["--json", str(out / "v.json"), "--markdown", str(out / "v.md")]) == 0
    return buf.getvalue(), json.loads((out / "v.json").read_text()), (out / "v.md").read_text()


def test_at_least_ten_cases_with_the_schema(run):
    _, rows, _ = run
    assert isinstance(rows, list) and len(rows) >= 10
    for r in rows:
        assert KEYS <= set(r), r.get("case")
        assert isinstance(r["case"], str) and r["case"]
        assert isinstance(r["source"], str) and len(r["source"]) > 20
        assert isinstance(r["fitted"], bool)
        assert isinstance(r["measured"], float | int) and r["measured"] > 0
        assert isinstance(r["modeled"], float) and math.isfinite(r["modeled"])
        assert r["rel_error"] == pytest.approx(r["modeled"] / r["measured"] - 1, rel=0, abs=1e-12)
        assert r["unit"] and r["setup"]
        assert r["within_2x"] == (0.5 <= r["modeled"] / r["measured"] <= 2.0)
    assert len({r["case"] for r in rows}) == len(rows)  # names are unique
    assert sum(not r["fitted"] for r in rows) >= 10  # at least ten validate


def test_printed_summary_is_the_statistics_of_the_cases(run):
    text, rows, md = run
    m = SUMMARY.search(text)
    assert m, text[-400:]
    val = [r for r in rows if not r["fitted"]]
    errs = [abs(r["rel_error"]) for r in val]
    factors = [max(r["modeled"] / r["measured"], r["measured"] / r["modeled"]) for r in val]
    assert int(m[1]) == len(val) and int(m[5]) == len(val) and int(m[7]) == len(val)
    assert int(m[2]) == len(rows) - len(val)
    assert float(m[3]) == pytest.approx(statistics.median(errs) * 100, abs=0.051)
    assert int(m[4]) == sum(0.5 <= r["modeled"] / r["measured"] <= 2.0 for r in val)
    assert int(m[6]) == sum(e <= 0.20 for e in errs)
    assert float(m[8]) == pytest.approx(max(factors), abs=0.0051)
    assert m[0] in md  # the Markdown block carries the same line
    # every case is in the printed table, with its measured figure
    for i, r in enumerate(rows, 1):
        assert re.search(rf"^\s*{i}\s+{re.escape(r['case'])}\s", text, re.M), r["case"]


def test_every_miss_names_its_constants(run):
    text, rows, _ = run
    for r in rows:
        if not r["fitted"] and abs(r["rel_error"]) > 0.20:
            line = next(ln for ln in text.splitlines() if ln.startswith(f"  {r['case']} ("))
            for ref in r["constants"]:
                assert ref in line


def test_declared_constants_exist():
    """A case names the constants its figure rests on; a renamed field must fail here."""
    for c in vc.CASES:
        assert c.constants, c.case
        for ref in c.constants:
            vm.constant(ref)  # raises KeyError when absent
        for table, entry in c.uses:
            assert entry in vm.catalog_entries(table)


def test_fitted_when_a_constant_cites_the_case_source(monkeypatch):
    """Fitting is read from the constants' source text: a publication named in the sources of
    an entry the case uses makes it fitted; one named nowhere does not."""
    links = load_table("links")["links"]
    lte_sources = links["lte"]["sources"]
    cited = [f for f, t in lte_sources.items() if "huang 2012" in str(t).lower()]
    assert cited  # the LTE constants cite Huang et al. 2012 today
    monkeypatch.setitem(vc.SOURCE_KEYS, "probe-huang", ("huang 2012",))
    monkeypatch.setitem(vc.SOURCE_KEYS, "probe-none", ("no such publication xyz",))
    base = next(c for c in vc.CASES if ("links", "lte") in c.uses)
    hit = dataclasses.replace(base, ref="probe-huang")
    miss = dataclasses.replace(base, ref="probe-none")
    assert validate.fitted_by(hit) == sorted(f"links:lte.{f}" for f in cited)
    assert validate.fitted_by(miss) == []


def test_fitted_cases_are_left_out_of_the_summary():
    rows = [
        {"case": "a", "measured": 1.0, "modeled": 1.1, "rel_error": 0.1, "fitted": False},
        {"case": "b", "measured": 1.0, "modeled": 3.0, "rel_error": 2.0, "fitted": False},
        {"case": "c", "measured": 1.0, "modeled": 9.0, "rel_error": 8.0, "fitted": True},
    ]
    for r in rows:
        r["within_2x"] = 0.5 <= r["modeled"] / r["measured"] <= 2.0
    s = validate.summarize(rows)
    assert s["validating"] == 2 and s["fitted"] == 1
    assert s["median_abs_error"] == pytest.approx((0.1 + 2.0) / 2)
    assert s["within_2x"] == 1 and s["within_20pct"] == 1
    assert s["worst_factor"] == pytest.approx(3.0)


def test_adapter_against_the_constants():
    """The adapter's figures by hand from data/*.toml (device power, radio power, transfer)."""
    dev = load_table("devices")["devices"]["rpi4"]
    assert vm.model_power_w("rpi4", "idle") == dev["idle_power_w"]
    assert vm.model_power_w("rpi4", "load") == dev["active_power_w"]
    lte = load_table("links")["links"]["lte"]
    up = (lte["alpha_up_mw_per_mbps"] * 6.0 + lte["beta_mw"]) / 1000.0
    assert vm.model_radio_power_w("lte", "up", 6.0) == pytest.approx(up, rel=1e-12)
    wifi = load_table("links")["links"]["wifi"]
    p = (wifi["alpha_down_mw_per_mbps"] * wifi["down_mbps"] + wifi["beta_mw"]) / 1000.0
    expected = p * 1e6 * 8 / (wifi["down_mbps"] * 1e6)
    assert vm.model_transfer_energy_j("wifi", 1e6, "down") == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError):
        vm.model_power_w("rpi4", "asleep")
    with pytest.raises(ValueError):
        vm.model_radio_power_w("lte", "sideways", 1.0)


def test_training_and_federation_adapters_scale():
    """More work takes longer and costs more; a federation of n calls is n times one call."""
    t1 = vm.model_train_time_s("rpi4", 1e9, steps=10, batch=32)
    t2 = vm.model_train_time_s("rpi4", 2e9, steps=10, batch=32)
    assert 0 < t1 < t2
    assert vm.model_train_energy_j("rpi4", 1e9, steps=10, batch=32) > 0
    one = vm.model_federation_j("phone", "lte", 1e8, 40_000, 40_000, calls=1)
    three = vm.model_federation_j("phone", "lte", 1e8, 40_000, 40_000, calls=3)
    assert one > vm.model_train_energy_j("phone", 1e8, steps=1, batch=1)
    assert three == pytest.approx(3 * one, rel=1e-12)


def test_training_cases_flops_are_the_counted_ones():
    """The training cases store FLOPs counted by simulations/validation_flops.py; recount them.
    For ResNet-18 (no grouped convolution) the stated convention (3 x forward - first layer +
    2 x parameters) must equal fedenergy's own counted training step."""
    import torch
    import validation_flops as vf

    from fedenergy.physics.flops import FlopCache, num_parameters

    r18, mnv2 = vf.resnet18(), vf.mobilenet_v2()
    assert num_parameters(r18) == 11_689_512  # torchvision / timm resnet18
    assert num_parameters(mnv2) == 3_504_872  # torchvision mobilenet_v2, timm mobilenetv2_100
    x = torch.zeros(1, 3, 224, 224)
    # forward by hand: ResNet-18 1.814 GMAC, MobileNetV2 0.301 GMAC per 224x224 image
    assert FlopCache().forward(r18, x) == pytest.approx(2 * 1.814e9, rel=2e-3)
    assert FlopCache().forward(mnv2, x) == pytest.approx(2 * 0.3008e9, rel=2e-3)
    assert vf.resnet18_train_step_flops(16) == vc.RESNET18_STEP_FLOPS
    assert vf.mobilenet_v2_train_step_flops(16) == vc.MOBILENETV2_STEP_FLOPS
    counted = FlopCache().train_step(r18, torch.zeros(16, 3, 224, 224))
    assert counted == vc.RESNET18_STEP_FLOPS


def test_training_cases_model_the_benchmark_job():
    """Each training case asks the adapter for 20 steps of batch 16 of its model's FLOPs on its
    device, and is validating unless a device constant cites the benchmark."""
    rows = {r["case"]: r for r in validate.run_cases() if r["kind"] == "training"}
    assert len(rows) >= 2
    for name, r in rows.items():
        device = name.split()[0]
        step = vc.RESNET18_STEP_FLOPS if "ResNet-18" in name else vc.MOBILENETV2_STEP_FLOPS
        assert r["modeled"] == pytest.approx(vm.model_train_time_s(device, 20 * step, 20, 16))
        assert r["unit"] == "s" and r["measured"] > 60


def test_validation_catalog_adds_profiles_without_touching_the_packaged_ones():
    """Validation-local profiles load through fedenergy's catalog loader (the packaged rules:
    every number sourced), add ids the package lacks and leave every packaged entry as it is."""
    packaged = load_table("devices")["devices"]
    local = vm.catalog_entries("devices")
    assert "v100-pcie" in local and "v100-pcie" not in packaged
    for key, entry in packaged.items():
        assert local[key] == entry
        assert vm.get_device(key).train_flops_per_s == entry["train_flops_per_s"]
    v100 = vm.get_device("v100-pcie")
    assert v100.origin == "validation_catalog.toml"
    assert set(v100.sources) >= {"train_flops_per_s", "step_overhead_s"}


def test_federation_case_reproduces_the_papers_figure_by_hand():
    """The whole-federation case: measured = 503 / 290 minutes (Tapp et al.'s abstract); modeled
    = the run's V100 over H100 time, by hand from the two profiles' constants: every site does
    the same full-batch steps on either GPU, each costing the counted U-Net step."""
    rows = {r["case"]: r for r in validate.run_cases()}
    fed = [r for r in rows.values() if r["kind"] == "federation"]
    assert len(fed) >= 1
    r = rows["whole federation, V100 vs H100 run time"]
    assert r["measured"] == pytest.approx(503.0 / 290.0, rel=1e-12)
    assert not r["fitted"]
    h100 = load_table("devices")["devices"]["gpu-server"]
    v100 = vm.catalog_entries("devices")["v100-pcie"]
    # the V100 rate is derived as the H100's: FP32 peak (80 SMs x 64 cores x 2 x 1.38 GHz) x 25 %
    assert v100["train_flops_per_s"] == pytest.approx(80 * 64 * 2 * 1.38e9 * 0.25, rel=2e-3)
    assert h100["train_flops_per_s"] == pytest.approx(51e12 * 0.25, rel=5e-3)  # 12.8e12 rounded
    f = vc.UNET_STEP_FLOPS
    t_v = f / v100["train_flops_per_s"] + v100["step_overhead_s"]
    t_h = f / h100["train_flops_per_s"] + h100["step_overhead_s"]
    assert r["modeled"] == pytest.approx(t_v / t_h, rel=1e-12)
    # a step of ~0.44 TFLOP dwarfs the per-step term: the ratio is the FP32-rate ratio to 0.3 %
    ratio = h100["train_flops_per_s"] / v100["train_flops_per_s"]
    assert r["modeled"] == pytest.approx(ratio, rel=3e-3)
    assert r["within_2x"] is False  # 3.6x modeled against 1.7x measured: a documented miss


def test_unet_step_flops_are_the_counted_ones():
    """The federation case stores the U-Net's counted training step; recount it, and check the
    forward against the layer shapes by hand (multiply-adds of each convolution, x 2)."""
    import torch
    import validation_flops as vf

    from fedenergy.physics.flops import FlopCache

    assert vf.unet_train_step_flops(vc.RETSEG_BATCH) == vc.UNET_STEP_FLOPS

    def conv(out_px: int, cout: int, cin: int, k: int) -> int:  # MACs of a k x k convolution
        return out_px * cout * cin * k * k

    def tconv(in_px: int, cin: int, cout: int) -> int:  # 3x3 transposed conv, per input pixel
        return in_px * cin * cout * 9

    macs = (
        # down: residual units (two 3x3 convs, the first strided, + a 3x3 strided shortcut)
        conv(128**2, 16, 3, 3) + conv(128**2, 16, 16, 3) + conv(128**2, 16, 3, 3)
        + conv(64**2, 32, 16, 3) + conv(64**2, 32, 32, 3) + conv(64**2, 32, 16, 3)
        + conv(32**2, 64, 32, 3) + conv(32**2, 64, 64, 3) + conv(32**2, 64, 32, 3)
        + conv(16**2, 128, 64, 3) + conv(16**2, 128, 128, 3) + conv(16**2, 128, 64, 3)
        # bottom: 128 -> 256 at 16x16, 1x1 shortcut
        + conv(16**2, 256, 128, 3) + conv(16**2, 256, 256, 3) + conv(16**2, 256, 128, 1)
        # up: transposed conv of the concatenated skip, then one 3x3 conv (identity shortcut)
        + tconv(16**2, 128 + 256, 64) + conv(32**2, 64, 64, 3)
        + tconv(32**2, 2 * 64, 32) + conv(64**2, 32, 32, 3)
        + tconv(64**2, 2 * 32, 16) + conv(128**2, 16, 16, 3)
        + tconv(128**2, 2 * 16, 1) + conv(256**2, 1, 1, 3)
    )  # fmt: skip
    x = torch.zeros(1, 3, 256, 256)
    assert FlopCache().forward(vf.residual_unet(), x) == 2 * macs
    assert vf.residual_unet()(x).shape == (1, 1, 256, 256)


def test_transfer_cases_use_the_whole_device_boundary():
    """Whole-phone measurements are compared with what fedenergy charges under its default
    boundary: the radio's power plus the device's idle base while it waits (by hand)."""
    rows = {r["case"]: r for r in validate.run_cases()}
    wifi = load_table("links")["links"]["wifi"]
    phone = load_table("devices")["devices"]["phone"]
    radio_w = (wifi["alpha_down_mw_per_mbps"] * 3.5 + wifi["beta_mw"]) / 1000.0
    expected = (radio_w + phone["idle_power_w"]) / 3.5e6 * 1e6  # uJ per bit
    assert rows["Wi-Fi download, energy per bit"]["modeled"] == pytest.approx(expected, rel=1e-12)
    links = load_table("links")["links"]

    def whole(link: str) -> float:
        e = links[link]
        return (e["alpha_down_mw_per_mbps"] * e["down_mbps"] + e["beta_mw"]) / 1000.0 + phone[
            "idle_power_w"
        ]

    ratio = whole("5g") / whole("lte")
    assert rows["5G vs 4G power"]["modeled"] == pytest.approx(ratio, rel=1e-12)
