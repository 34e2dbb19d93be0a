"""The ServerApp: Flower's FedAvg, wrapped by fedenergy's EnergyAware."""

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedenergy import EnergyAware
from quickstart_energy.task import Net, load_centralized_testset, test

app = ServerApp()


def global_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    """Evaluate the global model on held-out data (before round 1 and after each round)."""
    model = Net()
    model.load_state_dict(arrays.to_torch_state_dict())
    loss, accuracy = test(model, load_centralized_testset(), "cpu")
    return MetricRecord({"accuracy": accuracy, "loss": loss})


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run FedAvg for num-server-rounds rounds, every call's energy in the ledger."""
    torch.manual_seed(0)
    strategy = FedAvg(
        fraction_train=float(context.run_config["fraction-train"]),
        fraction_evaluate=float(context.run_config["fraction-evaluate"]),
    )
    # fedenergy: the same strategy, its calls accounted in an energy ledger
    strategy = EnergyAware(strategy)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(Net().state_dict()),
        num_rounds=int(context.run_config["num-server-rounds"]),
        train_config=ConfigRecord({"lr": float(context.run_config["lr"])}),
        evaluate_fn=global_evaluate,
    )
    final = result.evaluate_metrics_serverapp
    print(f"final accuracy {final[max(final)]['accuracy']:.4f}; ledger {strategy.ledger_path}")
