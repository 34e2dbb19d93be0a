"""Model checkpoints apart from the ledger (fedenergy.ledger.checkpoints): atomic files, last-N
retention, the crash window between a checkpoint and its round's commit, legacy ledgers, and a
resume that is still exact."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedenergy.ledger import CheckpointStore, Ledger, committed_model, model_to_npz
from fedenergy.plan import plan_run
from fedenergy.server.coordinator import server_evaluator
from fedenergy.settings import Settings
from fedenergy.sim.engine import simulate
from fedenergy.sim.resume import load_run, resume

ROUNDS = 5
CRASH_ROUND = 3  # its checkpoint is written, its ledger commit fails


def _model(value: float) -> dict[str, np.ndarray]:
    return {
        "w": np.full((3, 2), value, dtype=np.float32),
        "b": np.arange(4, dtype=np.float64) * value,
        "steps": np.array([7], dtype=np.int64),
    }


def _same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a
    )


# -- the store ------------------------------------------------------------------------------
def test_a_checkpoint_reads_back_as_written_and_leaves_no_temporary_file(tmp_path):
    store = CheckpointStore(tmp_path / "ck")
    assert store.rounds() == [] and store.load(0) is None
    path = store.save(0, _model(1.5))
    assert path == tmp_path / "ck" / "round-0.npz"
    assert _same(store.load(0), _model(1.5))
    store.save(0, _model(2.0))  # replaced whole
    assert _same(store.load(0), _model(2.0))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["round-0.npz"]


def test_retention_keeps_the_last_committed_rounds_and_never_an_uncommitted_one(tmp_path):
    store = CheckpointStore(tmp_path / "ck", keep_last=2)
    for r in range(ROUNDS):  # as the coordinator does: save, commit, retain
        store.save(r, _model(r))
        store.retain(r)
    assert store.rounds() == [3, 4]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["round-3.npz", "round-4.npz"]
    store.save(5, _model(5))  # the crash window: written, not committed yet
    assert store.retain(4) == [] and store.rounds() == [3, 4, 5]
    one = CheckpointStore(tmp_path / "one", keep_last=1)
    one.save(0, _model(0))
    one.retain(0)
    one.save(1, _model(1))  # round 1 not committed: round 0 must stay
    assert one.rounds() == [0, 1]
    one.retain(1)
    assert one.rounds() == [1]
    everything = CheckpointStore(tmp_path / "all", keep_last=0)
    for r in range(ROUNDS):
        everything.save(r, _model(r))
        everything.retain(r)
    assert everything.rounds() == list(range(ROUNDS))


def test_discarding_uncommitted_checkpoints_and_crash_leftovers(tmp_path):
    store = CheckpointStore(tmp_path / "ck", keep_last=0)
    for r in range(4):
        store.save(r, _model(r))
    leftover = tmp_path / "ck" / ".round-4.npz.999.tmp"  # a crash while writing round 4
    leftover.write_bytes(b"half a file")
    assert store.rounds() == [0, 1, 2, 3]
    assert store.discard_after(1) == [2, 3]
    assert store.rounds() == [0, 1] and not leftover.exists()
    assert store.discard_after(None) == [0, 1] and store.rounds() == []


@pytest.mark.parametrize("keep", [-1, True, 1.5])
def test_a_bad_retention_is_refused(tmp_path, keep):
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointStore(tmp_path, keep_last=keep)


# -- the ledger keeps no model; a ledger that did still resumes --------------------------------
def _legacy_ledger(out, settings: Settings, models: dict[int, dict]) -> str:
    """A ledger as the previous version wrote it: the models in its ``models`` table."""
    config = settings.as_dict()
    config.pop("checkpoint_keep")  # the previous version had no such setting
    with Ledger(out / "ledger.sqlite") as ledger:
        ledger.start_run("old", config, {"name": "mixed"}, settings.seed, {})
        for r in range(3):
            ledger.commit_round("old", r, [], 0.1 * r, 1.0, 0, 0, 0)
        ledger.conn.execute(
            "CREATE TABLE models (run_id TEXT NOT NULL, round INTEGER NOT NULL, "
            "npz BLOB NOT NULL, PRIMARY KEY (run_id, round))"
        )
        with ledger.conn:
            ledger.conn.executemany(
                "INSERT INTO models VALUES (?,?,?)",
                [("old", r, model_to_npz(m)) for r, m in models.items()],
            )
    return "old"


def test_a_new_ledger_has_no_models_table(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        tables = {
            t for (t,) in ledger.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        assert "models" not in tables and "rounds" in tables
        assert ledger.legacy_model("r", 0) is None


def test_a_legacy_ledger_resumes_from_its_models_table(tmp_path):
    settings = Settings(out=str(tmp_path))
    run_id = _legacy_ledger(tmp_path, settings, {1: _model(1), 2: _model(2)})
    store = CheckpointStore.for_run(tmp_path, run_id)
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        assert _same(committed_model(ledger, store, run_id, 2), _model(2))
        store.save(2, _model(9))  # a checkpoint, where there is one, comes first
        assert _same(committed_model(ledger, store, run_id, 2), _model(9))
        assert committed_model(ledger, store, run_id, 0) is None
    plan, run = load_run(tmp_path)
    assert plan.resume_run_id == run_id and run["last_round"] == 2
    assert plan.settings.checkpoint_keep == Settings().checkpoint_keep


def test_a_run_whose_last_round_has_no_model_anywhere_is_refused_clearly(tmp_path):
    _legacy_ledger(tmp_path, Settings(out=str(tmp_path)), {1: _model(1)})
    with pytest.raises(ValueError, match="round 2 has no checkpoint .* cannot resume"):
        load_run(tmp_path)


# -- real simulations -----------------------------------------------------------------------
def _settings(out) -> Settings:
    return Settings(
        nodes=4, rounds=ROUNDS, fraction=0.5, fraction_evaluate=0.0, seed=3, out=str(out)
    )


def _run_id(out) -> str:
    with Ledger(out / "ledger.sqlite") as ledger:
        return ledger.runs()[-1]["run_id"]


def _work_rows(out, radio: bool = True) -> list[tuple]:
    """The train/evaluate energy rows of the run (the profile queries left out); without
    ``radio``, the network phases' joules (the radio's, on the run's clock) and the run-end
    tails are left out too."""
    with Ledger(out / "ledger.sqlite") as ledger:
        rows = ledger.energy_rows(_run_id(out))
    keys = ("round", "node_id", "call", "phase", "joules", "bytes", "seconds", "status")
    kept = [r for r in rows if r["call"] != "query" and (radio or r["call"] != "run-end")]
    if not radio:
        kept = [{**r, "joules": None} if r["phase"] in ("download", "upload") else r for r in kept]
    return sorted(tuple(r[k] for k in keys) for r in kept)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    return simulate(_settings(out)), out


def test_an_uninterrupted_run_keeps_the_checkpoints_of_its_last_two_rounds(whole):
    summary, out = whole
    run_id = summary["run_id"]
    store = CheckpointStore.for_run(out, run_id)
    assert store.rounds() == [ROUNDS - 1, ROUNDS]
    assert sorted(p.name for p in store.directory.iterdir()) == ["round-4.npz", "round-5.npz"]
    # the last checkpoint is the final global model: it scores the final accuracy
    plan = plan_run(_settings(out))
    evaluate = server_evaluator(plan.task, plan.task.server_test_data(plan.data))
    arrays = ArrayRecord({k: Array(v) for k, v in store.load(ROUNDS).items()})
    assert evaluate(ROUNDS, arrays)["accuracy"] == summary["final_accuracy"]


def test_a_crash_between_checkpoint_and_commit_resumes_exactly(whole, tmp_path, monkeypatch):
    """Round 3's checkpoint is written, its ledger commit fails (the crash window). The resume
    starts from round 2's checkpoint, ignores round 3's, and ends with the uninterrupted run's
    accuracies, train rows and final model; so does a copy of the crashed run as the previous
    version stored it (models in the ledger, no checkpoint files)."""
    summary, whole_out = whole
    commit = Ledger.commit_round

    def failing_commit(self, run_id, server_round, *args, **kwargs):
        if server_round == CRASH_ROUND:
            raise OSError("disk gone while committing")
        return commit(self, run_id, server_round, *args, **kwargs)

    monkeypatch.setattr(Ledger, "commit_round", failing_commit)
    out = tmp_path / "crashed"
    with pytest.raises(OSError, match="disk gone"):
        simulate(_settings(out))
    monkeypatch.undo()
    run_id = _run_id(out)
    store = CheckpointStore.for_run(out, run_id)
    with Ledger(out / "ledger.sqlite") as ledger:
        assert ledger.last_round(run_id) == CRASH_ROUND - 1
    # the last two committed rounds, and the written but uncommitted round 3
    assert store.rounds() == [CRASH_ROUND - 2, CRASH_ROUND - 1, CRASH_ROUND]

    legacy = tmp_path / "legacy"  # the same crashed run, as the previous version kept it
    shutil.copytree(out, legacy)
    conn = sqlite3.connect(legacy / "ledger.sqlite")
    with conn:
        conn.execute(
            "CREATE TABLE models (run_id TEXT NOT NULL, round INTEGER NOT NULL, "
            "npz BLOB NOT NULL, PRIMARY KEY (run_id, round))"
        )
        conn.execute(
            "INSERT INTO models VALUES (?,?,?)",
            (run_id, CRASH_ROUND - 1, model_to_npz(store.load(CRASH_ROUND - 1))),
        )
    conn.close()
    shutil.rmtree(legacy / "checkpoints")

    final = CheckpointStore.for_run(whole_out, summary["run_id"]).load(ROUNDS)
    for resumed_out in (out, legacy):
        resumed = resume(resumed_out)
        assert resumed["status"] == "completed" and resumed["run_id"] == run_id
        assert [r["round"] for r in resumed["per_round"]] == list(range(ROUNDS + 1))
        assert [x["from_round"] for x in resumed["resumes"]] == [CRASH_ROUND - 1]
        assert [r["accuracy"] for r in resumed["per_round"]] == [
            r["accuracy"] for r in summary["per_round"]
        ]
        if resumed_out is out:  # the checkpoint kept the radio clock: the same rows exactly
            assert _work_rows(resumed_out) == _work_rows(whole_out)
        else:  # a legacy models row holds no radio state: its nodes' radios restart idle
            assert _work_rows(resumed_out, radio=False) == _work_rows(whole_out, radio=False)
        kept = CheckpointStore.for_run(resumed_out, run_id)
        assert kept.rounds() == [ROUNDS - 1, ROUNDS]
        assert _same(kept.load(ROUNDS), final)
