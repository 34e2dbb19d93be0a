"""Every key and reason fedenergy puts on the wire or reads from a config, in one place.

Four kinds of names travel between the coordinator and its nodes:

* **record keys** of a Flower ``Message``'s ``RecordDict`` (Flower's own conventions ``config``,
  ``arrays``, ``metrics``, and fedenergy's ``fedenergy.*`` records);
* **per-message config keys** the coordinator sends in the ``config`` ConfigRecord (``fe-*``,
  plus Flower's own ``server-round`` and FedProx's ``proximal-mu``);
* **node config keys** a SuperNode is started with (``--node-config``; in simulation Flower sets
  ``partition-id`` and ``num-partitions``), and the keys of the QUERY reply's profile record;
* **reasons** of the Error replies fedenergy sends or recognises, and the ``fe:`` token of a
  declared profile in a SuperNode's registration name.

The energy report's own fields are its schema (:mod:`fedenergy.report`); its version is here.
"""

from __future__ import annotations

# -- the report --------------------------------------------------------------------------------
REPORT_SCHEMA_VERSION = 1

# -- record keys of a message's RecordDict -----------------------------------------------------
CONFIG_RECORD = "config"  # Flower's convention: the per-message ConfigRecord
ARRAYS_RECORD = "arrays"  # Flower's convention: the model (or the encoded update)
METRICS_RECORD = "metrics"  # Flower's convention: the reply's one MetricRecord
REPORT_KEY = "fedenergy.report"  # client -> server: the EnergyReport (a ConfigRecord)
WORK_KEY = "fedenergy.work"  # handler -> energy mod: the call kind and its FLOPs
CODEC_RECORD = "fedenergy.codec"  # client -> server: {"codec": label} of an encoded update
PROFILE_RECORD = "profile"  # client -> server: the QUERY reply's profile
PAYLOAD_KEY = "payload"  # the single Array of an encoded update / global model

# -- keys a node keeps in its context.state between calls --------------------------------------
RESIDUAL_KEY = "fedenergy.residual"  # error-feedback residual of top-k / STC (ArrayRecord)
STARTUP_STATE_KEY = "fedenergy.startup"  # the process whose start-up cost was charged
# the node's own device/link as the simulation assigns it (ConfigRecord with the node-config
# keys "device" and "link"), recorded by fedenergy.sim.faults for the energy mod
NODE_PROFILE_STATE_KEY = "fedenergy.node-profile"

# -- per-message config: coordinator -> node ---------------------------------------------------
CFG_PREFIX = "fe-"
CFG_TASK = "fe-task"
CFG_SEED = "fe-seed"
CFG_PARTITIONER = "fe-partitioner"
CFG_ALPHA = "fe-alpha"
CFG_EPOCHS = "fe-epochs"
CFG_BATCH_SIZE = "fe-batch-size"
CFG_FLEET = "fe-fleet"
CFG_INFRA_KWH_PER_GB = "fe-infra-kwh-per-gb"
CFG_BOUNDARY = "fe-boundary"  # accounting boundary of compute and radio: device | marginal
CFG_STARTUP = "fe-startup"  # the ClientApp start-up phase: per-call | off
CFG_INFRA_MODEL = "fe-infra-model"  # physics.infra: "per-byte" | "power"
CFG_CODEC = "fe-codec"  # uplink codec label the node encodes its update with
CFG_DOWNLINK = "fe-downlink"  # codec label of the global model in "arrays"
CFG_DEVICE = "fe-device"  # the device the coordinator knows the node as
CFG_LINK = "fe-link"  # the link the coordinator knows the node as
CFG_CATALOG = "fe-catalog"  # the run's user catalog paths (list of str), read by simulated nodes
# the radio on the run's clock (fedenergy.physics.radio, docs: README "Energy model"): seconds
# since the node's previous transfer ended when the coordinator sent this message (< 0: none
# yet this run; absent: the call stands alone), and whether keep-alive traffic is accounted
CFG_RADIO_IDLE = "fe-radio-idle-s"
CFG_KEEPALIVE = "fe-keepalive"
SERVER_ROUND = "server-round"  # Flower's
LR = "lr"
PROXIMAL_MU = "proximal-mu"  # Flower's FedProx

# -- node config (a SuperNode's --node-config; Flower's simulation sets the first two) ---------
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
NODE_DEVICE = "device"
NODE_LINK = "link"
NODE_COUNTRY = "country"
NODE_METER = "meter"  # "auto": measure with this host's meters; else the device model
NODE_SYSFS_ROOT = "sysfs-root"
NODE_TDP_W = "tdp-w"
NODE_CATALOG = "catalog"  # the node's own user catalog path(s), os.pathsep-separated

# -- the QUERY reply's profile record: only what the coordinator reads -------------------------
# (a node's config may hold paths or secrets: nothing else of it leaves the node)
PROFILE_KEYS = (PARTITION_ID, NODE_DEVICE, NODE_LINK, "num-examples", NODE_COUNTRY)

# -- metric names ------------------------------------------------------------------------------
NUM_EXAMPLES = "num-examples"  # Flower's FedAvg weights by it
TRAIN_LOSS = "train-loss"
EVAL_LOSS = "eval-loss"
EVAL_ACC = "eval-acc"

# -- reasons -----------------------------------------------------------------------------------
# The reason of the Error reply a simulated node sends when it is offline this round and a
# coordinator that does not know it yet (lazy discovery) selected it anyway: the message never
# reached the device, so nothing was spent.
OFFLINE_REASON = "fedenergy: node offline"
FAILURE_REASON = "simulated device failure"  # a simulated device that died after training

# -- declared profiles in SuperNode registration names -----------------------------------------
DECLARATION_PREFIX = "fe:"
