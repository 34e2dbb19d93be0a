import pytest

from fedenergy.cli import main


@pytest.mark.parametrize(
    "args,message",
    [
        (["--task", "mnist"], "unknown task 'mnist'"),
        (["--fleet", "nowhere"], "unknown fleet 'nowhere'"),
        (["--fraction", "0"], "fraction must be in (0, 1]"),
        (["--fraction", "1.5"], "fraction must be in (0, 1]"),
        (["--rounds", "0"], "rounds must be a positive integer"),
        (["--nodes", "-3"], "nodes must be a positive integer"),
        (["--partitioner", "zipf"], "unknown partitioner 'zipf'"),
        (["--alpha", "0"], "dirichlet-alpha must be > 0"),
    ],
)
def test_bad_settings_are_refused_before_any_run(args, message, capsys, tmp_path):
    code = main(["simulate", "--out", str(tmp_path / "o"), *args])
    out = capsys.readouterr().out
    assert code == 2
    assert message in " ".join(out.split())
    assert not (tmp_path / "o").exists()  # nothing started, nothing written


@pytest.mark.parametrize(
    "body,message",
    [
        (
            '[[group]]\ndevice = "toaster"\nlink = "lte"\nfraction = 1.0\n',
            "unknown device 'toaster'",
        ),
        ('[[group]]\ndevice = "phone"\nlink = "fax"\nfraction = 1.0\n', "unknown link 'fax'"),
        ('[[group]]\ndevice = "phone"\nlink = "lte"\nfraction = 0.7\n', "sum to 0.7, not 1"),
    ],
)
def test_bad_fleet_files_are_refused_before_any_run(body, message, capsys, tmp_path):
    fleet = tmp_path / "f.toml"
    fleet.write_text(body)
    assert main(["simulate", "--fleet", str(fleet), "--out", str(tmp_path / "o")]) == 2
    assert message in " ".join(capsys.readouterr().out.split())


def test_report_on_a_missing_ledger_is_a_clear_error(capsys, tmp_path):
    assert main(["report", str(tmp_path)]) == 2
    assert "no ledger" in capsys.readouterr().err
