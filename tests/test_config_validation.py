"""Configuration errors are refused before anything runs, with a message naming the key."""

from __future__ import annotations

import json

import pytest

from fedenergy.cli import main
from fedenergy.ledger import Ledger
from fedenergy.plan import plan_run
from fedenergy.settings import Settings
from fedenergy.sim.fleet import load_fleet


@pytest.mark.parametrize(
    "config,message",
    [
        ({"bogus": 1}, "unknown run-config key 'bogus'"),
        ({"num-server-rounds": True}, "run-config key 'num-server-rounds' must be int, got True"),
        ({"nodes": 2.0}, "run-config key 'nodes' must be int, got 2.0"),
        ({"local-epochs": "5"}, "run-config key 'local-epochs' must be int"),
        ({"lr": "fast"}, "run-config key 'lr' must be float, got 'fast'"),
        ({"fraction-train": [0.5]}, "run-config key 'fraction-train' must be float"),
        ({"fleet": 3}, "run-config key 'fleet' must be str"),
        ({"lr": float("nan")}, "lr must be a finite number, got nan"),
        ({"round-timeout-s": float("inf")}, "round-timeout-s must be a finite number"),
        ({"infra-kwh-per-gb": float("nan")}, "infra-kwh-per-gb must be a finite number"),
        ({"min-nodes": 0}, "min-nodes must be a positive integer, got 0"),
        ({"max-short-rounds": -1}, "max-short-rounds must be a positive integer"),
        ({"selector": "oracle"}, "unknown selector 'oracle'"),
        (
            {"discovery": "psychic"},
            "unknown discovery 'psychic'; choose one of query, lazy, declared",
        ),
        ({"energy-weight": -1.0}, "energy-weight must be in [0, 10]"),
        ({"fleet": "nowhere"}, "unknown fleet 'nowhere'"),
        ({"downlink": "zip"}, "invalid downlink 'zip'"),
        ({"checkpoint-keep": -1}, "checkpoint-keep must be a non-negative integer"),
        ({"checkpoint-keep": True}, "run-config key 'checkpoint-keep' must be int, got True"),
    ],
)
def test_run_config_errors_name_the_key(config, message):
    with pytest.raises(ValueError) as err:
        Settings.from_run_config(config).validate()
    assert message in str(err.value)
    with pytest.raises(ValueError) as err:  # the same message at a run's edge
        plan_run(Settings.from_run_config(config))
    assert message in str(err.value)


def test_settings_built_directly_are_type_checked_too():
    with pytest.raises(ValueError, match="rounds must be a positive integer, got True"):
        Settings(rounds=True).validate()
    with pytest.raises(ValueError, match="fraction must be a finite number, got '0.5'"):
        Settings(fraction="0.5").validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="codec must be a string"):
        Settings(codec=8).validate()  # type: ignore[arg-type]
    assert Settings.from_run_config({"lr": 1, "num-server-rounds": 3}).validate().lr == 1.0


@pytest.mark.parametrize(
    "body,message",
    [
        ('name = "x"\n[[group]\ndevice = "phone"\n', "malformed TOML"),
        ('nme = "x"\n[[group]]\ndevice = "phone"\nlink = "lte"\nfraction = 1.0\n', "'nme'"),
        ('[[group]]\ndevice = "phone"\nlink = "lte"\nfraction = 1.0\ncolour = 1\n', "'colour'"),
        ('[[group]]\ndevice = "phone"\nlink = "lte"\nfraction = "all"\n', "fraction must be"),
        ('[[group]]\ndevice = "phone"\nlink = "lte"\nfraction = true\n', "fraction must be"),
        ('[[group]]\ndevice = 3\nlink = "lte"\nfraction = 1.0\n', "unknown device '3'"),
        (
            '[[group]]\ndevice = "phone"\nlink = "lte"\nfraction = 1.0\nfailure_prob = 1.0\n',
            "failure_prob",
        ),
    ],
)
def test_fleet_file_errors_name_the_key(tmp_path, body, message, capsys):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(body)
    with pytest.raises(ValueError, match="fleet") as err:
        load_fleet(str(fleet))
    assert message in str(err.value)
    assert main(["simulate", "--fleet", str(fleet), "--out", str(tmp_path / "o")]) == 2
    assert message in " ".join(capsys.readouterr().out.split())
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--min-nodes", "0"], "min-nodes must be a positive integer"),
        (["--max-short-rounds", "0"], "max-short-rounds must be a positive integer"),
        (["--lr", "nan"], "lr must be a finite number"),
        (["--round-timeout-s", "inf"], "round-timeout-s must be a finite number"),
        (["--checkpoint-keep", "-2"], "checkpoint-keep must be a non-negative integer"),
    ],
)
def test_cli_refuses_bad_robustness_settings(tmp_path, args, message, capsys):
    assert main(["simulate", "--out", str(tmp_path / "o"), *args]) == 2
    assert message in " ".join(capsys.readouterr().out.split())
    assert not (tmp_path / "o").exists()


def _ledger_with_run(tmp_path, config: dict, status: str = "running"):
    out = tmp_path / "run"
    with Ledger(out / "ledger.sqlite") as ledger:
        ledger.start_run("r1", config, {"name": "mixed"}, 0, {})
        if status != "running":
            ledger.finish_run("r1", status)
    return out


def test_resume_errors_are_clear(tmp_path, capsys):
    assert main(["simulate", "--resume", str(tmp_path / "none")]) == 2
    assert "no ledger at" in capsys.readouterr().out
    bad = _ledger_with_run(tmp_path, {**Settings().as_dict(), "warp_speed": 9})
    assert main(["simulate", "--resume", str(bad)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "run r1: its saved settings cannot be used" in out and "'warp_speed'" in out


def test_resume_of_a_completed_run_does_nothing(tmp_path, capsys):
    out = _ledger_with_run(tmp_path, Settings().as_dict(), status="completed")
    assert main(["simulate", "--resume", str(out)]) == 0
    assert "already completed" in capsys.readouterr().out
    with Ledger(out / "ledger.sqlite") as ledger:
        assert ledger.resumes("r1") == [] and json.loads(ledger.runs()[0]["config_json"])
