"""energy_to_accuracy.py --tasks: task sizes, the cells' savings (by hand), and a real tiny run
under both infrastructure models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[1] / "simulations"
if str(SIM) not in sys.path:
    sys.path.insert(0, str(SIM))

import e2a_regimes as regimes  # noqa: E402
import energy_to_accuracy as e2a  # noqa: E402


def test_task_specs_take_the_default_size_or_the_given_one():
    assert regimes.parse_task("cnn") == ("cnn", regimes.TASK_SIZES["cnn"])
    assert regimes.parse_task("chars:12x3") == ("chars", (12, 3, regimes.TASK_SIZES["chars"][2]))
    assert regimes.parse_task("resnet:6X2@0.5") == ("resnet", (6, 2, 0.5))
    digits = regimes.TASK_SIZES["digits"]
    assert regimes.parse_task("my.mod:task") == ("my.mod:task", digits)  # a user's task
    assert regimes.parse_task("my.mod:task:8x2") == ("my.mod:task", (8, 2, digits[2]))
    for bad in ("cnn:40", "cnn:4y3", "cnn:4x3@x", ":4x3", "cnn:0x3", "cnn:4x3@1.5"):
        with pytest.raises(ValueError, match="--tasks"):
            regimes.parse_task(bad)


def _run(model: str, total: float, other: float, reached: bool = True, compute: float = 1.0):
    other_model = "power" if model == "per-byte" else "per-byte"
    return {
        "infra_model": model,
        "infra_model_other": other_model,
        "total_j": total,
        "total_j_other_infra": other,
        "compute_j": compute,
        "rounds": 4,
        "final_accuracy": 0.9,
        "reached_target": reached,
        "failed_calls": 0,
        "wall_s": 1.0,
        "by_link_j": {"wifi": total},
    }


def _seed(fed, strat, strat_power=None, target=0.8):
    runs = {"fedavg": fed, "s": strat}
    if strat_power is not None:
        runs["s @power"] = strat_power
    return {"target_accuracy": target, "strategies": runs}


def test_cells_compare_each_seed_with_its_fedavg_under_the_same_model():
    # seed 0: FedAvg 100 J per-byte, 300 J power; the strategy 10 J / 60 J (its power run 30 J)
    # seed 1: FedAvg 200 J / 400 J; the strategy 50 J / 100 J (its power run 20 J), missed
    seeds = [
        _seed(_run("per-byte", 100, 300), _run("per-byte", 10, 60, compute=2.0),
              _run("power", 30, 12), target=0.8),
        _seed(_run("per-byte", 200, 400), _run("per-byte", 50, 100, reached=False),
              _run("power", 20, 9), target=0.9),
    ]  # fmt: skip
    pb = regimes.cell(seeds, "per-byte", shared=False)["strategies"]["s"]
    # ratios 0.1 and 0.25: saving 1 / 0.175; per seed 10x and 4x
    assert pb["savings_x"] == pytest.approx(1 / 0.175)
    assert (pb["savings_x_min"], pb["savings_x_max"]) == (pytest.approx(4.0), pytest.approx(10.0))
    assert pb["reached_target"] is False and pb["seeds_reached"] == 1
    assert pb["total_j"] == pytest.approx(30.0)
    assert pb["compute_share"] == pytest.approx((2 / 10 + 1 / 50) / 2)
    # separate runs: the power cell takes the strategy's own power runs (30 J, 20 J) against
    # FedAvg's 300 J and 400 J: ratios 0.1 and 0.05
    pw = regimes.cell(seeds, "power", shared=False)
    assert pw["strategies"]["s"]["savings_x"] == pytest.approx(1 / 0.075)
    assert pw["strategies"]["s"]["per_seed"][0]["by_link_j"] == {"wifi": 30}
    assert pw["strategies"]["fedavg"]["total_j"] == pytest.approx(350.0)
    assert pw["targets"] == [0.8, 0.9] and pw["target_accuracy"] == pytest.approx(0.85)
    # shared: the power cell reads the per-byte runs under the power model (60 J, 100 J)
    sh = regimes.cell([_seed(s["strategies"]["fedavg"], s["strategies"]["s"]) for s in seeds],
                      "power", shared=True)  # fmt: skip
    assert sh["strategies"]["s"]["savings_x"] == pytest.approx(1 / ((60 / 300 + 100 / 400) / 2))
    assert sh["strategies"]["s"]["per_seed"][0]["by_link_j"] is None  # per-byte's, not shown
    # the per-byte run missed the target on seed 1; FedAvg itself never counts as the best
    assert regimes.best(regimes.cell(seeds, "per-byte", shared=False)["strategies"]) is None
    assert regimes.best(pw["strategies"])[0] == "s"


def test_a_tiny_regime_run_writes_every_cell(tmp_path, capsys):
    """Real runs: two built-in tasks at 4 nodes x 1 round, the priced strategy under both
    models (separate runs), the JSON as the issue names its fields."""
    out = tmp_path / "runs"
    argv = ["--fleets", "reference", "--only", "utility+priced, 0.4k", "--infra-runs", "separate"]
    argv += ["--out", str(out), "--json", str(tmp_path / "e2a.json")]
    assert e2a.main(["--tasks", "digits:4x1@0.5", *argv]) == 0
    # a second command adds a task to the same table (the first one's cells kept)
    assert e2a.main(["--tasks", "chars:4x1@0.5", "--append", *argv]) == 0
    doc = json.loads((tmp_path / "e2a.json").read_text())
    assert list(doc["regimes"]) == ["digits", "chars"]
    assert doc["sizes"]["chars"] == {"nodes": 4, "rounds": 1, "fraction": 0.5}
    assert doc["strategies"]["digits"] == ["fedavg", "utility+priced, 0.4k"]
    assert doc["infra_runs"] == {"digits": "separate", "chars": "separate"}
    for task in ("digits", "chars"):
        for model in ("per-byte", "power"):
            c = doc["regimes"][task]["reference"][model]
            assert 0 < c["target_accuracy"] < 1 and 0 < c["initial_accuracy"] < 1
            s = c["strategies"]["utility+priced, 0.4k"]
            assert {"savings_x", "savings_x_min", "savings_x_max", "reached_target"} <= set(s)
            assert s["savings_x_min"] <= s["savings_x"] <= s["savings_x_max"]
            assert s["accounted_in_run"] is True  # separate: its own run under each model
        assert (out / task / "reference" / "seed0" / "utility+priced, 0.4k@power").is_dir()
        assert (out / f"e2a_{task}_reference.png").stat().st_size > 5_000
    text = capsys.readouterr().out.split("wall")[-2]  # the second command's tables: both tasks
    assert "best strategy" in text and "chars   reference  power" in text
    assert "digits  reference  power" in text
    with pytest.raises(SystemExit):
        e2a.main(["--tasks", "cnn:4"])
    with pytest.raises(SystemExit):  # other seeds: the kept cells would not compare
        e2a.main(["--tasks", "cnn:4x1", "--append", "--seeds", "1", *argv])
    assert json.loads((tmp_path / "e2a.json").read_text()) == doc  # and nothing was lost
