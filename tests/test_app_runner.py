"""`fedenergy simulate --app DIR`: a user's Flower app directory on a simulated fleet.

One real Flower simulation runs the example app (examples/quickstart-energy: Flower's PyTorch
quickstart, a CNN with BatchNorm and dropout on generated 32x32x3 images, fedenergy used only
through its public API) through the CLI on 4 nodes for 2 rounds; the tests read its output and
ledger. The same app then runs under `flwr run` (a local SuperLink, 2 simulated SuperNodes, 1
round). Bad app directories are refused before anything runs, naming the file and key.

The example's handlers state no work (no report_work): their compute is either modeled (the
energy mod counts it) or booked unmetered (no report: a stock node), never a silent 0 J.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.serverapp.strategy import FedAvg

from fedenergy import EnergyAware
from fedenergy.cli import main
from fedenergy.plan import plan_run
from fedenergy.server.wrapper import DEFAULT_LEDGER, OUT_ENV
from fedenergy.settings import Settings
from tests.deploy_helpers import BIN, LOCAL_SUPERLINK_PORT, LOOPBACK, Deployment
from tests.example_cnn import BACKWARD, FORWARD, PARAMS, Net, train_flops

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "quickstart-energy"
NODES, ROUNDS = 4, 2


def _cli(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def app_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("app") / "out"
    argv = ["simulate", "--app", str(APP), "--nodes", str(NODES), "--rounds", str(ROUNDS)]
    code, text = _cli([*argv, "--out", str(out)])
    return {"code": code, "text": " ".join(text.split()), "out": out}


@pytest.fixture(scope="module")
def db(app_run):
    conn = sqlite3.connect(app_run["out"] / "ledger.sqlite")
    yield conn
    conn.close()


def _calls(conn: sqlite3.Connection, run_id: str) -> dict:
    """{(round, node, call): {phase: bytes}} of the run's energy rows."""
    calls: dict = {}
    for rnd, node, call, phase, nbytes in conn.execute(
        "SELECT round, node_id, call, phase, bytes FROM energy WHERE run_id=? "
        "AND call != 'run-end'",  # the radio tails after each node's last transfer: no calls
        (run_id,),
    ):
        calls.setdefault((rnd, node, call), {})[phase] = nbytes
    return calls


def _assert_every_call_booked(conn: sqlite3.Connection, run_id: str, rounds: int, per_call: int):
    """Each round has ``per_call`` train and ``per_call`` evaluate calls, each with download and
    upload rows carrying bytes and its compute either modeled (> 0 J) or unmetered (NULL)."""
    calls = _calls(conn, run_id)
    per_round = Counter((rnd, call) for rnd, _, call in calls)
    expected = {(r, c): per_call for r in range(1, rounds + 1) for c in ("train", "evaluate")}
    assert per_round == expected
    for (rnd, node, call), phases in calls.items():
        # the start-up of its ClientApp process too (settings.startup = "per-call")
        assert set(phases) == {"download", call, "startup", "upload"}, (rnd, node, call)
        assert phases["download"] > 10_000 and phases["upload"] > 100  # the model / the metrics
        if call == "train":
            assert phases["upload"] > 10_000  # the update
    compute = conn.execute(
        "SELECT provenance, joules FROM components WHERE run_id=? AND domain='compute' "
        "AND phase != 'startup'",
        (run_id,),
    ).fetchall()
    assert len(compute) == len(calls)
    startup = conn.execute(
        "SELECT provenance, joules FROM components WHERE run_id=? AND phase='startup'", (run_id,)
    ).fetchall()
    # modeled on every call: the profile's start-up time (0 J on phones, whose client runs in
    # the app)
    assert len(startup) == len(calls)
    assert all(p == "modeled" and j is not None and j >= 0 for p, j in startup)
    for provenance, joules in compute:
        assert (provenance == "unmetered" and joules is None) or (
            provenance in ("modeled", "measured") and joules is not None and joules > 0
        ), (provenance, joules)


