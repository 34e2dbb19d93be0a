"""Carbon conversion: known constants, world fallback, PUE only for datacenter devices."""

import pytest

from fedenergy.analysis.carbon import (
    Carbon,
    co2e_kg,
    facility_factor,
    grid_intensity,
    ledger_carbon,
    node_countries,
)
from fedenergy.ledger import EnergyRow, Ledger
from fedenergy.physics.devices import get_device
from fedenergy.report import Component
from fedenergy.settings import Settings
from fedenergy.sim.fleet import load_fleet

KWH = 3.6e6  # J


def test_one_kwh_in_france_is_56_grams():
    assert grid_intensity("FRA").g_per_kwh == 56.0
    assert co2e_kg(KWH, "FRA") == pytest.approx(0.056)
    assert co2e_kg(KWH, "fra") == pytest.approx(0.056)  # codes are case-insensitive
    assert co2e_kg(KWH, "IND") == pytest.approx(0.7134)
    assert co2e_kg(2 * KWH, "USA") == pytest.approx(2 * 0.3695)


def test_unknown_or_world_country_uses_the_world_fallback_and_says_so():
    for code in ("WORLD", "XYZ", None):
        i = grid_intensity(code)
        assert i.fallback and i.used == "WORLD" and i.g_per_kwh == 475.0
    assert not grid_intensity("DEU").fallback
    assert grid_intensity("ISL").year == 2022  # the table's per-country year
    c = Carbon()
    c.add(KWH, "XYZ", None)
    c.add(KWH, "FRA", None)
    assert c.as_dict()["world_fallback_for"] == ["XYZ"]
    assert c.co2e_kg == pytest.approx(0.475 + 0.056)


def test_pue_applies_to_datacenter_devices_only():
    gpu, cpu, phone = get_device("gpu-server"), get_device("cpu-server"), get_device("phone")
    assert facility_factor(gpu) == gpu.pue == 1.58
    assert facility_factor(cpu) == 1.58
    assert facility_factor(phone) == 1.0 and facility_factor(None) == 1.0
    assert co2e_kg(KWH, "FRA", gpu) == pytest.approx(0.056 * 1.58)
    assert co2e_kg(KWH, "FRA", phone) == pytest.approx(0.056)
    c = Carbon()
    c.add(KWH, "USA", gpu)
    c.add(KWH, "USA", phone)
    assert c.it_j == 2 * KWH
    assert c.facility_j == pytest.approx(2.58 * KWH)
    assert c.kwh == pytest.approx(2.58)


FLEET = """
name = "two-countries"
[[group]]
device = "gpu-server"
link = "ethernet"
fraction = 0.5
country = "FRA"
[[group]]
device = "phone"
link = "lte"
fraction = 0.5
country = "IND"
"""


def _ledger(tmp_path):
    """A hand-written ledger of 4 nodes: per node 1 kWh compute, 1 kWh radio, 1 kWh infra."""
    fleet_path = tmp_path / "two.toml"
    fleet_path.write_text(FLEET)
    fleet = load_fleet(str(fleet_path))
    settings = Settings(nodes=4, rounds=1, fleet=str(fleet_path), out=str(tmp_path))
    doc = {
        "name": fleet.name,
        "source": fleet.source,
        "groups": [
            {"device": g.device.id, "link": g.link.id, "fraction": g.fraction} for g in fleet.groups
        ],
    }
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.start_run("r1", settings.as_dict(), doc, 0, {})
    profiles = fleet.assign(4, 0)
    ledger.add_nodes(
        "r1", [(100 + p.partition_id, p.partition_id, p.device.id, p.link.id) for p in profiles]
    )
    rows = []
    for p in profiles:
        rows.append(
            EnergyRow(
                str(100 + p.partition_id),
                "train",
                "train",
                KWH,
                0,
                1.0,
                "ok",
                (Component("train", "compute", KWH, "modeled", "t"),),
            )
        )
        rows.append(
            EnergyRow(
                str(100 + p.partition_id),
                "train",
                "upload",
                2 * KWH,
                10,
                0.0,
                "ok",
                (
                    Component("upload", "radio", KWH, "modeled", "t"),
                    Component("upload", "infrastructure", KWH, "modeled", "t"),
                ),
            )
        )
    ledger.commit_round("r1", 1, rows, 0.5, 1.0, 4, 4, 0)
    ledger.finish_run("r1")
    return ledger, profiles


def test_ledger_carbon_uses_each_nodes_country_pue_and_world_for_infrastructure(tmp_path):
    ledger, profiles = _ledger(tmp_path)
    with ledger:
        run = ledger.runs()[0]
        assert node_countries(run) == {p.partition_id: p.country for p in profiles}
        c = ledger_carbon(ledger, "r1")
    expected = 0.0
    for p in profiles:
        pue = 1.58 if p.device.id == "gpu-server" else 1.0
        expected += 2 * pue * grid_intensity(p.country).g_per_kwh / 1000  # compute + radio
        expected += 0.475  # infrastructure at the world intensity
    assert c["co2e_kg"] == pytest.approx(expected)
    assert c["it_j"] == pytest.approx(12 * KWH)
    assert c["facility_j"] == pytest.approx(4 * KWH + 2 * (2 * 1.58 + 2) * KWH)
    assert c["compute_j"] == c["radio_j"] == c["infrastructure_j"] == pytest.approx(4 * KWH)
    assert c["world_fallback_for"] == []
    assert set(c["by_country_kg"]) == {"FRA", "IND", "WORLD"}


def test_summary_carries_kwh_and_co2e(tmp_path):
    from fedenergy.analysis.summary import summarize

    ledger, _ = _ledger(tmp_path)
    with ledger:
        s = summarize(ledger, "r1")
    assert s["co2e_kg"] == pytest.approx(s["carbon"]["co2e_kg"]) and s["co2e_kg"] > 0
    assert s["kwh"] == pytest.approx(s["carbon"]["facility_j"] / KWH)
