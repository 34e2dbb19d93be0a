"""The public API in real Flower simulations, as a Flower user writes an app.

One simulation of four nodes runs a user-style ServerApp that starts several EnergyAware
strategies one after the other on the same grid: the README's snippet (FedAvg, accounting
only), FedAvg with utility selection and per-link compression, FedProx with random selection,
a user's FedAvg subclass with int8 updates, and a recording FedAvg subclass (accounting only)
whose sampling is compared with plain FedAvg's. The ClientApp is the README's, around a numpy
softmax regression on scikit-learn's digits. The code of docs/api.md runs as it is.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx, Result
from sklearn.datasets import load_digits

import fedenergy
from fedenergy import (
    EnergyAware,
    compress_reply,
    read_ledger,
    received_model,
    report_work,
)
from fedenergy.protocol import WORK_KEY
from fedenergy.sim.engine import prepare_environment

ROOT = Path(__file__).resolve().parents[1]
NODES, ROUNDS, STEPS = 4, 3, 10
X, Y = load_digits(return_X_y=True)
X = (X / 16).astype(np.float32)
TRAIN, TEST = slice(0, 1500), slice(1500, None)


# -- the user's own code: a numpy model, its training and evaluation ------------------------------
def model(w=None, b=None) -> ArrayRecord:
    w = np.zeros((64, 10), np.float32) if w is None else w
    b = np.zeros(10, np.float32) if b is None else b
    return ArrayRecord({"w": Array(w), "b": Array(b)})


def accuracy(arrays: ArrayRecord, x, y) -> float:
    return float(((x @ arrays["w"].numpy() + arrays["b"].numpy()).argmax(1) == y).mean())


def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    """The server-side evaluation (held-out digits)."""
    acc = accuracy(arrays, X[TEST], Y[TEST])
    return MetricRecord({"accuracy": acc, "loss": 1.0 - acc})


def _local(context):
    i, n = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    return X[TRAIN][i::n], Y[TRAIN][i::n]


def my_train(msg: Message, context) -> tuple[Message, int]:
    """The user's training: full-batch gradient descent; the update encoded as asked."""
    x, y = _local(context)
    start = received_model(msg, like=model())
    w, b = start["w"].numpy().copy(), start["b"].numpy().copy()
    loss = 0.0
    for _ in range(STEPS):
        z = x @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
        p[np.arange(len(y)), y] -= 1
        w -= x.T @ p / len(y)
        b -= p.mean(0)
    metrics = MetricRecord({"train-loss": loss, "num-examples": len(y)})
    reply = Message(RecordDict({"arrays": model(w, b), "metrics": metrics}), reply_to=msg)
    compress_reply(reply, msg, context)
    return reply, 6 * STEPS * len(y) * w.size


def my_evaluate(msg: Message, context) -> Message:
    x, y = _local(context)
    acc = accuracy(msg.content["arrays"], x, y)
    reply = Message(
        RecordDict({"metrics": MetricRecord({"eval-acc": acc, "num-examples": len(y)})}),
        reply_to=msg,
    )
    report_work(reply, 2 * len(y) * 640)
    return reply


# -- the user's own strategies ----------------------------------------------------------------
class UserFedAvg(FedAvg):
    """A user's FedAvg subclass: notes the arrays it aggregates."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.seen: list[tuple[int, list[list[str]]]] = []

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        self.seen.append((server_round, [list(m.content["arrays"].keys()) for m in replies]))
        return super().aggregate_train(server_round, replies)


class RecordingFedAvg(FedAvg):
    """FedAvg noting, each round, the random state, the grid's nodes and its sampling fields
    it samples with, and whom it picked."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.picks: list[dict] = []

    def configure_train(self, server_round, arrays, config, grid):
        state, seen = random.getstate(), sorted(grid.get_node_ids())
        fields = (self.fraction_train, self.min_train_nodes, self.min_available_nodes)
        msgs = list(super().configure_train(server_round, arrays, config, grid))
        ids = [m.metadata.dst_node_id for m in msgs]
        self.picks.append({"state": state, "seen": seen, "fields": fields, "ids": ids})
        return msgs


class CountingGrid:
    """The real grid, noting every message sent through it: (round, node, call)."""

    def __init__(self, grid) -> None:
        self.grid, self.sent = grid, []

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        for m in messages:
            rnd = int(m.content.config_records["config"]["server-round"])
            self.sent.append((rnd, str(m.metadata.dst_node_id), str(m.metadata.message_type)))
        return self.grid.send_and_receive(messages, timeout=timeout)

    def __getattr__(self, name):
        return getattr(self.grid, name)


# -- the README's blocks ----------------------------------------------------------------------
def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Add energy accounting to your Flower app")
    end = text.index("\n## ", start + 3)
    return _python_blocks(text[start:end])


