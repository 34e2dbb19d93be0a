"""A real deployment on loopback (issue 6 acceptance): `flower-superlink` with TLS and SuperNode
authentication, four `flower-supernode` processes with registered keys and one with an
unregistered key, three rounds with `flwr run`, one SuperNode SIGKILLed in the middle of the run.
Three of the four keys are registered with a name that declares the node's profile
(``fe:DEVICE/LINK``); after the first run, a second, one-round run with ``discovery='declared'``
reads those names instead of querying the nodes.

One module-scoped fixture builds the deployment and runs it once; the tests below check its
outcome. It took 4.9-6.8 min on the 2-core development machine while other jobs kept its load at
8-13 (setup 21-32 s, `flwr run` 256-354 s); most of it is Flower starting a fresh `flwr-clientapp`
process (~5 CPU-s of imports) for each message (17 answered), and a killed node's round waits up to
60 s for the SuperLink's heartbeat timeout.

Every process started is stopped in the fixture's teardown, every wait is bounded, FLWR_HOME is
a temporary directory, telemetry, update checks and runtime dependency installation are off, and
everything binds to 127.0.0.1.

Set FEDENERGY_SKIP_DEPLOYMENT=1 to skip this module. See docs/deployment.md, §9 "Bytes: the
ledger and Flower's network-traffic counter", for the tolerance asserted in
test_ledger_bytes_agree_with_flowers_traffic_counter.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploy_helpers import (
    BIN,
    LOOPBACK,
    Deployment,
    Started,
    free_ports,
    make_certs,
    make_node_key,
    stage_project,
    wait_for,
    wait_port,
)

PROJECT = Path(__file__).resolve().parents[1]
ROUNDS = 3
# (name, node-config beyond partition-id/num-partitions); the last one is killed mid-run.
# tdp-w on the meter="auto" node: see FAB_DATA_FILES below (cpu_tdp.csv is not shipped in a FAB).
NODES = [
    ("rpi4-wifi", 'device="rpi4" link="wifi"'),
    ("phone-lte", 'device="phone" link="lte"'),
    ("laptop-ethernet", 'device="laptop" link="ethernet" meter="auto"'),
    ("pi5-wifi-victim", 'device="rpi5" link="wifi"'),
]
# The profile each node declares in its registration name (None: the name declares nothing).
DECLARED = ["fe:rpi4/wifi/FRA", "fe:phone/lte", None, "fe:rpi5/wifi"]
VICTIM = len(NODES) - 1
KILL_AFTER_ROUND = 1
RUN_TIMEOUT_S = 600
# The ledger counts what Flower's traffic counter counts (fedenergy/wire.py): within 2 % of it,
# per direction (docs/deployment.md §9).
BYTES_TOLERANCE = 0.02

pytestmark = pytest.mark.skipif(
    os.environ.get("FEDENERGY_SKIP_DEPLOYMENT") == "1"
    or not (BIN / "flower-superlink").exists()
    or not (BIN / "flower-supernode").exists(),
    reason="deployment test disabled (FEDENERGY_SKIP_DEPLOYMENT=1) or Flower binaries missing",
)


def _ledger_rounds(path: Path) -> list[int]:
    """Committed round numbers (read-only; the ServerApp is writing)."""
    if not path.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return [r[0] for r in con.execute("SELECT round FROM rounds ORDER BY round")]
        finally:
            con.close()
    except sqlite3.Error:
        return []


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    d = Deployment(root)
    t0 = time.monotonic()
    res: dict = {"root": root, "deployment": d}
    try:
        ca, cert, key = make_certs(root / "certs")
        link_port, *node_ports = free_ports(len(NODES) + 2)
        link = d.start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--host", LOOPBACK,
                "--port", str(link_port),
                "--ssl-ca-certfile", str(ca),
                "--ssl-certfile", str(cert),
                "--ssl-keyfile", str(key),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
            ],
        )  # fmt: skip
        wait_port(link_port, 60, link.proc)
        (d.home / "config.toml").write_text(
            '[superlink]\ndefault = "tls"\n\n'
            f'[superlink.tls]\naddress = "{LOOPBACK}:{link_port}"\nroot-certificates = "{ca}"\n'
        )
        # Register the keys (concurrently: each `flwr` call costs ~3 s of imports).
        keys = [make_node_key(root / f"node{i}") for i in range(len(NODES))]
        regs = [
            subprocess.Popen(
                [str(BIN / "flwr"), "supernode", "register", str(pub), "tls",
                 "--name", f"{name} {decl}" if decl else name],
                env=d.env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for (name, _), decl, (_, pub) in zip(NODES, DECLARED, keys, strict=True)
        ]  # fmt: skip
        res["register"] = [p.communicate(timeout=90)[0] for p in regs]
        assert all(p.returncode == 0 for p in regs), res["register"]

        def supernode(name: str, private: Path, port: int, cfg: str):
            return d.start(
                name,
                [
                    str(BIN / "flower-supernode"),
                    "--superlink", f"{LOOPBACK}:{link_port}",
                    "--root-certificates", str(ca),
                    "--auth-supernode-private-key", str(private),
                    "--host", LOOPBACK,
                    "--port", str(port),
                    "--node-config", cfg,
                ],
            )  # fmt: skip

        nodes = [
            supernode(name, priv, node_ports[i], f"partition-id={i} num-partitions=4 {cfg}")
            for i, ((name, cfg), (priv, _)) in enumerate(zip(NODES, keys, strict=True))
        ]
        rogue_priv, _ = make_node_key(root / "rogue")
        rogue = supernode("rogue", rogue_priv, node_ports[-1], "partition-id=0 num-partitions=4")
        res["setup_s"] = time.monotonic() - t0

        app = stage_project(PROJECT, root / "app")
        out = root / "out"  # absolute: the ServerApp runs in a subprocess of the superexec
        ledger = out / "ledger.sqlite"
        run_log = root / "logs" / "flwr-run.log"
        run_cfg = (
            f"num-server-rounds={ROUNDS} nodes={len(NODES)} fraction-train=1.0 "
            f"local-epochs=1 out='{out}'"
        )
        t_run = time.monotonic()
        run = start_run(d, "flwr-run", app, root, run_cfg, run_log)

        # Kill the victim as soon as round KILL_AFTER_ROUND is committed.
        wait_for(
            lambda: KILL_AFTER_ROUND in _ledger_rounds(ledger) or run.poll() is not None,
            RUN_TIMEOUT_S,
            f"round {KILL_AFTER_ROUND} in the ledger",
            interval_s=0.2,
        )
        assert run.poll() is None, (
            f"flwr run ended before the victim could be killed:\n{run_log.read_text()}"
        )
        res["listeners"] = d.listeners()
        d.kill(nodes[VICTIM])
        res["killed_at_s"] = time.monotonic() - t_run
        try:
            run.wait(timeout=max(1.0, RUN_TIMEOUT_S - (time.monotonic() - t_run)))
        except subprocess.TimeoutExpired:
            pytest.fail(f"flwr run did not finish in {RUN_TIMEOUT_S} s:\n{run_log.read_text()}")
        res["run_s"] = time.monotonic() - t_run
        res["run_rc"] = run.returncode
        res["run_log"] = run_log.read_text(errors="replace")
        try:
            rogue.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pass
        res["rogue_rc"] = rogue.proc.poll()
        res["rogue_log"] = rogue.text()
        res["ls"] = d.cli_json(["ls", "tls"])
        res["declared"] = declared_run(d, app, root)
        res["supernodes"] = d.cli_json(["supernode", "ls", "tls"])
        res["node_logs"] = [n.text() for n in nodes]
        res["ledger"] = ledger
        res["total_s"] = time.monotonic() - t0
        yield res
    finally:
        res["stubborn"] = d.stop_all()
        res["leftovers"] = d.leftovers()
        print(
            "\n[deployment] "
            + json.dumps(
                {k: res.get(k) for k in ("setup_s", "killed_at_s", "run_s", "total_s")}
                | {"declared_s": res.get("declared", {}).get("s")},
                default=str,
            )
        )
    # Reached only when the tests ran (not when set-up failed): nothing may be left running.
    assert not res["leftovers"], f"processes left running: {res['leftovers']}"


def start_run(
    d: Deployment, name: str, app: Path, root: Path, run_cfg: str, log_path: Path
) -> subprocess.Popen:
    """`flwr run APP tls --stream` with ``run_cfg``, logging to ``log_path``; tracked by ``d``."""
    with log_path.open("wb") as fh:
        run = subprocess.Popen(
            [str(BIN / "flwr"), "run", str(app), "tls", "--stream", "--run-config", run_cfg],
            env=d.env, cwd=root, stdout=fh, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    d.started.append(Started(name, run, log_path))
    return run


def declared_run(d: Deployment, app: Path, root: Path) -> dict:
    """A second run on the same deployment, one round, every live node training, profiles read
    from the registration names (``discovery='declared'``) instead of a QUERY."""
    out = root / "out-declared"
    log_path = root / "logs" / "flwr-run-declared.log"
    live = len(NODES) - 1  # the victim is dead
    cfg = (
        f"num-server-rounds=1 nodes={live} fraction-train=1.0 local-epochs=1 "
        f"discovery='declared' out='{out}'"
    )
    t0 = time.monotonic()
    run = start_run(d, "flwr-run-declared", app, root, cfg, log_path)
    try:
        run.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"declared run did not finish in {RUN_TIMEOUT_S} s:\n{log_path.read_text()}")
    return {
        "rc": run.returncode,
        "log": log_path.read_text(errors="replace"),
        "ledger": out / "ledger.sqlite",
        "ls": d.cli_json(["ls", "tls"]),
        "s": time.monotonic() - t0,
    }


@pytest.fixture(scope="module")
def db(deployment):
    con = sqlite3.connect(deployment["ledger"])
    con.row_factory = sqlite3.Row
    yield con
    con.close()


def _run(deployment) -> dict:
    runs = deployment["ls"]["runs"]  # listed before the declared run started
    assert len(runs) == 1, runs
    return runs[0]


def test_run_finished_completed(deployment, db):
    # `flwr run --stream` exits 0 even when the run fails: the status is what counts.
    assert deployment["run_rc"] == 0, deployment["run_log"]
    assert _run(deployment)["status"] == "finished:completed", deployment["run_log"]
    (status,) = db.execute("SELECT status FROM runs").fetchone()
    assert status == "completed"


def test_unregistered_supernode_is_refused(deployment):
    assert deployment["rogue_rc"] not in (None, 0), deployment["rogue_log"]
    assert "Failed to activate SuperNode" in deployment["rogue_log"]
    ids = {n["node-id"] for n in deployment["supernodes"]["nodes"]}
    assert len(ids) == len(NODES)


def test_nodes_table_has_every_supernodes_profile_from_the_query(deployment, db):
    got = {
        r["partition_id"]: (r["device"], r["link"])
        for r in db.execute("SELECT partition_id, device, link FROM nodes")
    }
    want = {
        i: tuple(re.search(rf'{k}="([^"]+)"', cfg).group(1) for k in ("device", "link"))
        for i, (_, cfg) in enumerate(NODES)
    }
    assert got == want
    registered = {n["node-id"] for n in deployment["supernodes"]["nodes"]}
    assert {r[0] for r in db.execute("SELECT node_id FROM nodes")} == registered


def test_declared_run_reads_profiles_from_registration_names(deployment):
    """The second run sends no QUERY: the nodes that declared a profile in their registration
    name are known from the start (device, link and declared country), their partition comes
    with their first reply; the laptop, whose name declares nothing, is learned from its
    first reply alone."""
    dec = deployment["declared"]
    assert dec["rc"] == 0, dec["log"]
    runs = sorted(dec["ls"]["runs"], key=lambda r: r.get("created-at", ""))
    assert len(runs) == 2 and all(r["status"] == "finished:completed" for r in runs), dec["log"]
    con = sqlite3.connect(dec["ledger"])
    try:
        (status,) = con.execute("SELECT status FROM runs").fetchone()
        calls = con.execute("SELECT DISTINCT call FROM energy").fetchall()
        round0 = con.execute("SELECT joules FROM rounds WHERE round=0").fetchone()
        nodes = {
            r[0]: r[1:]
            for r in con.execute("SELECT partition_id, device, link, country FROM nodes")
        }
        trained = {
            r[0]
            for r in con.execute(
                "SELECT n.partition_id FROM energy e JOIN nodes n USING (run_id, node_id) "
                "WHERE e.call='train' AND e.status='ok' AND e.round=1"
            )
        }
    finally:
        con.close()
    assert status == "completed"
    assert ("query",) not in calls and ("train",) in calls and round0 == (0.0,)
    assert nodes[0] == ("rpi4", "wifi", "FRA")  # the declared country
    assert nodes[1][:2] == ("phone", "lte")
    assert nodes[2][:2] == ("laptop", "ethernet")  # undeclared: from its own report
    assert trained == {0, 1, 2}


def test_every_surviving_node_has_rows_for_every_round(deployment, db):
    assert [r[0] for r in db.execute("SELECT round FROM rounds ORDER BY round")] == list(
        range(ROUNDS + 1)
    )
    pid = {r[0]: r[1] for r in db.execute("SELECT node_id, partition_id FROM nodes")}
    ok = {
        (pid[r[0]], r[1], r[2])
        for r in db.execute("SELECT node_id, round, call FROM energy WHERE status='ok'")
    }
    for p in range(len(NODES)):
        assert (p, 0, "query") in ok
        last = KILL_AFTER_ROUND if p == VICTIM else ROUNDS
        for rnd in range(1, last + 1):
            assert (p, rnd, "train") in ok, (p, rnd)
    # Every ok call has its download and upload rows (run-end rows are each node's last radio
    # tail, no call).
    for call in db.execute(
        "SELECT round, node_id, call, GROUP_CONCAT(phase) FROM energy WHERE status='ok' "
        "AND call != 'run-end' GROUP BY round, node_id, call"
    ):
        assert {"download", "upload"} <= set(call[3].split(",")), tuple(call)


def test_auto_meter_node_reports_modeled_compute(deployment, db):
    """meter="auto" on a host with no readable sensor falls back to the CPU model: `modeled`."""
    laptop = db.execute("SELECT node_id FROM nodes WHERE device='laptop'").fetchone()[0]
    comps = db.execute(
        "SELECT phase, provenance, source FROM components WHERE node_id=? AND domain='compute'",
        (laptop,),
    ).fetchall()
    assert comps
    assert {c["provenance"] for c in comps} == {"modeled"}
    assert any("cpu-tdp" in c["source"] for c in comps), [tuple(c) for c in comps]
    assert any(c["phase"] == "startup" for c in comps)  # the per-call process start-up cost
    # The other nodes (no meter="auto") keep the device model: modeled, no meter window.
    others = db.execute(
        "SELECT DISTINCT c.provenance, c.source FROM components c JOIN energy e USING "
        "(run_id, round, node_id, call, phase) "
        "WHERE c.node_id!=? AND c.domain='compute' AND e.status='ok'",
        (laptop,),
    ).fetchall()
    assert others
    for prov, source in others:
        assert prov == "modeled" and "process share" not in source, (prov, source)


def test_killed_supernode_is_recorded_as_failed(deployment, db):
    assert _run(deployment)["status"] == "finished:completed"
    after = db.execute(
        "SELECT round, failed FROM rounds WHERE round > ? AND failed >= 1", (KILL_AFTER_ROUND,)
    ).fetchall()
    assert after, [tuple(r) for r in db.execute("SELECT * FROM rounds")]
    victim = db.execute("SELECT node_id FROM nodes WHERE partition_id=?", (VICTIM,)).fetchone()[0]
    failed = db.execute(
        "SELECT round, node_id, call, phase, joules FROM energy WHERE status='failed'"
    ).fetchall()
    assert failed, "no status='failed' energy row"
    assert {r["node_id"] for r in failed} == {victim}
    assert all(r["round"] > KILL_AFTER_ROUND for r in failed)


def test_ledger_bytes_agree_with_flowers_traffic_counter(deployment, db):
    """Flower counts, per run, PushMessages/PullMessages request and response sizes plus every
    object pushed or pulled; the ledger counts the same (fedenergy/wire.py): within 2 % per
    direction. The victim may have pulled one message it never answered before it was killed:
    Flower counted that pull, the ledger holds it only as a failed row (the server's estimate
    of what it sent), so the outbound side is compared with the ledger's answered bytes plus
    none or one of those failed downloads, whichever is closer."""
    traffic = _run(deployment)["network-traffic"]
    down, up = (
        db.execute(
            "SELECT COALESCE(SUM(bytes), 0) FROM energy WHERE status='ok' AND phase=?", (p,)
        ).fetchone()[0]
        for p in ("download", "upload")
    )
    unanswered = [
        r[0]
        for r in db.execute("SELECT bytes FROM energy WHERE status='failed' AND phase='download'")
    ]
    inbound, outbound = traffic["inbound-bytes"], traffic["outbound-bytes"]
    ledger_out = min((down, *(down + b for b in unanswered)), key=lambda x: abs(outbound - x))
    print(
        f"\n[deployment] ledger down {down} B (with an unanswered pull: {ledger_out} B) up "
        f"{up} B; Flower outbound {outbound} B inbound {inbound} B; ratios "
        f"{outbound / ledger_out:.4f} {inbound / up:.4f}"
    )
    assert abs(inbound - up) <= BYTES_TOLERANCE * inbound
    assert abs(outbound - ledger_out) <= BYTES_TOLERANCE * outbound


def test_everything_listens_on_loopback_only(deployment):
    listeners = deployment["listeners"]
    assert listeners, "no listening socket seen"
    assert {ip for ip, _ in listeners} == {LOOPBACK}, listeners


# -- the FAB that `flwr run` ships to every SuperNode -------------------------------------------
@functools.cache
def _fab_names() -> frozenset[str]:
    import io
    import tempfile
    import zipfile

    from flwr.cli.build import build_fab_from_disk

    with tempfile.TemporaryDirectory() as tmp:
        fab = build_fab_from_disk(stage_project(PROJECT, Path(tmp) / "app"))
    with zipfile.ZipFile(io.BytesIO(fab)) as z:
        return frozenset(z.namelist())


def test_fab_ships_the_server_and_client_code():
    names = _fab_names()
    for path in (
        "server/app.py",
        "client/app.py",
        "fedenergy/client/mod.py",
        "fedenergy/data/devices.toml",
    ):
        assert path in names, path


def test_fab_ships_every_package_data_file():
    """Deployed nodes import the FAB's copy of fedenergy (it shadows the installed package), so
    every data file the package reads at run time must be in the FAB."""
    names = _fab_names()
    data = [
        p.relative_to(PROJECT).as_posix()
        for pkg in ("fedenergy", "server", "client")
        for p in (PROJECT / pkg).rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert data
    missing = sorted(set(data) - names)
    assert not missing, f"not shipped in the FAB: {missing}"