def test_the_app_runs_and_prints_progress_and_summary(app_run):
    text = app_run["text"]
    assert app_run["code"] == 0, text
    assert "quickstart_energy.server_app:app" in text and f"on {NODES} nodes" in text
    for rnd in range(1, ROUNDS + 1):
        assert f"round {rnd}/{ROUNDS}: acc" in text  # the live line of each committed round
    assert "Energy of run" in text and "Per round" in text and "provenance:" in text
    assert f"ledger: {app_run['out'] / 'ledger.sqlite'}" in text


def test_the_ledger_books_every_call_of_the_app(app_run, db):
    ((run_id, status, config),) = db.execute("SELECT run_id, status, config_json FROM runs")
    assert status == "completed"
    config = json.loads(config)
    assert (config["api"], config["strategy"], config["rounds"]) == ("EnergyAware", "FedAvg", 2)
    # FedAvg's sampling: fraction 0.5 of 4 nodes, at least min_*_nodes = 2
    _assert_every_call_booked(db, run_id, ROUNDS, 2)


def test_the_nodes_declare_their_fleet_profiles(db):
    profiles = plan_run(Settings(nodes=NODES, fleet="mixed", seed=0)).profiles
    booked = Counter(db.execute("SELECT device, link FROM nodes"))
    assert booked == Counter((p.device.id, p.link.id) for p in profiles)


def test_the_server_accuracy_rises(db):
    acc = dict(db.execute("SELECT round, accuracy FROM rounds"))
    assert sorted(acc) == [0, 1, 2]  # --rounds 2 became the app's num-server-rounds
    assert acc[2] > acc[0] + 0.2


def _phase_flops(conn: sqlite3.Connection, call: str) -> list[float]:
    """The FLOPs behind each ``call``'s modeled compute, as the ledger books them: the compute
    component's source names the work the model was given (``...; N FLOP, S steps, ...``)."""
    rows = conn.execute(
        "SELECT source FROM components WHERE call = ? AND phase = ? AND domain = 'compute'",
        (call, call),
    ).fetchall()
    return [float(re.search(r"; (\d+) FLOP", source).group(1)) for (source,) in rows]


def test_a_train_call_is_counted_within_2_percent_of_the_cnns_analytic_count(db):
    """Each node holds 200 generated images (examples-per-node), 20 % of them its test split
    (datasets' train_test_split: ceil(0.2 x 200) = 40): 160 to train on, batches of 32, one
    local epoch. The analytic count (tests/example_cnn.py) against the FLOPs the energy mod
    counted, as the ledger books them; an evaluate call is 40 forward passes."""
    expected = train_flops(samples=160, batch=32, epochs=1)
    assert expected == 5 * (32 * (FORWARD + BACKWARD) + 2 * PARAMS)
    train = _phase_flops(db, "train")
    assert len(train) == ROUNDS * 2
    for flops in train:
        assert flops == pytest.approx(expected, rel=0.02)
    evaluate = _phase_flops(db, "evaluate")
    assert len(evaluate) == ROUNDS * 2
    for flops in evaluate:
        assert flops == pytest.approx(40 * FORWARD, rel=0.02)


