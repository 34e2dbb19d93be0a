"""The two infrastructure models (fedenergy.physics.infra), checked against figures worked out
by hand from the constants, through every user of the call model: the energy mod's report, the
forecasts (one node, many nodes), the failed-call rows and the ledger's re-computation under
the model a run did not use.

Constants (Malmodin, Electronics Goes Green 2020, Figure 8; docs/constants.md §2b):
  fixed broadband (Wi-Fi, Ethernet): 18 W per line / 4 users = 4.5 W; 0.05 W/Mbps
      = 0.05 J/Mbit = 0.05 x 8e-6 = 4e-7 J per byte
  mobile (LTE, 3G, 5G): 1.0 + 0.2 = 1.2 W; 1.5 + 0.03 = 1.53 W/Mbps = 1.224e-5 J per byte
  per-byte: 0.059 kWh/GB = 212,400 J per GB
Devices and links (devices.toml, links.toml): phone 7.3e10 FLOP/s on all 8 cores, no start-up;
laptop 1.86e11 FLOP/s on all 8 cores, a 4.25 s start-up per call;
lte 13 / 6 Mbit/s; wifi 20 / 10 Mbit/s.
"""

import numpy as np
import pytest

from fedenergy.analysis.infra_alt import other_infra
from fedenergy.client.mod import build_report
from fedenergy.ledger import Ledger, rows_from_report
from fedenergy.physics import infra
from fedenergy.physics.call import call_energy, call_energy_many, modeled_call
from fedenergy.physics.devices import get_device
from fedenergy.physics.network import get_link, link_catalog, link_table
from fedenergy.server.failed import failed_call_rows
from fedenergy.server.fleet_state import FleetState
from fedenergy.server.node import NodeInfo
from fedenergy.settings import Settings

REL = 1e-12
# phone on LTE: 1.46e11 FLOPs = 2 s of compute; 1.3 MB down = 10.4 Mbit / 13 = 0.8 s; 600 kB up =
# 4.8 Mbit / 6 = 0.8 s. Power model, mobile: the download holds the connection 0.8 + 2 s
PHONE_LTE_DOWN = 1.2 * 2.8 + 1.224e-5 * 1_300_000  # 3.36 + 15.912 = 19.272 J
PHONE_LTE_UP = 1.2 * 0.8 + 1.224e-5 * 600_000  # 0.96 + 7.344 = 8.304 J
PHONE_LTE_PER_BYTE = (1_300_000 + 600_000) / 1e9 * 212_400  # 403.56 J


def _approx(x):
    return pytest.approx(x, rel=REL, abs=1e-12)


def test_the_power_model_constants_per_access_class():
    assert infra.power_terms("fixed") == (_approx(4.5), _approx(4e-7))
    assert infra.power_terms("mobile") == (_approx(1.2), _approx(1.224e-5))
    access = {k: v.access for k, v in link_catalog().items()}
    assert access["wifi"] == access["ethernet"] == "fixed"
    assert access["lte"] == access["3g"] == access["5g"] == "mobile"
    with pytest.raises(ValueError, match="unknown access"):
        infra.power_terms("satellite")


def test_per_byte_model_is_bytes_times_intensity():
    assert infra.infrastructure_energy_j(10**9) == _approx(212_400.0)
    assert infra.infrastructure_energy_j(10**9, 0.0) == 0.0
    e = modeled_call(get_device("phone"), get_link("lte"), 1.46e11, 1_300_000, 600_000, 0.059)
    assert e.download_infra_j + e.upload_infra_j == _approx(PHONE_LTE_PER_BYTE)


def test_phone_on_lte_under_the_power_model():
    e = modeled_call(
        get_device("phone"),
        get_link("lte"),
        1.46e11,
        1_300_000,
        600_000,
        0.059,
        infra_model="power",
    )
    assert e.download_infra_j == _approx(19.272)
    assert e.upload_infra_j == _approx(8.304)
    # the radio and the compute do not depend on the infrastructure model
    per_byte = modeled_call(
        get_device("phone"), get_link("lte"), 1.46e11, 1_300_000, 600_000, 0.059
    )
    assert e.device_j == per_byte.device_j
    # the per-byte intensity does not enter the power model
    e0 = modeled_call(
        get_device("phone"), get_link("lte"), 1.46e11, 1_300_000, 600_000, 0.0, infra_model="power"
    )
    assert e0.download_infra_j == e.download_infra_j


def test_laptop_on_wifi_is_charged_the_fixed_line_share():
    # 3.72e11 FLOPs / 1.86e11 (all 8 cores) = 2 s; 2.5 MB = 20 Mbit / 20 = 1 s; 1.25 MB = 10
    # Mbit / 10 = 1 s; without the start-up the download holds the line 1 + 2 s
    laptop, wifi = get_device("laptop"), get_link("wifi")
    e = modeled_call(
        laptop, wifi, 3.72e11, 2_500_000, 1_250_000, infra_model="power", startup="off"
    )
    assert e.download_infra_j == _approx(4.5 * 3.0 + 4e-7 * 2_500_000)  # 14.5 J
    assert e.upload_infra_j == _approx(4.5 * 1.0 + 4e-7 * 1_250_000)  # 5.0 J
    # with the ClientApp's 4.25 s start-up per call, the line is held through it too
    s = modeled_call(laptop, wifi, 3.72e11, 2_500_000, 1_250_000, infra_model="power")
    assert s.download_infra_j == _approx(4.5 * 7.25 + 4e-7 * 2_500_000)  # 33.625 J


