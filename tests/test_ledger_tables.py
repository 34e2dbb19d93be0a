"""read_ledger: a ledger run's per-call, per-round and per-node DataFrames, whose sums are the
ledger's SQL sums (and its CSV export's)."""

from __future__ import annotations

import csv
import sys

import pytest

from fedenergy import read_ledger
from fedenergy.analysis.htmlreport import export_ledger
from fedenergy.analysis.tables import PANDAS_HINT
from fedenergy.ledger import EnergyRow, Ledger
from fedenergy.report import Component

pd = pytest.importorskip("pandas")


def _row(node, call, phase, joules, nbytes=0, seconds=0.0, status="ok"):
    domain = "compute" if phase in ("train", "evaluate", "query") else "radio"
    comp = Component(phase, domain, joules, "modeled", "test")
    return EnergyRow(str(node), call, phase, joules, nbytes, seconds, status, (comp,))


def _call(node, call, compute, down, up, nbytes=(1000, 400), status="ok"):
    return [
        _row(node, call, call, compute, 0, 0.5, status),
        _row(node, call, "download", down, nbytes[0], 0.0, status),
        _row(node, call, "upload", up, nbytes[1], 0.0, status),
    ]


@pytest.fixture
def ledger_path(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as led:
        led.start_run("old", {"seed": 0}, {"name": "grid", "groups": []}, 0, {})
        led.commit_round("old", 0, _call(9, "query", 0.1, 0.2, 0.3), None, None, 0, 0, 0)
        led.finish_run("old")
        led.start_run("run", {"seed": 1}, {"name": "grid", "groups": []}, 1, {})
        led.add_nodes(
            "run",
            [(1, 0, "rpi4", "lte", "DEU"), (2, 1, "laptop", "wifi", None), (3, 2, "rpi4", "3g")],
        )
        led.commit_round("run", 0, [], 0.1, 2.0, 0, 0, 0)
        rows = _call(1, "train", 1.5, 2.0, 3.0) + _call(2, "train", 0.5, 0.25, 0.125)
        rows += _call(1, "evaluate", 0.25, 0.5, 0.75, (800, 200))
        led.commit_round("run", 1, rows, 0.5, 1.0, 2, 2, 0)
        rows = _call(2, "train", 0.5, 0.25, 0.125) + _call(
            1, "train", 1.0, 2.0, 4.0, status="failed"
        )
        led.commit_round("run", 2, rows, 0.7, 0.5, 2, 1, 1)
        led.finish_run("run")
    return path


def _sql(path, query, *args):
    with Ledger(path) as led:
        return led.conn.execute(query, args).fetchall()


def test_calls_sum_to_the_energy_table(ledger_path):
    t = read_ledger(ledger_path)
    assert t.run_id == "run"  # the latest run by default
    calls = t.calls()
    assert len(calls) == 5
    want = {
        (r, n, c): (j, b)
        for r, n, c, j, b in _sql(
            ledger_path,
            "SELECT round, node_id, call, SUM(joules), SUM(bytes) FROM energy WHERE run_id=? "
            "GROUP BY round, node_id, call",
            "run",
        )
    }
    got = {
        (r, n, c): (j, d + u)
        for r, n, c, j, d, u in calls[
            ["round", "node_id", "call", "joules", "bytes_down", "bytes_up"]
        ].itertuples(index=False)
    }
    assert set(got) == set(want)
    for key, (joules, nbytes) in want.items():
        assert got[key] == (pytest.approx(joules), nbytes)
    assert (calls["compute_j"] + calls["network_j"]).tolist() == pytest.approx(
        calls["joules"].tolist()
    )
    first = calls[(calls["round"] == 1) & (calls["node_id"] == "1") & (calls["call"] == "train")]
    assert first[["device", "link", "partition_id", "seconds"]].iloc[0].tolist() == [
        "rpi4",
        "lte",
        0,
        0.5,
    ]
    assert first[["compute_j", "network_j", "bytes_down", "bytes_up"]].iloc[0].tolist() == [
        1.5,
        5.0,
        1000,
        400,
    ]
    failed = calls[calls["status"] == "failed"]
    assert failed[["round", "node_id"]].values.tolist() == [[2, "1"]]


def test_rounds_are_the_rounds_table_with_the_energy_split(ledger_path):
    rounds = read_ledger(ledger_path, "run").rounds()
    table = _sql(
        ledger_path,
        "SELECT round, accuracy, loss, selected, succeeded, failed, joules FROM rounds "
        "WHERE run_id=? ORDER BY round",
        "run",
    )
    cols = ["round", "accuracy", "loss", "selected", "succeeded", "failed", "joules"]
    assert [tuple(r) for r in rounds[cols].itertuples(index=False)] == table
    assert rounds["calls"].tolist() == [0, 3, 2]
    assert rounds["bytes"].tolist() == [0, 1400 * 2 + 1000, 2800]
    assert rounds["compute_j"].tolist() == pytest.approx([0.0, 2.25, 1.5])
    assert (rounds["compute_j"] + rounds["network_j"]).tolist() == pytest.approx(
        rounds["joules"].tolist()
    )
    (total,) = _sql(ledger_path, "SELECT SUM(joules) FROM energy WHERE run_id=?", "run")[0]
    assert rounds["joules"].sum() == pytest.approx(total)


def test_nodes_sum_to_the_energy_table_per_node(ledger_path):
    nodes = read_ledger(ledger_path).nodes()
    assert nodes["node_id"].tolist() == ["1", "2", "3"]
    per_node = dict(
        _sql(
            ledger_path,
            "SELECT node_id, SUM(joules) FROM energy WHERE run_id=? GROUP BY node_id",
            "run",
        )
    )
    got = dict(zip(nodes["node_id"], nodes["joules"], strict=True))
    assert got == pytest.approx({**per_node, "3": 0.0})  # node 3 registered, never called
    wasted = _sql(
        ledger_path,
        "SELECT SUM(joules) FROM energy WHERE run_id=? AND status != 'ok'",
        "run",
    )[0][0]
    assert nodes["wasted_j"].sum() == pytest.approx(wasted) and wasted == pytest.approx(7.0)
    assert nodes["calls"].tolist() == [3, 2, 0]
    one = nodes.iloc[0]
    assert (one["device"], one["link"], one["country"], one["partition_id"]) == (
        "rpi4",
        "lte",
        "DEU",
        0,
    )
    assert (
        nodes["bytes"].sum()
        == _sql(ledger_path, "SELECT SUM(bytes) FROM energy WHERE run_id=?", "run")[0][0]
    )


def test_tables_agree_with_the_csv_export(ledger_path, tmp_path):
    with Ledger(ledger_path) as led:
        export_ledger(led, "run", tmp_path)
    with (tmp_path / "ledger_energy.csv").open() as fh:
        exported = sum(float(r["joules"]) for r in csv.DictReader(fh))
    assert read_ledger(ledger_path).calls()["joules"].sum() == pytest.approx(exported)


def test_another_run_and_errors(ledger_path, tmp_path):
    old = read_ledger(ledger_path, run_id="old")
    assert old.calls()["call"].unique().tolist() == ["query"]
    assert old.nodes()["node_id"].tolist() == ["9"]  # rows of a node the nodes table lacks
    assert old.rounds()["calls"].tolist() == [1]
    with pytest.raises(ValueError, match="no run 'nope'"):
        read_ledger(ledger_path, run_id="nope")
    with pytest.raises(FileNotFoundError):
        read_ledger(tmp_path / "missing.sqlite")
    Ledger(tmp_path / "empty.sqlite").close()
    with pytest.raises(ValueError, match="holds no run"):
        read_ledger(tmp_path / "empty.sqlite")


def test_without_pandas_the_error_names_the_extra(ledger_path, monkeypatch):
    tables = read_ledger(ledger_path)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'fedenergy\[pandas\]'") as err:
        read_ledger(ledger_path)
    assert str(err.value) == PANDAS_HINT
    with pytest.raises(ImportError, match="fedenergy"):
        tables.calls()
