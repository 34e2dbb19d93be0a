"""`pip install .` gives a working fedenergy (issue 15, item 8): a wheel built from this checkout
holds the library with every data file it reads and the named fleets, installs no top-level
``client`` or ``server`` package, and, installed into a fresh virtual environment, runs
``fedenergy simulate`` from a directory outside the checkout.

The fresh environment gets its dependencies (torch, flwr, ...) without downloading them: a
``.pth`` file lists this interpreter's site-packages as plain path lines. Python adds such a
directory to ``sys.path`` without running the ``.pth`` files inside it, so the checkout's editable
install (a ``.pth`` file naming the checkout) stays invisible; the tests assert that the running
``fedenergy`` is the installed copy. The wheel is built with build isolation (pip fetches
hatchling from the package index) unless hatchling is importable here. About 20-30 s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
FLEETS = sorted((PROJECT / "simulations" / "fleets").glob("*.toml"))


def _env() -> dict[str, str]:
    """This process's environment without what would point Python at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)
    return env


def _run(cmd: list, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (
        f"{proc.args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip install .` would build from this checkout."""
    out = tmp_path_factory.mktemp("dist")
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, "-w", out, "."]
    _ok(_run(cmd, PROJECT, timeout=300))
    (whl,) = out.glob("fedenergy-*.whl")
    return whl


@pytest.fixture(scope="module")
def names(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


@dataclass(frozen=True)
class Installed:
    python: Path  # the fresh environment's interpreter
    fedenergy: Path  # its console script, as pip installed it
    site: Path  # its site-packages, where the wheel went
    cwd: Path  # an empty working directory outside the checkout


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Installed:
    """The wheel installed into a new venv that borrows only this interpreter's dependencies."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", venv], root, timeout=120))
    python = venv / "bin" / "python"
    # the wheel first, while the new environment sees nothing else (pip must not find the
    # checkout's editable install of the same version there)
    install = [sys.executable, "-m", "pip", "--python", python, "install", "-q"]
    _ok(_run([*install, "--no-deps", "--no-index", wheel], root, timeout=300))
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(_ok(_run([python, "-c", where], root, timeout=60)).stdout.strip())
    deps = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    (site / "_fedenergy_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    cwd = root / "elsewhere"
    cwd.mkdir()
    return Installed(python, venv / "bin" / "fedenergy", site, cwd)


def test_wheel_ships_every_module_and_data_file_of_the_package(names):
    files = [
        p.relative_to(PROJECT).as_posix()
        for p in (PROJECT / "fedenergy").rglob("*")
        if p.is_file() and p.suffix != ".pyc" and "__pycache__" not in p.parts
    ]
    data = [f for f in files if not f.endswith(".py")]
    assert {"fedenergy/data/devices.toml", "fedenergy/meters/cpu_tdp.json"} <= set(data)
    missing = sorted(set(files) - names)
    assert not missing, f"not in the wheel: {missing}"


def test_wheel_ships_the_named_fleets(names):
    assert FLEETS
    for fleet in FLEETS:
        assert f"fedenergy/fleets/{fleet.name}" in names, fleet.name


def test_wheel_installs_no_top_level_client_or_server_package(wheel, names):
    tops = {n.split("/", 1)[0] for n in names}
    (dist_info,) = [t for t in tops if t.endswith(".dist-info")]
    assert tops - {dist_info} == {"fedenergy"}, tops
    with zipfile.ZipFile(wheel) as z:
        entry_points = z.read(f"{dist_info}/entry_points.txt").decode()
    assert "fedenergy = fedenergy.cli:main" in entry_points


def test_the_installed_copy_is_what_runs(installed):
    probe = (
        "import importlib.util as u, json, os, sys, fedenergy\n"
        "from fedenergy.sim.fleet import available_fleets, resolve_fleet_path\n"
        "print(json.dumps({'file': fedenergy.__file__,\n"
        "    'path': [os.path.realpath(p) for p in sys.path],\n"
        "    'client': u.find_spec('client') is not None,\n"
        "    'server': u.find_spec('server') is not None,\n"
        "    'fleets': available_fleets(), 'mixed': str(resolve_fleet_path('mixed'))}))\n"
    )
    seen = json.loads(_ok(_run([installed.python, "-c", probe], installed.cwd, 60)).stdout)
    assert Path(seen["file"]).is_relative_to(installed.site), seen["file"]
    assert str(PROJECT) not in seen["path"], seen["path"]
    assert not seen["client"] and not seen["server"]
    assert seen["fleets"] == [f.stem for f in FLEETS]
    assert Path(seen["mixed"]) == installed.site / "fedenergy" / "fleets" / "mixed.toml"


def test_installed_wheel_runs_the_main_job_outside_the_checkout(installed, tmp_path):
    out = tmp_path / "out"
    cmd = [installed.fedenergy, "simulate", "--nodes", "10", "--rounds", "2", "--out", out]
    proc = _ok(_run(cmd, installed.cwd, timeout=300))
    assert "provenance: modeled" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert (summary["nodes"], summary["rounds"]) == (10, 2)
    assert summary["total_j"] > 0
    with sqlite3.connect(out / "ledger.sqlite") as db:
        rounds = [r for (r,) in db.execute("SELECT DISTINCT round FROM energy ORDER BY round")]
    assert rounds == [0, 1, 2]