def _readme_client_app():
    client_code, _ = readme_blocks()
    ns = {"__name__": "readme_client", "my_train": my_train}
    exec(compile(client_code, "README.md", "exec"), ns)
    app = ns["app"]
    app.evaluate()(my_evaluate)  # "do the same in your evaluate handler"
    return app


def _simulate(server_app, client_app) -> None:
    from flwr.simulation import run_simulation

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=NODES,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_gpus": 0, "logging_level": "error", "log_to_driver": False},
        },
    )


@pytest.fixture(scope="module")
def sim_env(tmp_path_factory):
    """Flower's state in a private FLWR_HOME; the Ray workers import this checkout (tests.*)."""
    prepare_environment()
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), old) if p)
    yield tmp_path_factory.mktemp("api")
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def runs(sim_env):
    tmp = sim_env
    out: dict = {}
    server = ServerApp()

    def run(name, grid, strategy: EnergyAware, **start):
        counting = CountingGrid(grid)
        result = strategy.start(counting, model(), num_rounds=ROUNDS, evaluate_fn=evaluate, **start)
        out[name] = {"result": result, "strategy": strategy, "sent": counting.sent}

    @server.main()
    def main(grid, context) -> None:
        try:
            # the README's server block, as it is, with the user's grid, model and evaluate_fn
            _, server_code = readme_blocks()
            counting = CountingGrid(grid)
            cwd = os.getcwd()
            os.chdir(tmp)  # its ledger path is relative
            try:
                ns = {"grid": counting, "initial_arrays": model(), "evaluate": evaluate}
                exec(compile(server_code, "README.md", "exec"), ns)
            finally:
                os.chdir(cwd)
            ns["strategy"].ledger_path = tmp / ns["strategy"].ledger_path
            out["readme"] = {"result": ns["result"], "strategy": ns["strategy"]}
            out["readme"]["sent"] = counting.sent
            fedavg = FedAvg(fraction_train=0.5, fraction_evaluate=0.5)
            run(
                "utility",
                grid,
                EnergyAware(
                    fedavg,
                    ledger=tmp / "utility.sqlite",
                    selector="utility",
                    compression="per-link",
                ),
            )
            out["utility"]["base"] = fedavg
            run(
                "fedprox",
                grid,
                EnergyAware(
                    FedProx(fraction_train=0.75, fraction_evaluate=0.0, proximal_mu=0.01),
                    ledger=tmp / "fedprox.sqlite",
                    selector="random",
                ),
                train_config=ConfigRecord({"lr": 0.1}),
            )
            user = UserFedAvg(fraction_train=0.5, fraction_evaluate=0.0)
            run(
                "subclass",
                grid,
                EnergyAware(
                    user, ledger=tmp / "subclass.sqlite", selector="greedy", compression="int8"
                ),
            )
            out["subclass"]["base"] = user
            rec = RecordingFedAvg(fraction_train=0.5, fraction_evaluate=0.5)
            run("accounting", grid, EnergyAware(rec, ledger=tmp / "accounting.sqlite"))
            out["accounting"]["base"] = rec
            # what plain FedAvg picks on the same grid from the same random state
            replays = []
            for rnd, pick in enumerate(rec.picks, start=1):
                random.setstate(pick["state"])
                plain = FedAvg(fraction_train=0.5, fraction_evaluate=0.5)
                msgs = plain.configure_train(rnd, model(), ConfigRecord(), grid)
                replays.append([m.metadata.dst_node_id for m in msgs])
            out["accounting"]["replays"] = replays
            out["grid_nodes"] = sorted(grid.get_node_ids())
        except BaseException as err:  # raised in the test, after the engine stopped
            out["error"] = err

    _simulate(server, _readme_client_app())
    if "error" in out:
        raise out["error"]
    return out


def _ledger(entry) -> tuple[sqlite3.Connection, str]:
    strategy = entry["strategy"]
    return sqlite3.connect(strategy.ledger_path), strategy.run_id


def _calls(entry) -> set[tuple[int, str, str]]:
    conn, run_id = _ledger(entry)
    # (a run-end row is no call: the radio tail after a node's last transfer, last round)
    q = (
        "SELECT DISTINCT round, node_id, call FROM energy WHERE run_id=? AND round > 0 "
        "AND call != 'run-end'"
    )
    return set(conn.execute(q, (run_id,)))


NAMES = ["readme", "utility", "fedprox", "subclass", "accounting"]


