"""The experiment's own energy: this host's meters over a simulation, beside the ledger."""

from __future__ import annotations

import pytest

from fedenergy.sim.experiment_energy import describe, metered_experiment
from tests.fakes.sysfs import rapl_zone, set_energy


def test_a_host_with_rapl_reports_the_package_energy_of_the_run_as_measured(tmp_path, monkeypatch):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    monkeypatch.setenv("FEDENERGY_SYSFS_ROOT", str(tmp_path))
    with metered_experiment() as record:
        set_energy(tmp_path, "intel-rapl:0", 6_000_000)  # +5 J while the "run" lasts
    assert record["provenance"] == "measured"
    assert record["joules"] == pytest.approx(5.0)
    assert all("rapl" in c["provenance"] for c in record["components"].values())
    assert record["covers"].endswith("this host")
    assert "5 J" in describe(record) and "not part of the totals" in describe(record)


def test_on_a_cluster_the_record_says_the_workers_are_not_metered(tmp_path, monkeypatch):
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    monkeypatch.setenv("FEDENERGY_SYSFS_ROOT", str(tmp_path))
    with metered_experiment(on_cluster=True) as record:
        pass
    assert "the cluster's workers are not metered" in record["covers"]


def test_a_host_without_a_meter_is_modeled_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDENERGY_SYSFS_ROOT", str(tmp_path))  # an empty tree: nothing to read
    with metered_experiment() as record:
        pass
    assert record["provenance"] == "modeled"
    assert record["joules"] is not None and record["joules"] >= 0
