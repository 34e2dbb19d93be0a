"""The ClientApp: Flower's quickstart handlers, metered by fedenergy's energy mod."""

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedenergy import energy_mod
from quickstart_energy.task import Net, load_data
from quickstart_energy.task import test as test_fn
from quickstart_energy.task import train as train_fn

# fedenergy: the mod meters every call (bytes both ways, the compute on the node's device)
app = ClientApp(mods=[energy_mod])
DEVICE = "cuda:0" if torch.cuda.is_available() else "cpu"


def _data(context: Context):
    return load_data(
        int(context.node_config["partition-id"]),
        int(context.node_config["num-partitions"]),
        int(context.run_config["batch-size"]),
        int(context.run_config["examples-per-node"]),
        str(context.run_config["partitioning"]),
        float(context.run_config["dirichlet-alpha"]),
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the global model on this node's data."""
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    trainloader, _ = _data(context)
    train_loss = train_fn(
        model,
        trainloader,
        int(context.run_config["local-epochs"]),
        float(msg.content["config"]["lr"]),
        DEVICE,
    )
    metrics = {"train_loss": train_loss, "num-examples": len(trainloader.dataset)}
    content = RecordDict(
        {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)}
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the global model on this node's test data."""
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    _, testloader = _data(context)
    eval_loss, eval_acc = test_fn(model, testloader, DEVICE)
    metrics = {
        "eval_loss": eval_loss,
        "eval_acc": eval_acc,
        "num-examples": len(testloader.dataset),
    }
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
