"""Resume a simulated run from its last committed round (``fedenergy simulate --resume OUT``).

The ledger holds everything needed: the run's settings (``runs.config_json``), its committed
rounds and the global model after each of them (``models``). A resume reopens the SAME run id
(status back to ``running``, a row in ``resumes``), starts a fresh Simulation Engine with the
same settings, queries the nodes again (that query's energy is accounted in the first resumed
round, as ``call='query'`` rows) and runs the rounds after the last committed one up to the
run's ``rounds``. Every round is thus in the ledger exactly once. What is not restored: the
fleet state learned from earlier rounds (observed energy, batteries, participation history of
the utility selector), the wrapped strategy's own state (e.g. FedAdam's moments) and clients'
error-feedback residuals; the random selector and the simulated failures are seeded per round
and repeat exactly. See docs/robustness.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fedenergy.ledger import Ledger
from fedenergy.settings import Settings


def ledger_path(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    return path / "ledger.sqlite" if path.is_dir() or path.suffix != ".sqlite" else path


def load_run(run_dir: str | Path) -> tuple[Settings, dict]:
    """The settings and ``runs`` row of the latest run in ``run_dir``; ValueError if there is
    none or its settings are no longer valid."""
    path = ledger_path(run_dir)
    if not path.is_file():
        raise ValueError(f"no ledger at {path}")
    with Ledger(path) as ledger:
        runs = ledger.runs()
        if not runs:
            raise ValueError(f"{path} holds no run")
        run = runs[-1]
        run["last_round"] = ledger.last_round(run["run_id"])
    try:
        config = json.loads(run["config_json"])
        if not isinstance(config, dict):
            raise ValueError("config_json is not an object")
        config["out"] = str(path.parent)
        settings = Settings.from_run_config(config).validate()
    except (ValueError, TypeError) as err:
        raise ValueError(f"run {run['run_id']}: its saved settings cannot be used: {err}") from None
    return settings, run


def resume_run(
    settings: Settings,
    run: dict,
    on_round: Callable | None = None,
    verbose: bool = False,
) -> dict:
    """Continue ``run`` (from :func:`load_run`) in a new simulation; return the summary."""
    from fedenergy.server.coordinator import _PENDING_RESUMES, resume_next
    from fedenergy.sim.engine import simulate

    resume_next(settings.out, run["run_id"])
    try:
        return simulate(settings, on_round=on_round, verbose=verbose)
    finally:  # not left behind if the engine failed before the coordinator started
        _PENDING_RESUMES.pop(str(Path(settings.out).resolve()), None)
