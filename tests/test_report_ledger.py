import sqlite3
from dataclasses import replace

import pytest
from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto

from fedenergy.client.mod import build_report
from fedenergy.ledger import Ledger, rows_from_report
from fedenergy.protocol import REPORT_KEY
from fedenergy.report import Component, EnergyReport, Expected, ReportError, validate_report


def _report(**kw):
    args = dict(
        kind="train",
        server_round=3,
        partition_id=7,
        device_id="rpi4",
        link_id="lte",
        flops=10**9,
        bytes_down=12_000,
        bytes_up=11_000,
        infra_kwh_per_gb=0.059,
    )
    args.update(kw)
    return build_report(**args)


def test_report_round_trips_through_flower_records_and_protobuf():
    rep = _report()
    content = RecordDict({REPORT_KEY: rep.to_record()})
    wire = recorddict_from_proto(recorddict_to_proto(content))
    back = EnergyReport.from_record(wire[REPORT_KEY])
    assert back == rep
    assert back.total_j == pytest.approx(rep.total_j)
    assert {c.provenance for c in back.components} == {"modeled"}
    assert all(c.source for c in back.components)


@pytest.mark.parametrize(
    "key,value,reason",
    [
        ("schema", 99, "unsupported report schema"),
        ("kind", "mine", "unknown call kind"),
        # ("each", x): x for every component; ("short", x): one component too few
        ("c-joules", ("each", float("nan")), "joules"),
        ("c-joules", ("each", -1.0), "joules"),
        ("c-joules", ("short", 1.0), "different lengths"),
        ("c-provenance", ("each", "guessed"), "provenance"),
        ("c-phase", ("each", "mining"), "unknown phase"),
        ("bytes-up", -5, "bytes-up"),
        ("compute-s", float("inf"), "compute-s"),
        ("device", "x" * 1000, "device"),
    ],
)
def test_bad_reports_are_rejected_with_a_reason(key, value, reason):
    rec = _report().to_record()
    if isinstance(value, tuple):
        n = len(rec["c-phase"])
        value = [value[1]] * (n if value[0] == "each" else n - 1)
    rec[key] = value
    with pytest.raises(ReportError, match=reason):
        EnergyReport.from_record(rec)
    rec = _report().to_record()
    del rec[key]
    with pytest.raises(ReportError, match="missing field"):
        EnergyReport.from_record(rec)


def test_rows_group_components_by_phase_and_conserve_joules():
    rep = _report()
    rows = rows_from_report(123, rep)
    # the start-up of the ClientApp process is its own phase (settings.startup = "per-call")
    assert [r.phase for r in rows] == ["train", "startup", "download", "upload"]
    assert sum(r.joules for r in rows) == pytest.approx(rep.total_j)
    want = {"train": 0, "startup": 0, "download": 12_000, "upload": 11_000}
    assert {r.phase: r.bytes for r in rows} == want