def test_the_examples_train_call_is_bit_identical_with_and_without_the_mod():
    """The example's own train handler, called directly and inside energy_mod from the same
    torch seed: the same weights and BatchNorm buffers (running mean and variance, batches
    tracked) in the reply, and the same random state after (shuffling, dropout)."""
    import tomllib

    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity
    from quickstart_energy.client_app import train

    from fedenergy import energy_mod
    from fedenergy.protocol import REPORT_KEY

    config = tomllib.loads((APP / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 7, 1
    torch.manual_seed(0)
    content = RecordDict(
        {
            "arrays": ArrayRecord(Net().state_dict()),
            "config": ConfigRecord({"lr": 0.05, "server-round": 1, "fe-device": "rpi4"}),
        }
    )
    msg = Message(content, message_type=MessageType.TRAIN, dst_node_id=7)
    ctx = Context(7, 7, {"partition-id": 1, "num-partitions": NODES}, RecordDict(), config)
    replies, states = [], []
    for handler in (train, lambda m, c: energy_mod(m, c, train)):
        torch.manual_seed(123)
        replies.append(handler(msg, ctx))
        states.append(torch.get_rng_state())
    plain, metered = (r.content["arrays"] for r in replies)
    assert REPORT_KEY in replies[1].content and REPORT_KEY not in replies[0].content
    assert plain.keys() == metered.keys()
    assert {"bn1.running_mean", "bn1.running_var", "bn2.num_batches_tracked"} <= set(plain)
    assert int(plain["bn2.num_batches_tracked"].numpy()) == 5  # 160 images, batches of 32
    for key in plain:
        assert np.array_equal(plain[key].numpy(), metered[key].numpy()), key
    assert torch.equal(states[0], states[1])


def test_summary_and_report_read_the_apps_ledger(app_run, db):
    out = app_run["out"]
    summary = json.loads((out / "summary.json").read_text())
    ((run_id,),) = db.execute("SELECT run_id FROM runs")
    total = db.execute("SELECT SUM(joules) FROM energy").fetchone()[0]
    assert summary["run_id"] == run_id and summary["status"] == "completed"
    assert summary["total_j"] == pytest.approx(total)
    code, text = _cli(["report", str(out), "--json", "--no-files"])
    assert code == 0 and json.loads(text)["total_j"] == pytest.approx(total)


def test_the_default_ledger_follows_fedenergy_out(monkeypatch, tmp_path):
    monkeypatch.setenv(OUT_ENV, str(tmp_path))
    assert EnergyAware(FedAvg()).ledger_path == tmp_path / "ledger.sqlite"
    assert EnergyAware(FedAvg(), ledger="x.sqlite").ledger_path == Path("x.sqlite")
    monkeypatch.delenv(OUT_ENV)
    assert EnergyAware(FedAvg()).ledger_path == Path(DEFAULT_LEDGER)


def test_a_batchnorm_counter_passes_the_reply_check_but_integer_weights_do_not():
    """BatchNorm's num_batches_tracked is an int64 scalar; Flower's FedAvg averages it into a
    float64, so the next round's int64 update meets a float64 global."""
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedenergy.codecs import PayloadError
    from fedenergy.server.reply_checks import check_reply

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    global_arrays = {"w": np.zeros((2, 3), np.float32), "bn.n": np.array(4.5)}

    def reply(w: np.ndarray) -> Message:
        arrays = ArrayRecord({"w": Array(w), "bn.n": Array(np.array(7, np.int64))})
        metrics = MetricRecord({"num-examples": 3})
        content = RecordDict({"arrays": arrays, "metrics": metrics})
        return Message(content, dst_node_id=1, message_type="train")

    check_reply(reply(np.ones((2, 3), np.float32)), "train", None, global_arrays)
    with pytest.raises(PayloadError, match="update array 'w': int32"):
        check_reply(reply(np.ones((2, 3), np.int32)), "train", None, global_arrays)


# -- bad app directories: refused before anything runs ----------------------------------------
SERVER_MODULE = "from flwr.serverapp import ServerApp\n\napp = ServerApp()\n"
GOOD_COMPONENTS = '[tool.flwr.app.components]\nserverapp = "myapp.server:app"\n'
PYPROJECTS = {
    "no-app": ('[project]\nname = "x"\n', "has no [tool.flwr.app] table"),
    "no-components": (
        '[tool.flwr.app]\npublisher = "me"\n[tool.flwr.app.config]\nlr = 0.1\n',
        "has no [tool.flwr.app.components] table",
    ),
    "no-clientapp": (GOOD_COMPONENTS, "[tool.flwr.app.components] has no clientapp key"),
    "not-importable": (
        GOOD_COMPONENTS + 'clientapp = "nowhere.client:app"\n',
        "[tool.flwr.app.components] clientapp = 'nowhere.client:app' does not import: "
        "ModuleNotFoundError",
    ),
    "no-attribute": (
        GOOD_COMPONENTS + 'clientapp = "myapp.server:client"\n',
        "clientapp = 'myapp.server:client': module 'myapp.server' has no attribute 'client'",
    ),
    "wrong-kind": (
        GOOD_COMPONENTS + 'clientapp = "myapp.server:app"\n',
        "clientapp = 'myapp.server:app' is a ServerApp, not a ClientApp",
    ),
    "not-a-ref": (GOOD_COMPONENTS + 'clientapp = "myapp"\n', "expected 'module:attribute'"),
    "not-toml": ("[tool.flwr.app\n", "is not valid TOML"),
}


def _write_app(root: Path, pyproject: str | None) -> Path:
    app = root / "app"
    (app / "myapp").mkdir(parents=True)
    (app / "myapp" / "__init__.py").write_text("")
    (app / "myapp" / "server.py").write_text(SERVER_MODULE)
    if pyproject is not None:
        (app / "pyproject.toml").write_text(pyproject)
    return app


def _refused(app: Path, tmp_path: Path, *extra: str) -> str:
    out = tmp_path / "out"
    code, text = _cli(["simulate", "--app", str(app), "--out", str(out), *extra])
    assert code == 2, text
    assert not out.exists()  # nothing ran, nothing written
    return " ".join(text.split())


@pytest.mark.parametrize("case", sorted(PYPROJECTS))
def test_a_bad_pyproject_is_refused_naming_file_and_key(case, tmp_path):
    body, message = PYPROJECTS[case]
    app = _write_app(tmp_path, body)
    text = _refused(app, tmp_path)
    assert str(app / "pyproject.toml") in text and message in text


def test_a_directory_without_pyproject_is_refused(tmp_path):
    app = _write_app(tmp_path, None)
    assert f"no pyproject.toml in {app}" in _refused(app, tmp_path)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--run-config", "epochs=3"], "'epochs' not declared in [tool.flwr.app.config]"),
        (["--run-config", "lr=[1"], "--run-config:"),
        (["--rounds", "2"], "--rounds sets num-server-rounds, which [tool.flwr.app.config]"),
        (["--rounds", "0"], "rounds must be a positive integer"),
        (["--fleet", "nowhere"], "unknown fleet 'nowhere'"),
    ],
)
def test_bad_overrides_are_refused(extra, message, tmp_path):
    body = GOOD_COMPONENTS + 'clientapp = "x:y"\n[tool.flwr.app.config]\nlr = 0.1\n'
    text = _refused(_write_app(tmp_path, body), tmp_path, *extra)
    assert message in text


