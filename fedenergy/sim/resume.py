"""Resume a simulated run from its last committed round (``fedenergy simulate --resume OUT``).

The run's directory holds everything needed: the ledger (``ledger.sqlite``) with the run's
settings (``runs.config_json``) and its committed rounds, and the model checkpoints apart from
it (``checkpoints/<run_id>/round-<r>.npz``, :mod:`fedenergy.ledger.checkpoints`). A resume
plans the run again from its saved settings, reopens the SAME run id (status back to
``running``, a row in ``resumes``), starts a fresh Simulation Engine, queries the nodes again
(that query's energy is accounted in the first resumed round, as ``call='query'`` rows) and runs
the rounds after the last committed one, from that round's checkpoint, up to the run's
``rounds``; a checkpoint of a round after it (written, its commit never done) is dropped. Every
round is thus in the ledger exactly once. A ledger written before checkpoints were kept apart
resumes from its ``models`` table. What is not restored: the fleet state learned from earlier
rounds (observed energy, batteries, participation history of the utility selector), the wrapped
strategy's own state (e.g. FedAdam's moments) and clients' error-feedback residuals; the random
selector and the simulated failures are seeded per round and repeat exactly. See
docs/robustness.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fedenergy.ledger import CheckpointStore, Ledger, committed_model
from fedenergy.plan import RunPlan, plan_run
from fedenergy.settings import Settings


def ledger_path(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    return path / "ledger.sqlite" if path.is_dir() or path.suffix != ".sqlite" else path


def load_run(run_dir: str | Path) -> tuple[RunPlan, dict]:
    """The plan that resumes the latest run in ``run_dir`` and that run's ``runs`` row (with
    ``last_round``); ValueError if there is none, its settings are no longer valid or, unless
    it is completed, its last committed round has no checkpoint."""
    path = ledger_path(run_dir)
    if not path.is_file():
        raise ValueError(f"no ledger at {path}")
    with Ledger(path) as ledger:
        runs = ledger.runs()
        if not runs:
            raise ValueError(f"{path} holds no run")
        run = runs[-1]
        run_id = run["run_id"]
        last = run["last_round"] = ledger.last_round(run_id)
        store = CheckpointStore.for_run(path.parent, run_id)
        if (
            run["status"] != "completed"
            and last is not None
            and committed_model(ledger, store, run_id, last) is None
        ):
            raise ValueError(
                f"run {run_id}: round {last} has no checkpoint in {store.directory} (nor in the "
                "ledger's models table): cannot resume"
            )
    try:
        config = json.loads(run["config_json"])
        if not isinstance(config, dict):
            raise ValueError("config_json is not an object")
        config["out"] = str(path.parent)
        plan = plan_run(Settings.from_run_config(config), resume_run_id=run_id)
    except (ValueError, TypeError) as err:
        raise ValueError(f"run {run_id}: its saved settings cannot be used: {err}") from None
    return plan, run


def resume(run_dir: str | Path, on_round: Callable | None = None, verbose: bool = False) -> dict:
    """Continue the latest run in ``run_dir`` in a new simulation; return the summary.
    ValueError as :func:`load_run`, or if that run is already completed."""
    from fedenergy.sim.engine import simulate

    plan, run = load_run(run_dir)
    if run["status"] == "completed":
        raise ValueError(f"run {run['run_id']} in {run_dir} is already completed")
    return simulate(plan, on_round=on_round, verbose=verbose)