def test_ledger_commits_rounds_and_reopens(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as led:
        led.start_run("r1", {"task": "digits"}, {"name": "mixed"}, 0, {"flwr": "x"})
        led.add_nodes("r1", [("123", 7, "rpi4", "lte")])
        led.commit_round("r1", 1, rows_from_report(123, _report(server_round=1)), 0.5, 1.2, 1, 1, 0)
        led.commit_round("r1", 2, rows_from_report(123, _report(server_round=2)), 0.6, 1.0, 1, 1, 0)
    with Ledger(path) as led:
        assert [r["round"] for r in led.rounds("r1")] == [1, 2]
        assert led.runs()[0]["status"] == "running"
        tot = led.totals("r1")
        assert tot["total_j"] == pytest.approx(2 * _report().total_j)
        assert tot["total_j"] == pytest.approx(tot["compute_j"] + tot["network_j"])
        assert {r["device"] for r in led.energy_rows("r1")} == {"rpi4"}


def test_a_round_is_all_or_nothing(tmp_path):
    path = tmp_path / "ledger.sqlite"
    led = Ledger(path)
    led.start_run("r1", {}, {}, 0, {})
    rows = rows_from_report(1, _report())
    led.commit_round("r1", 1, rows, 0.5, 1.0, 1, 1, 0)
    # a duplicate primary key inside the second round's transaction aborts the whole round
    bad = rows + [rows[0].__class__(**{**rows[0].__dict__, "joules": float("nan")})]
    led.conn.execute(
        "CREATE TRIGGER no_nan BEFORE INSERT ON energy WHEN NEW.joules != NEW.joules "
        "BEGIN SELECT RAISE(ABORT, 'nan'); END"
    )
    with pytest.raises(sqlite3.DatabaseError):
        led.commit_round("r1", 2, bad, 0.6, 1.0, 2, 2, 0)
    led.close()
    with Ledger(path) as again:
        assert [r["round"] for r in again.rounds("r1")] == [1]
        assert {r["round"] for r in again.energy_rows("r1")} == {1}


def test_a_ledger_from_an_older_schema_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE nodes (run_id TEXT NOT NULL, node_id TEXT NOT NULL, partition_id INTEGER, "
        "device TEXT, link TEXT, PRIMARY KEY (run_id, node_id))"
    )
    con.execute("INSERT INTO nodes VALUES ('old', '7', 0, 'rpi4', 'wifi')")
    con.commit()
    con.close()
    with Ledger(path) as led:
        led.add_nodes("new", [("8", 1, "phone", "lte", "FRA")])
        rows = led.conn.execute("SELECT run_id, country FROM nodes ORDER BY run_id").fetchall()
    assert rows == [("new", "FRA"), ("old", None)]


# -- unmetered energy (a node that cannot count its compute) ----------------------------------
def _unmetered_report(joules: float = 0.0, phase: str = "train") -> EnergyReport:
    rep = _report()
    comps = [c for c in rep.components if c.phase != "train"]
    comps.insert(0, Component(phase, "compute", joules, "unmetered", "no meter on this node"))
    return replace(rep, components=tuple(comps))


def test_a_report_may_say_its_compute_is_unmetered():
    rep = _unmetered_report()
    back = EnergyReport.from_record(rep.to_record())
    assert back == rep and back.components[0].provenance == "unmetered"
    # network figures keep their joules; the unmetered compute adds none
    assert back.total_j == pytest.approx(sum(c.joules for c in rep.components[1:]))


def test_an_unmetered_compute_is_not_flagged_as_implausibly_low():
    """A report that says its compute is unmetered is not flagged for its 0 J compute, nor for 0
    FLOPs; the same 0 J labelled modeled is."""
    unmetered = replace(_unmetered_report(), flops=0)
    _, flags = validate_report(unmetered.to_record(), Expected(kind="train"))
    assert not [f for f in flags if "compute" in f or "FLOPs" in f], flags
    silent = replace(
        unmetered,
        components=tuple(
            replace(c, provenance="modeled") if c.provenance == "unmetered" else c
            for c in unmetered.components
        ),
    )
    _, flags = validate_report(silent.to_record(), Expected(kind="train"))
    assert "a train call that reports 0 FLOPs" in flags


@pytest.mark.parametrize(
    "joules, phase, reason",
    [(0.5, "train", "carries 0 J"), (0.0, "download", "unmetered component is compute")],
)
def test_an_unmetered_component_carries_no_figure_and_is_compute(joules, phase, reason):
    rec = _unmetered_report(joules).to_record()
    if phase != "train":
        rec["c-phase"] = [phase, *list(rec["c-phase"])[1:]]
        rec["c-domain"] = ["radio", *list(rec["c-domain"])[1:]]
    with pytest.raises(ReportError, match=reason):
        EnergyReport.from_record(rec)


def test_unmetered_energy_is_stored_as_null_and_never_summed_as_zero(tmp_path):
    rep = _unmetered_report()
    rows = rows_from_report(5, rep)
    assert rows[0].phase == "train" and rows[0].joules is None
    metered = sum(r.joules for r in rows[1:])
    with Ledger(tmp_path / "ledger.sqlite") as led:
        led.start_run("r1", {}, {}, 0, {})
        led.commit_round("r1", 1, rows, None, None, 1, 1, 0)
        energy = led.conn.execute("SELECT phase, joules FROM energy ORDER BY phase").fetchall()
        comps = led.conn.execute(
            "SELECT provenance, joules FROM components WHERE phase='train'"
        ).fetchall()
        (round_j,) = led.conn.execute("SELECT joules FROM rounds").fetchone()
        tot = led.totals("r1")
    assert dict(energy)["train"] is None and comps == [("unmetered", None)]
    assert round_j == pytest.approx(metered) and tot["total_j"] == pytest.approx(metered)
    # the only compute figure left is the modeled start-up phase of the ClientApp process
    startup_j = rep.phase_j("startup")
    assert startup_j > 0 and "train" not in tot["by_phase"]
    assert tot["compute_j"] == pytest.approx(startup_j)


def test_a_failed_run_keeps_its_reason_and_a_resume_clears_it(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite") as led:
        led.start_run("r1", {}, {}, 0, {})
        led.finish_run("r1", "failed", "no round produced a usable update (3 replies rejected)")
        run = led.runs()[0]
        assert run["status"] == "failed" and run["reason"].startswith("no round produced")
        led.reopen_run("r1", 2)
        assert led.runs()[0]["reason"] is None
        led.finish_run("r1")
        assert led.runs()[0]["status"] == "completed" and led.runs()[0]["reason"] is None


FIRST_RELEASE = """
CREATE TABLE runs (
  run_id TEXT PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL, status TEXT NOT NULL,
  seed INTEGER, config_json TEXT NOT NULL, fleet_json TEXT NOT NULL, versions_json TEXT NOT NULL);
CREATE TABLE energy (
  run_id TEXT NOT NULL, round INTEGER NOT NULL, node_id TEXT NOT NULL, call TEXT NOT NULL,
  phase TEXT NOT NULL, joules REAL NOT NULL, bytes INTEGER NOT NULL, seconds REAL NOT NULL,
  status TEXT NOT NULL, PRIMARY KEY (run_id, round, node_id, call, phase));
CREATE TABLE components (
  run_id TEXT NOT NULL, round INTEGER NOT NULL, node_id TEXT NOT NULL, call TEXT NOT NULL,
  phase TEXT NOT NULL, domain TEXT NOT NULL, joules REAL NOT NULL, provenance TEXT NOT NULL,
  source TEXT NOT NULL);
CREATE INDEX components_key ON components (run_id, round, node_id, call, phase);
INSERT INTO runs VALUES ('old', 1.0, NULL, 'running', 0, '{}', '{}', '{}');
INSERT INTO energy VALUES ('old', 1, '7', 'train', 'train', 2.5, 0, 1.0, 'ok');
INSERT INTO components VALUES ('old', 1, '7', 'train', 'train', 'compute', 2.5, 'modeled', 'm');
"""


def test_an_older_ledger_takes_unmetered_rows_and_failure_reasons_after_migration(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript(FIRST_RELEASE)
    con.close()
    with Ledger(path) as led:
        # the old rows are kept as they were
        assert [(r["phase"], r["joules"]) for r in led.energy_rows("old")] == [("train", 2.5)]
        assert [c["joules"] for c in led.components("old")] == [2.5]
        led.commit_round("old", 2, rows_from_report(7, _unmetered_report()), None, None, 1, 1, 0)
        led.finish_run("old", "failed", "why")
        assert led.runs()[0]["reason"] == "why"
        nulls = led.conn.execute("SELECT COUNT(*) FROM energy WHERE joules IS NULL").fetchone()
        index = led.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='components'"
        ).fetchall()
        assert led.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert nulls == (1,) and index == [("components_key",)]
    with Ledger(path) as again:  # a migrated ledger opens as it is: the old row and the new
        # report's train, startup, download and upload rows
        assert len(again.energy_rows("old")) == 5
