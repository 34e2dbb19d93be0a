"""The HTML report of real runs, opened in a real headless Chromium (Debian's `chromium`).

Two small real simulations (FedAvg and the utility selector) in one directory; `fedenergy
report DIR` draws one curve per run. Chromium takes a screenshot (it must show the drawn plots:
not blank, the curves' colours present) and dumps the DOM after loading (the SVG curves, one
per run with a point per round, and the per-device rows of the ledger's device classes).

Without /usr/bin/chromium the test is skipped, except under CI (env CI=true), where it fails:
CI installs the package (.ci/run) and must not pass by skipping.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedenergy.cli import main
from fedenergy.ledger import Ledger

CHROMIUM = Path(os.environ.get("FEDENERGY_CHROMIUM", "/usr/bin/chromium"))
NODES, ROUNDS = 4, 3
RUNS = {"fedavg": (), "utility": ("--selector", "utility", "--compression", "per-link")}
WINDOW = (1200, 2400)
# flags that keep a headless Chromium from reaching out (it hangs on refused connections)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
CURVE_COLOURS = {"fedavg": (0x1F, 0x77, 0xB4), "utility": (0xFF, 0x7F, 0x0E)}  # svg.PALETTE


def _need_chromium() -> None:
    if CHROMIUM.is_file():
        return
    reason = f"{CHROMIUM} missing: install Debian's chromium (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; under CI this test must run, not skip")
    pytest.skip(reason)


def _chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run Chromium once with a fresh profile directory; bounded by ``timeout`` seconds."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    _need_chromium()
    root = tmp_path_factory.mktemp("e2a")
    base = ["simulate", "--nodes", str(NODES), "--rounds", str(ROUNDS), "--fraction", "0.5"]
    base += ["--fraction-evaluate", "0", "--seed", "1"]
    for name, extra in RUNS.items():
        assert main([*base, "--out", str(root / name), *extra]) == 0
    assert main(["report", str(root)]) == 0
    html = root / "report.html"
    assert html.is_file()
    return root, html


class _Elements(HTMLParser):
    """Every start tag of a document with its attributes, and the text of the regime table."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.regime_text: list[str] = []
        self._in_regime = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table":
            self._in_regime = a.get("id") == "regime-table"

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_regime = False

    def handle_data(self, data):
        if self._in_regime and data.strip():
            self.regime_text.append(data.strip())

    def find(self, tag: str, cls: str | None = None, **attrs) -> list[dict]:
        return [
            a
            for t, a in self.tags
            if t == tag
            and (cls is None or cls in (a.get("class") or "").split())
            and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


def _device_classes(ledger_path: Path) -> set[tuple[str, str]]:
    with Ledger(ledger_path) as ledger:
        rid = ledger.runs()[-1]["run_id"]
        return {(r["device"], r["link"]) for r in ledger.energy_rows(rid)}


def test_chromium_screenshot_shows_the_plots(report):
    root, html = report
    shot = root / "report.png"
    _chromium(f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", html.as_uri())
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (WINDOW[1], WINDOW[0])
    assert img.std() > 20  # not a blank page
    non_white = (img.min(axis=2) < 235).mean()
    assert non_white > 0.03, f"only {non_white:.1%} of the page is not white"
    for run, rgb in CURVE_COLOURS.items():  # each run's curve (and legend swatch) was painted
        hits = (np.abs(img - np.array(rgb)).max(axis=2) < 30).sum()
        assert hits > 300, f"{run}'s colour {rgb} on {hits} pixels only"


def test_chromium_dom_has_one_curve_per_run_and_the_device_rows(report):
    root, html = report
    dom = _chromium("--dump-dom", html.as_uri()).stdout
    assert dom.lstrip().lower().startswith("<html") or "<html" in dom[:200].lower()
    doc = _Elements()
    doc.feed(dom)
    assert len(doc.find("svg", id="accuracy-vs-energy")) == 1
    curves = doc.find("polyline", "curve")
    assert sorted(c["data-run"] for c in curves) == sorted(RUNS)
    for c in curves:
        pts = [tuple(map(float, p.split(","))) for p in c["points"].split()]
        # round 0 (the profile query) and every round have a server accuracy: one point each
        assert len(pts) == ROUNDS + 1 == int(c["data-points"])
        xs, ys = zip(*pts, strict=True)
        assert list(xs) == sorted(xs) and xs[-1] > xs[0]  # cumulative energy only grows
        assert all(0 <= y <= 420 for y in ys)
    assert len(doc.find("li", data_run="fedavg")) == 1  # the legend names each run
    # the per-device breakdown of the first run (labels sort: fedavg), one row per class
    rows = {(r["data-device"], r["data-link"]) for r in doc.find("tr", "device-row")}
    assert rows == _device_classes(root / "fedavg" / "ledger.sqlite") and len(rows) >= 2
    bars = doc.find("g", "device-bar")
    assert {b["data-class"] for b in bars} == {f"{d}/{link}" for d, link in rows}
    segs = doc.find("rect", "phase-seg")
    assert {"download", "upload", "train"} <= {s["data-phase"] for s in segs}
    assert len(doc.find("details", "run-devices", data_run="utility")) == 1
    assert {r["data-run"] for r in doc.find("tr", "run-row")} == set(RUNS)
    # the regime: digits' MLP has 64*32 + 32 + 32*10 + 10 = 2,410 parameters
    text = " ".join(doc.regime_text)
    assert "digits / Sequential" in text and "2,410" in text
    for pair in ("infrastructure model per-byte (0.059 kWh/GB)", "energy boundary device"):
        assert pair in text
    assert "start-up mode per-call" in text and f"rounds {ROUNDS}" in text


def test_missing_chromium_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(f"{__name__}.CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI"):
        _need_chromium()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="install Debian's chromium"):
        _need_chromium()
