"""Failures and crashes in real simulations (docs/robustness.md).

- the coordinator is killed with SIGKILL mid-run (process group, Ray included): the ledger opens
  with every committed round and the run's metadata, `fedenergy report` works on it, and
  `fedenergy simulate --resume` completes the run with every round exactly once;
- 30 % of the nodes fail at random: the run completes and the wasted energy is in the summary;
- every node fails: the run stops as failed with a message naming the cause.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fedenergy.cli import main
from fedenergy.ledger import CheckpointStore, Ledger
from fedenergy.server import RoundOutcome
from fedenergy.server.coordinator import RoundHealth, RunStopped
from fedenergy.settings import Settings

ROUNDS = 6
TAG = "FEDENERGY_CRASH_TEST_TAG"


def _tagged_pids(tag: str) -> list[int]:
    """Processes (ours: the simulation and every Ray process it started) whose environment
    carries ``tag``, found even if they left the process group."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if f"{TAG}={tag}".encode() in env.split(b"\0"):
            pids.append(int(d.name))
    return pids


def _kill_all(proc: subprocess.Popen, tag: str) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while (left := _tagged_pids(tag)) and time.monotonic() < deadline:
        for pid in left:  # Ray processes that started their own session
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    assert not _tagged_pids(tag), "processes of the killed run survived"