@pytest.mark.parametrize("name", NAMES)
def test_result_is_flowers_and_accuracy_rises(runs, name):
    result = runs[name]["result"]
    assert isinstance(result, Result)
    assert list(result.arrays.keys()) == ["w", "b"]
    assert sorted(result.train_metrics_clientapp) == [1, 2, 3]
    assert all("train-loss" in m for m in result.train_metrics_clientapp.values())
    served = result.evaluate_metrics_serverapp
    assert list(served) == [0, 1, 2, 3]  # evaluate_fn before round 1 and after each, as Flower
    assert served[0]["accuracy"] < 0.2
    assert served[3]["accuracy"] > served[0]["accuracy"] + 0.5
    assert served[3]["accuracy"] == pytest.approx(accuracy(result.arrays, X[TEST], Y[TEST]))
    conn, run_id = _ledger(runs[name])
    rounds = conn.execute(
        "SELECT round, accuracy FROM rounds WHERE run_id=? ORDER BY round", (run_id,)
    ).fetchall()
    assert rounds == [(r, served[r]["accuracy"]) for r in range(ROUNDS + 1)]
    assert conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone() == (
        "completed",
    )


@pytest.mark.parametrize("name", NAMES)
def test_the_ledger_has_a_row_for_every_call(runs, name):
    entry = runs[name]
    sent = set(entry["sent"])
    assert len(sent) == len(entry["sent"])  # one message per node and call a round
    assert _calls(entry) == sent
    conn, run_id = _ledger(entry)
    statuses = {s for (s,) in conn.execute("SELECT status FROM energy WHERE run_id=?", (run_id,))}
    assert statuses == {"ok"}
    assert conn.execute("SELECT COUNT(*) FROM rejections WHERE run_id=?", (run_id,)).fetchone() == (
        0,
    )
    per_round = conn.execute(
        "SELECT round, selected, succeeded FROM rounds WHERE run_id=? AND round > 0", (run_id,)
    ).fetchall()
    for rnd, selected, succeeded in per_round:
        trained = [s for s in sent if s[0] == rnd and s[2] == "train"]
        assert selected == succeeded == len(trained)
    # every train call moved the model both ways and computed
    q = (
        "SELECT phase, MIN(joules), MIN(bytes) FROM energy WHERE run_id=? AND call='train' "
        "GROUP BY phase"
    )
    phases = {p: (j, b) for p, j, b in conn.execute(q, (run_id,))}
    # (and started its ClientApp process: the start-up phase, settings.startup = "per-call")
    assert set(phases) == {"train", "startup", "download", "upload"}
    assert phases["download"][1] > 0 and phases["upload"][1] > 0
    assert phases["train"][0] > 0


def test_selection_takes_the_fractions_of_the_wrapped_strategy(runs):
    k = {"utility": (2, 2), "fedprox": (3, 0), "subclass": (2, 0)}
    for name, (train, evaluate_) in k.items():
        sent = runs[name]["sent"]
        for rnd in range(1, ROUNDS + 1):
            assert sum(1 for s in sent if s[0] == rnd and s[2] == "train") == train
            assert sum(1 for s in sent if s[0] == rnd and s[2] == "evaluate") == evaluate_
    # ... and gives them back after the run
    base = runs["utility"]["base"]
    assert (base.fraction_train, base.fraction_evaluate) == (0.5, 0.5)
    assert (base.min_train_nodes, base.min_available_nodes) == (2, 2)


def test_accounting_only_leaves_sampling_to_the_wrapped_strategy(runs):
    entry = runs["accounting"]
    assert entry["strategy"].accounting_only
    picks = entry["base"].picks
    assert len(picks) == ROUNDS
    for rnd, (pick, replay) in enumerate(zip(picks, entry["replays"], strict=True), start=1):
        assert pick["seen"] == runs["grid_nodes"]  # the whole grid, not a selection of it
        assert pick["fields"] == (0.5, 2, 2)  # its own fraction and minimums
        assert pick["ids"] == replay  # exactly whom FedAvg alone picks
        trained = {n for r, n, c in entry["sent"] if r == rnd and c == "train"}
        assert trained == {str(i) for i in pick["ids"]}
    # the README's accounting run: FedAvg's own fraction_evaluate (1.0) evaluates every node
    sent = runs["readme"]["sent"]
    for rnd in range(1, ROUNDS + 1):
        assert sum(1 for s in sent if s[0] == rnd and s[2] == "evaluate") == NODES
        assert sum(1 for s in sent if s[0] == rnd and s[2] == "train") == NODES // 2


def _mean_bytes(entry, phase: str) -> float:
    conn, run_id = _ledger(entry)
    q = "SELECT AVG(bytes) FROM energy WHERE run_id=? AND call='train' AND phase=?"
    return conn.execute(q, (run_id, phase)).fetchone()[0]


