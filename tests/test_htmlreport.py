"""Reports rebuilt from a saved ledger: HTML/Markdown, real PNG plots, CSV/JSON export."""

import csv
import json
import struct

import pytest

from fedenergy.analysis.compare import compare_run, write_comparison
from fedenergy.analysis.htmlreport import write_report
from fedenergy.cli import main
from fedenergy.ledger import EnergyRow, Ledger
from fedenergy.report import Component
from fedenergy.settings import Settings
from fedenergy.sim.fleet import load_fleet

NODES, ROUNDS = 4, 3
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A saved ledger shaped like a real run (written without Ray, for speed)."""
    out = tmp_path_factory.mktemp("run")
    settings = Settings(nodes=NODES, rounds=ROUNDS, out=str(out))
    fleet = load_fleet(settings.fleet)
    doc = {
        "name": fleet.name,
        "source": fleet.source,
        "groups": [
            {"device": g.device.id, "link": g.link.id, "fraction": g.fraction} for g in fleet.groups
        ],
    }
    with Ledger(out / "ledger.sqlite") as ledger:
        ledger.start_run("run1", settings.as_dict(), doc, 0, {})
        profiles = fleet.assign(NODES, 0)
        ledger.add_nodes(
            "run1",
            [(10 + p.partition_id, p.partition_id, p.device.id, p.link.id) for p in profiles],
        )
        ledger.commit_round("run1", 0, [], 0.03, 2.3, NODES, NODES, 0)
        for rnd in range(1, ROUNDS + 1):
            rows = []
            for p in profiles:
                nid = str(10 + p.partition_id)
                rows += [
                    EnergyRow(
                        nid, "train", "download", 1.5 + rnd, 9000, 0.0, "ok",
                        (Component("download", "radio", 1.0 + rnd, "modeled", "m"),
                         Component("download", "infrastructure", 0.5, "modeled", "m")),
                    ),
                    EnergyRow(
                        nid, "train", "train", 0.01 * rnd, 0, 0.2, "ok",
                        (Component("train", "compute", 0.01 * rnd, "modeled", "m"),),
                    ),
                    EnergyRow(
                        nid, "train", "upload", 2.25, 9100, 0.0, "ok",
                        (Component("upload", "radio", 2.0, "modeled", "m"),
                         Component("upload", "infrastructure", 0.25, "modeled", "m")),
                    ),
                ]  # fmt: skip
            ledger.commit_round("run1", rnd, rows, 0.3 * rnd, 1.0, NODES, NODES, 0)
        ledger.finish_run("run1")
    return out


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_from_saved_ledger_writes_html_markdown_plots_and_exports(run_dir):
    written = write_report(run_dir / "ledger.sqlite")
    html = written["html"].read_text()
    assert html.startswith("<!doctype html>") and "data:image/png;base64," in html
    assert "Per device class" in html and "kgCO2e" in html
    md = written["markdown"].read_text()
    assert "| round | accuracy | joules | trained | failed |" in md
    assert len(written["plots"]) == 3
    import matplotlib.image

    for png in written["plots"]:
        w, h = _png_size(png)
        assert w >= 400 and h >= 300
        assert png.stat().st_size > 5_000  # a real plot, not an empty canvas
        assert matplotlib.image.imread(png).shape[:2] == (h, w)


def test_csv_and_json_exports_round_trip_the_energy_rows(run_dir):
    write_report(run_dir / "ledger.sqlite")
    with Ledger(run_dir / "ledger.sqlite") as ledger:
        rows = ledger.energy_rows("run1")
        comps = ledger.components("run1")
    key = lambda r: (int(r["round"]), str(r["node_id"]), r["call"], r["phase"])  # noqa: E731
    want = {key(r): (r["joules"], r["bytes"], r["device"], r["link"]) for r in rows}
    with (run_dir / "ledger_energy.csv").open() as fh:
        got = {
            key(r): (float(r["joules"]), int(r["bytes"]), r["device"], r["link"])
            for r in csv.DictReader(fh)
        }
    assert got == want and len(got) == NODES * ROUNDS * 3
    with (run_dir / "ledger_components.csv").open() as fh:
        assert sum(float(r["joules"]) for r in csv.DictReader(fh)) == pytest.approx(
            sum(c["joules"] for c in comps)
        )
    doc = json.loads((run_dir / "ledger.json").read_text())
    assert {key(r): (r["joules"], r["bytes"], r["device"], r["link"]) for r in doc["energy"]} == (
        want
    )
    assert doc["run"]["config"]["nodes"] == NODES and len(doc["rounds"]) == ROUNDS + 1


def test_report_command_keeps_json_and_regenerates_files(run_dir, capsys):
    for f in ("report.html", "accuracy_vs_energy.png", "ledger_energy.csv"):
        (run_dir / f).unlink(missing_ok=True)
    assert main(["report", str(run_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # stdout is still exactly the summary JSON
    assert summary["run_id"] == "run1" and summary["rounds"] == ROUNDS
    assert summary["co2e_kg"] > 0 and summary["kwh"] > 0
    for f in ("report.html", "accuracy_vs_energy.png", "ledger_energy.csv"):
        assert (run_dir / f).is_file()
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir), "--no-files"]) == 0
    assert not (run_dir / "report.html").exists()


def test_report_includes_a_saved_comparison(run_dir):
    comp = compare_run(run_dir / "ledger.sqlite", target_accuracy=0.6, max_epochs=5, measure=False)
    write_comparison(run_dir, comp)
    written = write_report(run_dir / "ledger.sqlite")
    html = written["html"].read_text()
    assert "Federated versus centralized" in html and "centralized" in html
    # one curve for the run, one for the centralized epochs, and the target accuracy line
    assert html.count('class="curve"') == 2 and 'id="target"' in html
    assert "Centralized per epoch" in written["markdown"].read_text()
    for png in written["plots"]:
        assert png.stat().st_size > 5_000
    (run_dir / "comparison.json").unlink()


def test_report_of_several_runs_draws_one_curve_each_with_unique_labels(run_dir, tmp_path):
    import shutil

    from fedenergy.analysis.runs import find_runs

    for sub in ("a/x", "b/x", "sweep/fleet/seed0/fedavg", "sweep/fleet/seed0/utility"):
        (tmp_path / sub).mkdir(parents=True)
        shutil.copy(run_dir / "ledger.sqlite", tmp_path / sub / "ledger.sqlite")
    refs = find_runs([tmp_path / "a" / "x", tmp_path / "b" / "x" / "ledger.sqlite"])
    assert [r.label for r in refs] == [str(tmp_path / "a" / "x"), str(tmp_path / "b" / "x")]
    with pytest.raises(ValueError, match="no ledger"):
        find_runs([tmp_path / "empty"])
    # a directory of run directories: the report goes there, one curve per run below it
    assert main(["report", str(tmp_path / "sweep"), "--no-files"]) == 0
    assert not (tmp_path / "sweep" / "report.html").exists()
    assert main(["report", str(tmp_path / "sweep")]) == 0
    html = (tmp_path / "sweep" / "report.html").read_text()
    assert html.count('class="curve"') == 2
    assert 'data-run="fleet/seed0/fedavg"' in html and 'data-run="fleet/seed0/utility"' in html
    assert 'id="runs-table"' in html and html.count('class="run-devices"') == 1
    md = (tmp_path / "sweep" / "report.md").read_text()
    assert "## Regime" in md and "| infrastructure model | per-byte (0.059 kWh/GB) |" in md
    # per device class: one row per class of the fixture's nodes, in each run's table
    rows = html.count('class="device-row"')
    assert rows == 2 * len({(d, li) for d, li in _classes(run_dir)})
    # two run directories given explicitly: the report of the first, with both curves
    assert main(["report", str(tmp_path / "a" / "x"), str(tmp_path / "b" / "x")]) == 0
    assert (tmp_path / "a" / "x" / "report.html").read_text().count('class="curve"') == 2
    assert main(["report", str(tmp_path / "nothing-here")]) == 2


def _classes(run_dir):
    with Ledger(run_dir / "ledger.sqlite") as ledger:
        return {(r["device"], r["link"]) for r in ledger.energy_rows("run1")}


def test_per_device_breakdown_by_phase_sums_the_ledger_rows(run_dir):
    from fedenergy.analysis.breakdown import device_breakdown

    with Ledger(run_dir / "ledger.sqlite") as ledger:
        classes, phases = device_breakdown(ledger, "run1")
    assert phases == ["download", "train", "upload"]
    nodes = sum(len(c.nodes) for c in classes)
    assert nodes == NODES
    for c in classes:
        n = len(c.nodes)
        # per node: download (1.5 + rnd) J, train 0.01 * rnd J, upload 2.25 J, rounds 1..3
        assert c.by_phase["download"] == pytest.approx(n * (2.5 + 3.5 + 4.5))
        assert c.by_phase["train"] == pytest.approx(n * 0.06)
        assert c.by_phase["upload"] == pytest.approx(n * 3 * 2.25)
        assert c.unmetered_rows == 0


def test_svg_energy_axis_turns_logarithmic_for_curves_far_apart():
    import re

    from fedenergy.analysis.svg import Curve, accuracy_energy_svg

    near = accuracy_energy_svg([Curve("a", ((0.0, 0.1), (50.0, 0.5))), Curve("b", ((20.0, 0.6),))])
    assert 'data-scale="linear"' in near
    far = [Curve("a", ((10.0, 0.1), (100.0, 0.5))), Curve("b", ((0.0, 0.05), (5000.0, 0.9)))]
    svg = accuracy_energy_svg(far)
    assert 'data-scale="log"' in svg
    points = re.findall(r'class="curve" data-run="b" data-points="(\d+)" points="([^"]*)"', svg)
    assert points == [("1", points[0][1])]  # 0 J has no place on a log axis: left out
    # 10 J .. 10^4 J: 100 J sits a third of the way along the axis, 5000 J near its end
    xs = [
        float(p.split(",")[0])
        for p in re.search(r'data-run="a" data-points="2" points="([^"]*)"', svg)[1].split()
    ]
    width = 720 - 70 - 20
    assert xs[0] == pytest.approx(70, abs=0.1) and xs[1] == pytest.approx(70 + width / 3, abs=0.1)


def test_unmetered_rows_are_counted_per_device_class_not_added(tmp_path):
    from fedenergy.analysis.breakdown import device_breakdown

    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.start_run("r", Settings(nodes=2, rounds=1).as_dict(), {"name": "x"}, 0, {})
        ledger.add_nodes("r", [(1, 0, "phone", "lte"), (2, 1, "phone", "lte")])
        rows = [
            EnergyRow("1", "train", "train", None, 0, 0.2, "ok",
                      (Component("train", "compute", 0.0, "unmetered", "stock node"),)),
            EnergyRow("2", "train", "train", 0.5, 0, 0.2, "ok",
                      (Component("train", "compute", 0.5, "modeled", "m"),)),
        ]  # fmt: skip
        ledger.commit_round("r", 1, rows, 0.5, 1.0, 2, 2, 0)
        (phone,), phases = device_breakdown(ledger, "r")
    assert phases == ["train"] and phone.label == "phone/lte" and len(phone.nodes) == 2
    assert phone.by_phase == {"train": 0.5} and phone.unmetered_rows == 1
