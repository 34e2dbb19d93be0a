"""The runs a report covers: found from paths (ledgers, run directories, or a directory of run
directories such as the output of ``simulations/energy_to_accuracy.py``) and read once each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedenergy.analysis.breakdown import DeviceClass, device_breakdown
from fedenergy.analysis.regime import Regime, read_regime
from fedenergy.analysis.summary import summarize
from fedenergy.analysis.svg import Curve
from fedenergy.ledger import Ledger

LEDGER_FILE = "ledger.sqlite"


@dataclass(frozen=True)
class RunRef:
    """One run of a report: its label, its ledger and its id (None: the ledger's latest)."""

    label: str
    ledger: Path
    run_id: str | None = None


@dataclass(frozen=True)
class RunView:
    """What a report shows of one run."""

    label: str
    summary: dict
    regime: Regime
    classes: list[DeviceClass]
    phases: list[str]

    def curve(self) -> Curve:
        """Accuracy after each round (round 0, the profile query, included) against the
        cumulative joules until then; rounds without a server accuracy are left out."""
        points, total = [], 0.0
        for r in self.summary["per_round"]:
            total += r["joules"] or 0.0
            if r["accuracy"] is not None:
                points.append((total, float(r["accuracy"])))
        return Curve(self.label, tuple(points))


def _ledger_of(path: Path) -> Path | None:
    if path.is_file():
        return path
    if (path / LEDGER_FILE).is_file():
        return path / LEDGER_FILE
    return None


def find_runs(paths: Sequence[str | Path]) -> list[RunRef]:
    """One RunRef per ledger: a ledger file or run directory as given, or every run directory
    below a directory that holds none itself (labelled by its path under that directory).
    Labels that would clash are made unique by their full path. ValueError: nothing found."""
    found: list[tuple[str, Path]] = []
    for raw in paths:
        path = Path(raw)
        ledger = _ledger_of(path)
        if ledger is not None:
            found.append((ledger.parent.name or str(ledger.parent), ledger))
            continue
        below = sorted(path.rglob(LEDGER_FILE)) if path.is_dir() else []
        if not below:
            raise ValueError(f"no ledger at {path} (nor in any directory below it)")
        found += [(str(p.parent.relative_to(path)), p) for p in below]
    labels = [label for label, _ in found]
    refs = []
    for label, ledger in found:
        if labels.count(label) > 1:
            label = str(ledger.parent)
        refs.append(RunRef(label, ledger))
    return refs


def load_view(ref: RunRef) -> RunView:
    """Read one run: its summary, regime and per-device breakdown (ValueError: no run)."""
    with Ledger(ref.ledger) as ledger:
        runs = ledger.runs()
        if not runs:
            raise ValueError(f"{ref.ledger} holds no run")
        rid = ref.run_id or runs[-1]["run_id"]
        classes, phases = device_breakdown(ledger, rid)
        return RunView(ref.label, summarize(ledger, rid), read_regime(ledger, rid), classes, phases)