def _start(args: list[str], tmp: Path, tag: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        {
            TAG: tag,
            "FLWR_HOME": str(tmp / "flwr-home"),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "fedenergy.cli", *args],
        env=env,
        stdout=open(tmp / f"{tag}.log", "w"),  # noqa: SIM115  (closed with the process)
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _committed(ledger: Path) -> int:
    """Federated rounds (>= 1) committed so far, read without writing (0 if not readable)."""
    if not ledger.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT COUNT(*) FROM rounds WHERE round >= 1").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def test_sigkill_mid_run_leaves_a_readable_ledger_and_resume_completes_it(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["simulate", "--nodes", "4", "--rounds", str(ROUNDS), "--fraction", "0.5"]
    args += ["--fraction-evaluate", "0", "--seed", "3", "--out", str(out)]
    tag = uuid.uuid4().hex
    proc = _start(args, tmp_path, tag)
    try:
        deadline = time.monotonic() + 300
        while _committed(out / "ledger.sqlite") < 2:
            assert proc.poll() is None, (tmp_path / f"{tag}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no two committed rounds within 300 s"
            time.sleep(0.1)
    finally:
        _kill_all(proc, tag)
    assert proc.returncode == -signal.SIGKILL

    # the killed run's ledger: intact, every committed round complete, metadata present
    conn = sqlite3.connect(out / "ledger.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    (run_id, status, config, fleet, versions) = conn.execute(
        "SELECT run_id, status, config_json, fleet_json, versions_json FROM runs"
    ).fetchone()
    assert status == "running"  # killed: nobody could mark it
    assert json.loads(config)["rounds"] == ROUNDS and json.loads(fleet)["name"] == "mixed"
    assert "flwr" in json.loads(versions)
    rounds = [r for (r,) in conn.execute("SELECT round FROM rounds ORDER BY round")]
    assert rounds == list(range(len(rounds))) and 3 <= len(rounds) <= ROUNDS
    killed_at = rounds[-1]
    for rnd, joules in conn.execute("SELECT round, joules FROM rounds"):
        rows_j = conn.execute("SELECT SUM(joules) FROM energy WHERE round=?", (rnd,)).fetchone()[0]
        assert rows_j == pytest.approx(joules)
    tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "models" not in tables  # the models are checkpoints apart from the ledger
    conn.close()
    # the checkpoints of the last two committed rounds (checkpoint-keep 2), and at most the one
    # of the round in flight (written before its commit)
    kept = CheckpointStore.for_run(out, run_id).rounds()
    assert [r for r in kept if r <= killed_at] == rounds[-2:]
    assert [r for r in kept if r > killed_at] in ([], [killed_at + 1])

    # `fedenergy report` works on it
    capsys.readouterr()
    assert main(["report", str(out), "--json", "--no-files"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "running" and summary["rounds"] == killed_at
    assert main(["report", str(out)]) == 0  # tables, report.html, plots, exports
    assert (out / "report.html").exists()

    # resume: same run id, from the last committed round, to the end
    tag2 = uuid.uuid4().hex
    proc = _start(["simulate", "--resume", str(out)], tmp_path, tag2)
    try:
        proc.wait(timeout=400)
    finally:
        _kill_all(proc, tag2)
    log = (tmp_path / f"{tag2}.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert f"resuming run {run_id} after round {killed_at}" in log
    with Ledger(out / "ledger.sqlite") as ledger:
        runs = ledger.runs()
        assert [r["run_id"] for r in runs] == [run_id]
        assert runs[0]["status"] == "completed" and runs[0]["finished_at"] is not None
        rounds = ledger.rounds(run_id)
        assert [r["round"] for r in rounds] == list(range(ROUNDS + 1))  # each exactly once
        assert all(r["succeeded"] >= 1 for r in rounds[1:])
        assert [x["from_round"] for x in ledger.resumes(run_id)] == [killed_at]
        rows = ledger.energy_rows(run_id)
        # the resumed session's profile query is accounted in its first round
        assert {r["round"] for r in rows if r["call"] == "query"} == {0, killed_at + 1}
        assert ledger.last_round(run_id) == ROUNDS
        assert CheckpointStore.for_run(out, run_id).rounds() == [ROUNDS - 1, ROUNDS]
        total = ledger.totals(run_id)["total_j"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == ROUNDS and summary["status"] == "completed"
    assert summary["total_j"] == pytest.approx(total)
    assert summary["resumes"][0]["from_round"] == killed_at
    acc = [r["accuracy"] for r in summary["per_round"]]
    assert acc[-1] > acc[0] + 0.1  # training went on from the saved model


FLAKY = """
name = "flaky"
[[group]]
device = "rpi4"
link = "wifi"
fraction = 1.0
failure_prob = {p}
"""


def _simulate(tmp_path, p: float, *extra: str) -> tuple[int, Path]:
    fleet = tmp_path / f"flaky-{p}.toml"
    fleet.write_text(FLAKY.format(p=p))
    out = tmp_path / f"out-{p}"
    args = ["simulate", "--nodes", "6", "--rounds", "4", "--fraction", "1.0"]
    args += ["--fraction-evaluate", "0", "--seed", "5", "--fleet", str(fleet), "--out", str(out)]
    return main([*args, *extra]), out


def test_thirty_percent_of_nodes_failing_at_random_still_completes(tmp_path, capsys):
    code, out = _simulate(tmp_path, 0.3)
    printed = capsys.readouterr().out
    assert code == 0, printed[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 4
    failed = sum(r["failed"] for r in summary["per_round"])
    assert failed >= 2  # 6 nodes x 4 rounds x 0.3
    with Ledger(out / "ledger.sqlite") as ledger:
        rows = ledger.energy_rows(summary["run_id"])
    wasted = sum(r["joules"] for r in rows if r["status"] == "failed")
    assert wasted > 0 and summary["wasted_j"] == pytest.approx(wasted)
    assert "wasted (failed calls)" in printed
    assert summary["rejections"] == 0


def test_a_run_whose_nodes_all_fail_stops_with_the_cause(tmp_path, capsys):
    code, out = _simulate(tmp_path, 0.999, "--max-short-rounds", "2")
    printed = " ".join(capsys.readouterr().out.split())
    assert code == 1
    assert "run stopped after round 2: 2 short round(s) in a row" in printed
    assert "only 0 of 6 selected nodes returned a usable update" in printed
    with Ledger(out / "ledger.sqlite") as ledger:
        run = ledger.runs()[0]
        assert run["status"] == "failed"
        assert [r["round"] for r in ledger.rounds(run["run_id"])] == [0, 1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["wasted_j"] > 0 and summary["status"] == "failed"


class _Fleet:
    def __init__(self, online):
        self._online = online

    def online(self, rnd):
        return self._online


class _Strategy:
    def __init__(self, online):
        self.fleet = _Fleet(online)


def _outcome(rnd, selected, succeeded):
    return RoundOutcome(rnd, None, None, 1.0, selected, succeeded, selected - succeeded)


def test_round_health_counts_short_rounds_in_a_row():
    health = RoundHealth(Settings(min_nodes=3, max_short_rounds=2), _Strategy([1, 2]))
    health(_outcome(0, 0, 0))  # the profile query is not a training round
    health(_outcome(1, 5, 2))  # short
    health(_outcome(2, 5, 3))  # fine: the count starts again
    health(_outcome(3, 2, 2))  # fewer selected than min_nodes, all usable: fine
    health(_outcome(4, 0, 0))  # nobody selected (e.g. a budget) while nodes are online: fine
    health(_outcome(5, 5, 0))
    with pytest.raises(RunStopped, match="only 1 of 5 selected"):
        health(_outcome(6, 5, 1))
    offline = RoundHealth(Settings(max_short_rounds=1), _Strategy([]))
    with pytest.raises(RunStopped, match="no node was online"):
        offline(_outcome(1, 0, 0))
