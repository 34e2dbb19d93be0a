"""A simulation on a real Ray cluster started on 127.0.0.1: a head and one worker node.

Both nodes are `ray start --block` processes in their own sessions and temporary directories;
every wait is bounded and every process started here is stopped at the end (the head, the
worker and whatever they spawned). The run on the cluster must write the same ledger as the
same seeded run in one process, and the worker node must have run clients.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
RAY = BIN / "ray"
pytestmark = pytest.mark.skipif(not RAY.exists(), reason="the ray command is not installed")

ENV = {
    **os.environ,
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "FLWR_TELEMETRY_ENABLED": "0",
}
ARGS = ["--nodes", "4", "--rounds", "2", "--seed", "3", "--fleet", "mixed"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(RAY), "start", "--block", "--disable-usage-stats", *args],
        env=ENV,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as a whole below
    )


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"ray start did not report {text!r}:\n{log.read_text()[-3000:]}")


def _stop(procs: list[subprocess.Popen], tmp: str) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
    # anything the nodes spawned outside their groups names the cluster's temporary directory
    out = subprocess.run(["pgrep", "-f", tmp], capture_output=True, text=True)
    for pid in out.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


@pytest.fixture(scope="module")
def cluster():
    tmp = tempfile.mkdtemp(prefix="fe-ray-", dir="/tmp")  # short: Ray's socket paths are long
    head_dir, worker_dir = Path(tmp, "h"), Path(tmp, "w")
    port = _free_port()
    procs: list[subprocess.Popen] = []
    try:
        head_log = Path(tmp, "head.log")
        procs.append(
            _start(
                ["--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                 "--num-cpus", "1", "--num-gpus", "0", "--include-dashboard", "false",
                 "--temp-dir", str(head_dir)],
                head_log,
            )
        )  # fmt: skip
        _wait_for(head_log, "Ray runtime started", procs[0])
        worker_log = Path(tmp, "worker.log")
        procs.append(
            _start(
                ["--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
                 "--num-cpus", "1", "--num-gpus", "0", "--temp-dir", str(worker_dir)],
                worker_log,
            )
        )  # fmt: skip
        _wait_for(worker_log, "Ray runtime started", procs[1])
        yield f"127.0.0.1:{port}", worker_dir
    finally:
        _stop(procs, tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _simulate(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "fedenergy"), "simulate", *ARGS, "--out", str(out), *extra],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=400,
    )


def _rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as c:
        cols = [r[1] for r in c.execute("pragma table_info(energy)")]
        keep = [i for i, n in enumerate(cols) if n not in ("run_id", "id", "ts")]
        return sorted(tuple(r[i] for i in keep) for r in c.execute("select * from energy"))


def test_cluster_run_writes_the_single_process_ledger(cluster, tmp_path):
    address, worker_dir = cluster
    on_cluster = _simulate(tmp_path / "cluster", "--ray-address", address)
    assert on_cluster.returncode == 0, on_cluster.stdout[-3000:] + on_cluster.stderr[-3000:]
    assert "the cluster's workers are not metered" in on_cluster.stdout
    local = _simulate(tmp_path / "local")
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    a = _rows(tmp_path / "cluster" / "ledger.sqlite")
    b = _rows(tmp_path / "local" / "ledger.sqlite")
    assert len(a) > 0 and a == b
    # the worker node ran Python workers (the clients' actors): its session has their logs
    assert list(worker_dir.glob("session_*/logs/worker-*.out")) or list(
        worker_dir.glob("session_*/logs/python-core-worker-*.log")
    ), "no client ran on the worker node"


def test_a_cluster_without_gpus_is_refused_with_the_reason(cluster, tmp_path):
    address, _ = cluster
    done = _simulate(tmp_path / "gpu", "--ray-address", address, "--gpus-per-client", "0.5")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "each needs 0.5 GPU, the cluster has 0 GPU" in " ".join(done.stdout.split())
    assert not (tmp_path / "gpu" / "ledger.sqlite").exists()


def test_an_unreachable_cluster_is_refused_with_the_reason(tmp_path):
    done = _simulate(tmp_path / "none", "--ray-address", f"127.0.0.1:{_free_port()}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot connect to the Ray cluster" in " ".join(done.stdout.split())
