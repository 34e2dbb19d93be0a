"""The fedenergy ServerApp (the coordinator), for `flwr run .`.

The edge of a deployed run: reads ``[tool.flwr.app.config]`` / ``--run-config`` into Settings,
plans the run once (:func:`fedenergy.plan.plan_run`) and runs the federation with that plan;
the ledger and summary land in the ``out`` directory of the run config.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedenergy.plan import plan_run
from fedenergy.server.coordinator import run_federation, settled_node_count
from fedenergy.settings import Settings

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one energy-accounted federation with the run config's settings."""
    config = dict(context.run_config)
    if not config.get("nodes") and "num-supernodes" not in config:
        config["nodes"] = settled_node_count(grid)
    plan = plan_run(Settings.from_run_config(config))
    summary = run_federation(
        grid, plan, radio_clock="wall"
    )  # deployed: the radio on the wall clock
    print(
        f"[fedenergy] total {summary['total_j']:.3f} J over {summary['rounds']} rounds, "
        f"final accuracy {summary['final_accuracy']}; ledger in {plan.settings.out}"
    )
