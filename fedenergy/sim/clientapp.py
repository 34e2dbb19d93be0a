"""The ClientApp of the built-in tasks: train / evaluate / query handlers wrapped by two mods,
the simulation's faults (outermost: offline rounds, device failures) and the energy mod.

``fedenergy simulate`` runs it on the virtual SuperNodes; the repository's ``client/app.py``
re-exports it as the Flower app component of ``flwr run .``."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from fedenergy.client.mod import node_catalog, resolve_profile, stated_work_mod, work_record
from fedenergy.codecs import decode_downlink, encode_reply_arrays, numpy_arrays, parse_codec
from fedenergy.physics.flops import FlopCache
from fedenergy.protocol import (
    ARRAYS_RECORD,
    CFG_ALPHA,
    CFG_BATCH_SIZE,
    CFG_CODEC,
    CFG_DOWNLINK,
    CFG_EPOCHS,
    CFG_PARTITIONER,
    CFG_SEED,
    CFG_TASK,
    CODEC_RECORD,
    CONFIG_RECORD,
    EVAL_ACC,
    EVAL_LOSS,
    METRICS_RECORD,
    NODE_DEVICE,
    NODE_LINK,
    NUM_EXAMPLES,
    NUM_PARTITIONS,
    PARTITION_ID,
    PROFILE_KEYS,
    PROFILE_RECORD,
    PROXIMAL_MU,
    SERVER_ROUND,
    TRAIN_LOSS,
    WORK_KEY,
)
from fedenergy.sim.faults import simulated_faults
from fedenergy.sim.tasks import DataConfig, evaluate, get_task, train_epochs

torch.set_num_threads(1)

# FLOP counts are cached per model and input shape for the life of this process.
FLOPS = FlopCache()

# its handlers state their work (FlopCache): the mod need not count torch work
app = ClientApp(mods=[simulated_faults, stated_work_mod])


def _config(msg: Message) -> ConfigRecord:
    return msg.content.config_records.get(CONFIG_RECORD, ConfigRecord())


def _data(msg: Message, context: Context):
    cfg = _config(msg)
    task = get_task(str(cfg.get(CFG_TASK, "digits")), node_catalog(msg, context))
    pid = int(context.node_config[PARTITION_ID])
    data_cfg = DataConfig(
        num_partitions=int(context.node_config[NUM_PARTITIONS]),
        seed=int(cfg.get(CFG_SEED, 0)),
        partitioner=str(cfg.get(CFG_PARTITIONER, "dirichlet")),
        alpha=float(cfg.get(CFG_ALPHA, 0.5)),
    )
    train, test = task.client_data(pid, data_cfg)
    return task, train, test, cfg


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Load the global model, train locally, return the new weights (or, with a codec, the
    encoded update new - global) and the work done."""
    task, data, _, cfg = _data(msg, context)
    spec = parse_codec(str(cfg.get(CFG_CODEC, "none")))
    model = task.make_model()
    global_arrays = msg.content[ARRAYS_RECORD]
    downlink = str(cfg.get(CFG_DOWNLINK, "none"))
    if downlink != "none":  # the global model arrived encoded: decode it against our model
        template = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        base = decode_downlink(global_arrays, downlink, template)
        global_arrays = ArrayRecord({k: Array(v) for k, v in base.items()})
    model.load_state_dict(global_arrays.to_torch_state_dict())
    epochs, batch = int(cfg.get(CFG_EPOCHS, 1)), int(cfg.get(CFG_BATCH_SIZE, 32))
    seed = int(cfg.get(CFG_SEED, 0)) * 100003 + int(cfg.get(SERVER_ROUND, 0))
    mu = float(cfg.get(PROXIMAL_MU, 0.0))  # set by Flower's FedProx
    loss, steps = train_epochs(model, data, epochs, batch, float(cfg.get("lr", 0.1)), seed, mu)
    flops = FLOPS.training(model, data.x, len(data), batch, epochs)
    threads = torch.get_num_threads()
    content = RecordDict(
        {
            ARRAYS_RECORD: ArrayRecord(model.state_dict()),
            METRICS_RECORD: MetricRecord({TRAIN_LOSS: loss, NUM_EXAMPLES: len(data)}),
            WORK_KEY: work_record("train", flops, steps, min(batch, len(data)), threads),
        }
    )
    if spec.name != "none":
        new = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        rng = np.random.default_rng(
            [
                int(cfg.get(CFG_SEED, 0)),
                int(cfg.get(SERVER_ROUND, 0)),
                int(context.node_config[PARTITION_ID]),
            ]
        )
        arrays, label = encode_reply_arrays(
            new, numpy_arrays(global_arrays), spec, context.state, rng
        )
        content[ARRAYS_RECORD], content[CODEC_RECORD] = arrays, label
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate_local(msg: Message, context: Context) -> Message:
    """Evaluate the global model on this node's local test split."""
    task, _, data, _ = _data(msg, context)
    model = task.make_model()
    model.load_state_dict(msg.content[ARRAYS_RECORD].to_torch_state_dict())
    loss, acc = evaluate(model, data)
    flops = FLOPS.evaluation(model, data.x, len(data))
    return Message(
        RecordDict(
            {
                METRICS_RECORD: MetricRecord(
                    {EVAL_LOSS: loss, EVAL_ACC: acc, NUM_EXAMPLES: len(data)}
                ),
                # evaluate() runs one forward pass over the whole local test split
                WORK_KEY: work_record(
                    "evaluate", flops, int(len(data) > 0), len(data), torch.get_num_threads()
                ),
            }
        ),
        reply_to=msg,
    )


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server who this node is: partition, device, link, data size and country (only
    the keys the coordinator reads, ``PROFILE_KEYS``: a node config may hold paths or secrets)."""
    profile = {
        k: v
        for k, v in context.node_config.items()
        if k in PROFILE_KEYS and isinstance(v, (int, float, str, bool))
    }
    profile[NODE_DEVICE], profile[NODE_LINK] = resolve_profile(msg, context)
    if PARTITION_ID in context.node_config and NUM_PARTITIONS in context.node_config:
        profile[NUM_EXAMPLES] = len(_data(msg, context)[1])
    return Message(
        RecordDict({PROFILE_RECORD: ConfigRecord(profile), WORK_KEY: work_record("query", 0)}),
        reply_to=msg,
    )