# -- the same app under `flwr run` ------------------------------------------------------------
def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex((LOOPBACK, port)) == 0


@pytest.mark.skipif(
    os.environ.get("FEDENERGY_SKIP_DEPLOYMENT") == "1" or not (BIN / "flwr").exists(),
    reason="`flwr run` tests disabled (FEDENERGY_SKIP_DEPLOYMENT=1) or Flower's CLI missing",
)
def test_the_example_runs_under_flwr_run(tmp_path):
    if _port_busy(LOCAL_SUPERLINK_PORT):
        pytest.skip(f"something listens on the local SuperLink's port {LOCAL_SUPERLINK_PORT}")
    app = shutil.copytree(APP, tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    d = Deployment(tmp_path)
    d.env[OUT_ENV] = str(tmp_path / "out")  # the example's EnergyAware writes its ledger there
    try:
        run_args = ["run", str(app), "--stream", "--run-config", "num-server-rounds=1"]
        log = d.cli(run_args, timeout_s=300)
    finally:
        stubborn = d.stop_all()
    assert not stubborn and not d.leftovers()
    with contextlib.closing(sqlite3.connect(tmp_path / "out" / "ledger.sqlite")) as conn:
        ((run_id, status),) = conn.execute("SELECT run_id, status FROM runs")
        assert status == "completed", log
        assert [r for (r,) in conn.execute("SELECT round FROM rounds ORDER BY round")] == [0, 1]
        _assert_every_call_booked(conn, run_id, 1, 2)  # Flower's 2 simulated SuperNodes