def test_a_download_with_nothing_after_it_holds_the_connection_for_its_transfer_only():
    e = call_energy(get_link("lte"), 1_300_000, 0, infra_model="power")
    assert e.download_infra_j == _approx(1.2 * 0.8 + 15.912)
    assert e.upload_infra_j == 0.0


def test_unknown_models_are_refused():
    with pytest.raises(ValueError, match="unknown infra-model 'bogus'"):
        call_energy(get_link("lte"), 1, 1, infra_model="bogus")
    with pytest.raises(ValueError, match="unknown infra-model 'bogus'"):
        Settings(infra_model="bogus").check()
    assert infra.other_model("per-byte") == "power" and infra.other_model("power") == "per-byte"


@pytest.mark.parametrize("seed", [0, 1])
def test_the_vectorised_power_model_equals_the_scalar_one_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    links = list(link_catalog().values())
    n = 300
    li = rng.integers(0, len(links), n)
    down = rng.choice([0, 1, 1500, 60_000, 1_300_000], n)
    up = rng.choice([0, 1, 2_500, 600_000], n)
    compute_s = rng.choice([-1.0, 0.0, 0.003, 2.0, 40.0], n)
    compute_j = compute_s * 3.0
    many = call_energy_many(
        link_table(links), li, down, up, 0.059, compute_j, compute_s, infra_model="power"
    )
    for i in range(n):
        one = call_energy(
            links[li[i]],
            int(down[i]),
            int(up[i]),
            0.059,
            float(compute_j[i]),
            float(compute_s[i]),
            infra_model="power",
        )
        assert many.download_infra_j[i] == one.download_infra_j, i
        assert many.upload_infra_j[i] == one.upload_infra_j, i
        assert many.total_j[i] == one.total_j, i


def test_report_forecast_and_failed_rows_agree_under_the_power_model():
    down, up, flops, examples = 1_300_000, 600_000, 1.46e11, 100
    report = build_report(
        "train", 1, 0, "phone", "lte", int(flops), down, up, 0.059, infra_model="power"
    )
    infra_c = [c for c in report.components if c.domain == "infrastructure"]
    assert [c.joules for c in infra_c] == [_approx(19.272), _approx(8.304)]
    assert {c.source for c in infra_c} == {"malmodin-2020:power:mobile:1.2W+1.224e-05J/B"}
    fleet = FleetState(
        [NodeInfo(7, 0, "phone", "lte", num_examples=examples)], 0, 0.059, infra_model="power"
    )
    fleet.flops_per_example = flops / examples
    fleet.default_upload_overhead = 1_000
    fc = fleet.forecast(7, "none", up - 1_000, download_bytes=down)
    many = fleet.forecast_many(np.array([0]), "none", up - 1_000, download_bytes=down)
    radio_down = sum(
        c.joules for c in report.components if c.phase == "download" and c.domain == "radio"
    )
    assert fc.download_j == _approx(radio_down + 19.272)
    assert float(many[1][0]) == fc.download_j
    rows = failed_call_rows(fleet[7], "train", "timeout", down, None, 0.059, infra_model="power")
    failed_infra = [c.joules for c in rows[0].components if c.domain == "infrastructure"]
    assert failed_infra == [_approx(1.2 * 0.8 + 15.912)]  # no upload: its transfer only


@pytest.mark.parametrize(
    "used, expected_other",
    [("per-byte", PHONE_LTE_DOWN + PHONE_LTE_UP), ("power", PHONE_LTE_PER_BYTE)],
)
def test_the_ledger_recomputes_its_infrastructure_under_the_other_model(
    tmp_path, used, expected_other
):
    report = build_report(
        "train", 1, 0, "phone", "lte", int(1.46e11), 1_300_000, 600_000, 0.059, infra_model=used
    )
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.start_run("r", {"infra_model": used, "infra_kwh_per_gb": 0.059}, {}, 0, {})
        ledger.add_nodes("r", [(7, 0, "phone", "lte")])
        ledger.commit_round("r", 1, rows_from_report(7, report), 0.5, 1.0, 1, 1, 0)
        alt = other_infra(ledger, "r")
    recorded = sum(c.joules for c in report.components if c.domain == "infrastructure")
    assert alt["used"] == used and alt["model"] == infra.other_model(used)
    assert alt["infrastructure_j"] == pytest.approx(expected_other, rel=1e-9)
    total = sum(c.joules for c in report.components)
    assert alt["total_j"] == pytest.approx(total - recorded + expected_other, rel=1e-9)
    assert alt["calls_skipped"] == 0
