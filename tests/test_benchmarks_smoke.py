"""Smoke tests of the benchmark scripts: argument parsing, JSON and Markdown writing.

Tiny sizes, no federation, no Ray, and no assertion on any timing.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[1] / "simulations"


def _load(name: str):
    if str(SIM) not in sys.path:
        sys.path.insert(0, str(SIM))
    spec = importlib.util.spec_from_file_location(name, SIM / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_run_benchmarks_dry_run_names_existing_scripts(capsys):
    rb = _load("run_benchmarks")
    assert rb.main(["--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(rb.benchmarks("r"))
    for argv in rb.benchmarks("r").values():
        assert (SIM.parent / argv[0]).is_file()
        assert "--json" in argv
    with pytest.raises(SystemExit):
        rb.main(["--dry-run", "--only", "no-such-benchmark"])


def test_run_benchmarks_renders_every_section(tmp_path):
    rb = _load("run_benchmarks")
    per_call = {k: {"stub_ms": 0.1, "with_mod_ms": 1.1, "mod_ms": 1.0} for k in ("train",)}
    per_call |= {k: {"stub_ms": 0.1, "with_mod_ms": 0.9, "mod_ms": 0.8} for k in ("evaluate",)}
    per_call["query"] = {"stub_ms": 0.1, "with_mod_ms": 0.7, "mod_ms": 0.6}
    docs = {
        "overhead": {
            "nodes": 4,
            "rounds": 1,
            "fraction": 0.5,
            "fraction_evaluate": 0.0,
            "reps": 0,
            "per_call": per_call,
            "cpu_ms_per_call": 1.0,
            "train_handler_cpu_ms": 20.0,
            "train_with_mod_cpu_ms": 21.0,
            "in_process_train_ratio": 1.05,
            "load_avg_1m": [1.0, 1.0],
            "cnn": {
                "nodes": 4,
                "rounds": 1,
                "reps": 0,
                "per_call": {
                    k: {
                        "handler_cpu_ms": 60.0,
                        "with_mod_cpu_ms": 61.5,
                        "mod_ms": 1.5,
                        "ratio": 1.025,
                    }
                    for k in ("train", "evaluate")
                },
            },
        },
        "meters": {"rows": [{"meter": "rapl", "window_us": 12.5}]},
        "codecs": {
            "none": {
                "upload_bytes": 100.0,
                "bytes_ratio": 1.0,
                "payload_ratio": 1.0,
                "accuracy": 0.5,
                "accuracy_delta": 0.0,
                "encode_ms": 0.01,
                "decode_ms": 0.01,
            },
        },
    }
    for name, d in docs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(d))
    runs = [
        {"name": n, "command": f"python x/{n}.py", "rc": 0, "wall_s": 1.0, "log_tail": []}
        for n in docs
    ]
    runs.append(
        {"name": "scale", "command": "python s.py", "rc": 1, "wall_s": 2.0, "log_tail": ["boom"]}
    )
    info = dict(rb.machine(), load_start=0.5, load_end=0.6)
    page = rb.render(runs, tmp_path, info, "2026-01-01 00:00 UTC", 60.0)
    assert "# Benchmark results" in page and "python x/overhead.py" in page
    assert "1.000 ms" in page  # the overhead's CPU per call
    assert "Example CNN app" in page and "**1.50 ms per call**" in page
    assert "| rapl | 12.5 |" in page
    assert "**Failed** (exit code 1)" in page and "boom" in page
    assert info["cores"] and info["python"]


def test_bench_overhead_in_process_json(tmp_path):
    bo = _load("bench_overhead")
    out = tmp_path / "o.json"
    argv = ["--reps", "0", "--nodes", "4", "--calls", "20", "--train-pairs", "1"]
    argv += ["--app-nodes", "4", "--app-pairs", "1", "--app-reps", "0"]
    assert bo.main([*argv, "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["per_call"]) == {"train", "evaluate", "query"}
    for key in ("cpu_ms_per_call", "in_process_train_ratio", "load_avg_1m"):
        assert key in doc
    assert "wall_ratio" not in doc  # no federation was run
    cnn = doc["cnn"]  # the example CNN app's calls, with and without the mod
    assert set(cnn["per_call"]) == {"train", "evaluate"} and "wall_ratio" not in cnn
    assert cnn["per_call"]["train"]["handler_cpu_ms"] > 0


def test_bench_scale_selection_only_json(tmp_path):
    bs = _load("bench_scale")
    out = tmp_path / "s.json"
    argv = ["--no-federation", "--sel-nodes", "300", "--sel-reps", "1", "--per-round", "10"]
    assert bs.main([*argv, "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert "selection_ms_300" in doc and doc["nodes"] == {}
    assert doc["selection"]["round1"]["candidates"] == 300


def test_energy_to_accuracy_fleet_labels_are_safe_and_unique(tmp_path):
    e2a = _load("energy_to_accuracy")
    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()
    src = (SIM / "fleets" / "reference.toml").read_text()
    for f in ("a/fleet.toml", "b/fleet.toml", "c/my fleet!.toml"):
        (tmp_path / f).write_text(src)
    specs = ["reference", *(str(tmp_path / f) for f in ("a/fleet.toml", "b/fleet.toml"))]
    specs += [str(tmp_path / "c/my fleet!.toml"), "reference"]
    got = e2a.fleet_labels(specs)
    assert [label for _, label in got] == [
        "reference",
        "fleet",
        "fleet-2",
        "my-fleet",
        "reference-2",
    ]
    assert got[1][0] == str((tmp_path / "a/fleet.toml").resolve()) and got[0][0] == "reference"
    with pytest.raises(ValueError, match="does not exist"):
        e2a.fleet_labels([str(tmp_path / "missing.toml")])


def test_energy_to_accuracy_runs_a_user_fleet_file(tmp_path, monkeypatch, capsys):
    """A real (tiny) run with `--fleets my/fleet.toml`, a path relative to the current
    directory: its runs, plot and JSON entry are named `fleet`, the JSON keeps the path."""
    e2a = _load("energy_to_accuracy")
    (tmp_path / "my").mkdir()
    (tmp_path / "my" / "fleet.toml").write_text((SIM / "fleets" / "reference.toml").read_text())
    monkeypatch.chdir(tmp_path)
    argv = ["--fleets", "my/fleet.toml", "--nodes", "4", "--rounds", "1", "--fraction", "0.5"]
    argv += ["--only", "fedavg", "--out", "runs", "--json", "e2a.json"]
    assert e2a.main(argv) == 0
    assert (tmp_path / "runs" / "fleet" / "seed0" / "fedavg" / "ledger.sqlite").is_file()
    assert (tmp_path / "runs" / "energy_to_accuracy_fleet.png").stat().st_size > 5_000
    doc = json.loads((tmp_path / "e2a.json").read_text())
    assert list(doc) == ["fleet"]
    assert doc["fleet"]["fleet"] == str((tmp_path / "my" / "fleet.toml").resolve())
    assert doc["fleet"]["fedavg"]["rounds"] == 1 and doc["fleet"]["fedavg"]["total_j"] > 0
    assert "fleet fleet (" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        e2a.main(["--fleets", "my/missing.toml"])


def _side(total: float, rss: float, round0: float, **extra) -> dict:
    trace = {"s_per_sweep": 2.0, "sweeps": 3.0, "get_message_ins_s": 6.0}
    return {
        "total_s": total,
        "cpu_s": total / 2,
        "peak_rss_mb": rss,
        "round0_s": round0,
        "linkstate": trace,
        **extra,
    }


def test_bench_scale_summarizes_pairs_and_reports_what_broke():
    bs = _load("bench_scale")
    fl = [_side(10.0, 100.0, 2.0, ready_s=1.0, federation_s=7.0), _side(20.0, 110.0, 2.0,
          ready_s=1.0, federation_s=17.0)]  # fmt: skip
    fe = [_side(12.0, 120.0, 3.0, rounds_s=9.0, failed_calls=0), _side(30.0, 130.0, 3.0,
          rounds_s=27.0, failed_calls=0)]  # fmt: skip
    d = bs.summarize({"flower": fl, "fedenergy": fe})
    assert d["broke"] == {}
    assert d["wall_ratio_vs_flower"] == pytest.approx((1.2 + 1.5) / 2)  # median over the pairs
    assert d["cpu_ratio_vs_flower"] == pytest.approx((1.2 + 1.5) / 2)
    assert d["rss_ratio_vs_flower"] == pytest.approx(130.0 / 110.0)  # peak against peak
    assert d["flower_rounds_s"] == pytest.approx(13.0) and d["round0_s"] == 3.0
    assert d["flower_sweep_s"] == 2.0
    rb = _load("run_benchmarks")
    for r in fl:
        r["linkstate"]["us_per_check"] = 0.5
    page = "\n".join(rb.section_scale({"partitioner": "sampled", "nodes": {"1000": d}}))
    assert "| 1,000 | 21.0 | 15.0 | 1.35 | 3.0 / 2.0 | 18.0 / 13.0 | 130 / 110 | 1.18 |" in page
    assert "0.50 µs per stored message checked" in page and "2 flower/fedenergy pair" in page
    assert "wall ratio of each pair 1.20, 1.50." in page and "60 % of Flower's wall" in page
    err = {"error": "ZeroDivisionError: float division by zero", "stack": ["s.py:80 agg: w / t"]}
    err["linkstate"] = fl[0]["linkstate"]
    d = bs.summarize({"flower": [err], "fedenergy": fe[:1]})
    assert d["broke"] == {"flower": "ZeroDivisionError: float division by zero"}
    assert "wall_ratio_vs_flower" not in d
    assert "FAILED: ZeroDivisionError" in bs.describe(err) and "s.py:80" in bs.describe(err)
    doc = {"partitioner": "sampled", "nodes": {"100000": d}, "selection": None}
    page = "\n".join(rb.section_scale(doc))
    assert "| 100,000 | broke (see below)" in page
    assert "100,000 nodes, flower: **ZeroDivisionError" in page and "`s.py:80 agg: w / t`" in page


def test_linkstate_trace_restores_flower_and_counts_sweeps():
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation.noop_federation_manager import NoOpFederationManager

    lt = _load("linkstate_trace")
    original = InMemoryLinkState.get_message_ins
    state = InMemoryLinkState(NoOpFederationManager(), ObjectStoreFactory().store())
    with lt.traced_linkstate(nodes=4) as trace:
        assert InMemoryLinkState.get_message_ins is not original
        for node_id in range(4):  # one sweep through Flower's own link state (no messages)
            assert state.get_message_ins(node_id=node_id, limit=1) == []
        assert trace.calls == 4 and trace.stored == 0 and trace.seconds > 0
        for _ in range(4):  # and one more, 5 stored messages at each call
            trace.add(0.5, 5)
    assert InMemoryLinkState.get_message_ins is original
    d = trace.as_dict()
    assert d["sweeps"] == 2.0 and d["message_checks"] == 20
    assert d["s_per_sweep"] == pytest.approx((trace.seconds) / 2)
    assert d["us_per_check"] == pytest.approx(1e6 * trace.seconds / 20)


def test_compare_regimes_task_specs_parse_and_reject():
    """`--tasks TASK[:NODESxROUNDS]` x `--task-fleets`: a size given wins, else TASK_SIZES; a
    fleet other than mixed names its groups; bad specs and fleets fail before any run."""
    cr = _load("compare_regimes")
    name, (groups, country, overrides, kwargs) = cr.task_variant("cnn:3x2")
    assert name == "task cnn, 3 nodes x 2 rounds"
    assert (groups, country, kwargs) == (None, "WORLD", {})
    assert overrides == {"task": "cnn", "nodes": 3, "rounds": 2}
    n, r = cr.TASK_SIZES["resnet"]
    assert cr.task_variant("resnet")[1][2] == {"task": "resnet", "nodes": n, "rounds": r}
    name, (groups, _, overrides, _) = cr.task_variant("chars:2x1", "phones-lte")
    assert name == "task chars, 2 nodes x 1 rounds, phones-lte"
    assert groups == [("phone", "lte", 1.0)] and overrides["task"] == "chars"
    for bad in ("cnn:3", "cnn:0x2", "cnn:ax2", "no-such-task"):
        with pytest.raises(SystemExit):
            cr.main(["--tasks", bad, "--out", "unused"])
    with pytest.raises(SystemExit):
        cr.main(["--tasks", "cnn", "--task-fleets", "no-such-fleet", "--out", "unused"])