def test_compression_reaches_the_users_client_and_the_wrapped_strategy_sees_weights(runs):
    plain, per_link, int8 = runs["readme"], runs["utility"], runs["subclass"]
    # int8 updates: 2,600 bytes of float32 weights travel as ~700
    assert _mean_bytes(per_link, "upload") < _mean_bytes(plain, "upload") - 1500
    assert _mean_bytes(int8, "upload") < _mean_bytes(plain, "upload") - 1500
    # per-link compresses the global model too (int8); int8 alone leaves it as it is
    assert _mean_bytes(per_link, "download") < _mean_bytes(plain, "download") - 1500
    assert _mean_bytes(int8, "download") > _mean_bytes(per_link, "download") + 1500
    seen = runs["subclass"]["base"].seen
    assert [r for r, _ in seen] == [1, 2, 3]
    assert all(keys == [["w", "b"]] * 2 for _, keys in seen)  # decoded before aggregation


def test_read_ledger_of_a_run(runs):
    entry = runs["utility"]
    tables = read_ledger(entry["strategy"].ledger_path)
    assert tables.run_id == entry["strategy"].run_id
    calls = tables.calls()
    keys = set(zip(calls["round"], calls["node_id"], calls["call"], strict=True))
    ends = {k for k in keys if k[2] == "run-end"}  # each node's last radio tail, last round
    assert keys - ends == set(entry["sent"])
    assert ends and {k[0] for k in ends} == {ROUNDS}
    assert {k[1] for k in ends} <= {k[1] for k in entry["sent"]}  # (none where no tail)
    conn, run_id = _ledger(entry)
    total = conn.execute("SELECT SUM(joules) FROM energy WHERE run_id=?", (run_id,)).fetchone()[0]
    assert calls["joules"].sum() == pytest.approx(total, rel=1e-12)
    assert tables.rounds()["joules"].sum() == pytest.approx(total, rel=1e-12)
    assert tables.nodes()["joules"].sum() == pytest.approx(total, rel=1e-12)


def test_docs_api_code_runs(sim_env, monkeypatch):
    """Every python block of docs/api.md, in order, in one namespace (a small simulation)."""
    monkeypatch.chdir(sim_env)
    blocks = _python_blocks((ROOT / "docs" / "api.md").read_text())
    assert len(blocks) >= 4
    ns: dict = {"__name__": "docs_api"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/api.md block {i + 1}", "exec"), ns)
    rounds = ns["tables"].rounds()
    assert list(rounds["round"]) == [0, 1, 2, 3]
    assert rounds["accuracy"].iloc[-1] > 0.7
    assert (rounds["selected"].iloc[1:] == 2).all()  # fraction_train=0.5 of 4 nodes
    assert (rounds["joules"].iloc[1:] > 0).all()


# -- the small pieces -------------------------------------------------------------------------
def test_report_work_states_the_work_for_the_mod():
    content = RecordDict({"metrics": MetricRecord({"num-examples": 3})})
    report_work(content, 1234, kind="train")
    want = {"kind": "train", "flops": 1234, "steps": 0, "batch": 0, "threads": 0}
    assert dict(content[WORK_KEY]) == want  # steps, batch and threads: 0, not known
    report_work(content, 1234, kind="train", steps=15, batch=32, threads=1)
    assert dict(content[WORK_KEY]) == {**want, "steps": 15, "batch": 32, "threads": 1}
    for name in ("steps", "batch", "threads"):
        for bad in (-1, 1.5, True, "3"):
            with pytest.raises(ValueError, match=name):
                report_work(content, 1, kind="train", **{name: bad})
    with pytest.raises(ValueError, match="give kind="):
        report_work(content, 1)
    with pytest.raises(ValueError, match="kind must be one of"):
        report_work(content, 1, kind="fit")
    for bad in (-1, float("nan"), float("inf"), True, "12"):
        with pytest.raises(ValueError, match="flops"):
            report_work(content, bad, kind="train")


def test_wrapper_names_fail_at_construction():
    with pytest.raises(ValueError, match="unknown selector"):
        EnergyAware(FedAvg(), selector="fastest")
    with pytest.raises(ValueError, match="compression must be"):
        EnergyAware(FedAvg(), compression="zip")
    with pytest.raises(ValueError, match="unknown discovery"):
        EnergyAware(FedAvg(), discovery="ask")
    assert EnergyAware(FedAvg()).accounting_only
    assert not EnergyAware(FedAvg(), compression="fp16").accounting_only


def test_the_package_exports_the_api_and_imports_light():
    assert sorted(fedenergy.__all__) == sorted(["__version__", *fedenergy._EXPORTS])
    for name in fedenergy._EXPORTS:
        assert getattr(fedenergy, name) is not None
    code = "import sys, fedenergy; print(sorted({'torch', 'flwr'} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "[]", out.stderr
