"""The outbox: the messages a round sends, node by node.

It holds the round's global model, encodes it for each downlink codec (once per codec), knows
the exact size of a train message with each (and the raw update payload with each uplink codec:
what a forecast train call moves), rewrites every message the wrapped strategy built with its
node's config (profile, uplink and downlink codec) and records what it sent to whom: the uplink
codec asked of each node and the bytes of each message, which the collector checks the replies
against.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from fedenergy.codecs import (
    CodecSpec,
    encode_global,
    expected_nbytes,
    numpy_arrays,
    pack_payload,
    template_of,
)
from fedenergy.protocol import (
    ARRAYS_RECORD,
    CFG_CODEC,
    CFG_DEVICE,
    CFG_DOWNLINK,
    CFG_LINK,
    CFG_RADIO_IDLE,
    CONFIG_RECORD,
    PAYLOAD_KEY,
)
from fedenergy.server.columns import NodeState
from fedenergy.server.fleet_state import FleetState
from fedenergy.server.forecast import TrainCall
from fedenergy.server.policies import CompressionPolicy
from fedenergy.server.radio_clock import RunClock
from fedenergy.wire import download_bytes


class Outbox:
    """This round's global model, its encodings and sizes, and what was sent to whom."""

    def __init__(self, common_config: dict) -> None:
        self.common_config = dict(common_config)
        self.global_arrays: dict | None = None  # numpy copy of the global model sent this round
        self.global_record: ArrayRecord | None = None
        self.train_config: ConfigRecord | None = None
        self.codecs: dict[int, CodecSpec] = {}  # uplink codec asked of each node this round
        self.sent: dict[tuple[int, str], int] = {}  # (node, call) -> bytes sent this round
        self._downlink: dict[str, ArrayRecord] = {}  # the global model per downlink codec
        self._download_bytes: dict[str, int] = {}  # train message size per downlink codec
        self._payload_bytes: dict[str, int] = {}  # raw update payload per uplink codec
        self.clock: RunClock | None = None  # the run's clock: each message carries its node's idle

    def begin_round(self, arrays: ArrayRecord, train_config: ConfigRecord) -> None:
        """The global model and train config of the round that starts (sizes are recomputed)."""
        self.global_arrays = numpy_arrays(arrays)
        self.global_record = arrays
        self.train_config = train_config
        self._downlink, self._download_bytes, self._payload_bytes = {}, {}, {}

    def end_round(self) -> None:
        """Forget what was sent this round (the model stays until the next begins)."""
        self.codecs, self.sent = {}, {}

    def record_sent(self, node_id: int, call: str, nbytes: int) -> None:
        """A message of ``nbytes`` (0: not measured) sent to ``node_id`` for ``call``."""
        self.sent[(node_id, call)] = nbytes

    # -- sizes -----------------------------------------------------------------------------------
    def payload_bytes(self, spec: CodecSpec) -> int:
        """Raw update-payload bytes of ``spec`` for this round's model (cached per round)."""
        if self.global_arrays is None:
            return 0
        label = spec.label()
        if label not in self._payload_bytes:
            template = template_of(self.global_arrays)
            self._payload_bytes[label] = expected_nbytes(spec, template)
        return self._payload_bytes[label]

    def downlink_arrays(self, spec: CodecSpec) -> ArrayRecord | None:
        """The global model as sent with downlink codec ``spec`` (None: as it is)."""
        if spec.name == "none" or self.global_arrays is None:
            return None
        label = spec.label()
        if label not in self._downlink:
            template = template_of(self.global_arrays)
            blob = pack_payload(encode_global(self.global_arrays, spec), spec, template)
            self._downlink[label] = ArrayRecord({PAYLOAD_KEY: Array(blob)})
        return self._downlink[label]

    def download_size(self, spec: CodecSpec) -> int:
        """Exact protobuf size of this round's train message with downlink codec ``spec``."""
        label = spec.label()
        if label not in self._download_bytes:
            cfg = ConfigRecord(dict(self.train_config or {}))
            cfg.update(self.common_config)
            cfg[CFG_CODEC] = "none"
            cfg[CFG_DOWNLINK] = label
            encoded = self.downlink_arrays(spec)
            arrays = encoded if encoded is not None else self.global_record
            msg = Message(
                RecordDict({ARRAYS_RECORD: arrays, CONFIG_RECORD: cfg}),
                dst_node_id=0,
                message_type="train",
            )
            self._download_bytes[label] = download_bytes(msg)
        return self._download_bytes[label]

    def train_call(self, policy: CompressionPolicy, node: NodeState) -> TrainCall:
        """What a train call of ``node`` moves this round with the codecs ``policy`` gives it."""
        spec = policy.codec_for(node, 0)
        payload = self.payload_bytes(spec)
        down = policy.downlink_for(node, 0)
        return TrainCall(spec.label(), payload, self.download_size(down))

    # -- messages --------------------------------------------------------------------------------
    def address(
        self,
        msgs: Iterable[Message],
        call: str,
        server_round: int,
        fleet: FleetState,
        policy: CompressionPolicy,
        declared_pending: Collection[int] = (),
    ) -> list[Message]:
        """Each of ``msgs`` (built by the wrapped strategy) rebuilt with its node's config: the
        common config, the node's profile when the server knows it, and for a train call its
        uplink and downlink codecs (the global model encoded accordingly). Records the codec
        asked and the bytes sent."""
        out = []
        for m in msgs:
            nid = m.metadata.dst_node_id
            st = fleet[nid]
            content = RecordDict(dict(m.content.items()))
            key = next(k for k, v in m.content.items() if isinstance(v, ConfigRecord))
            cfg = ConfigRecord(dict(m.content[key]))
            cfg.update(self.common_config)
            # an unknown node uses its own profile; so does a declared one until its first
            # reply (its report is checked against the declaration, not told it)
            if st.known and nid not in declared_pending:
                cfg[CFG_DEVICE], cfg[CFG_LINK] = st.device.id, st.link.id
            if call == "train":
                spec = policy.codec_for(st, server_round)
                self.codecs[nid] = spec
                cfg[CFG_CODEC] = spec.label()
                down = policy.downlink_for(st, server_round)
                cfg[CFG_DOWNLINK] = down.label()
                # a policy that plans local work per node (server/local_work.py) sets its epochs
                epochs_for = getattr(policy, "epochs_for", None)
                if epochs_for is not None and (epochs := epochs_for(st, server_round)) is not None:
                    cfg[policy.epochs_key] = int(epochs)
                if (encoded := self.downlink_arrays(down)) is not None:
                    arrays_key = next(k for k, v in m.content.items() if isinstance(v, ArrayRecord))
                    content[arrays_key] = encoded
            idle = self.clock.sent(fleet, nid, call) if self.clock is not None else None
            if idle is not None:  # the node's radio on the run's clock (< 0: no transfer yet)
                cfg[CFG_RADIO_IDLE] = -1.0 if math.isinf(idle) else float(idle)
            content[key] = cfg
            msg = Message(
                content=content,
                message_type=m.metadata.message_type,
                dst_node_id=nid,
                group_id=m.metadata.group_id,
            )
            self.sent[(nid, call)] = download_bytes(msg)
            out.append(msg)
        return out
