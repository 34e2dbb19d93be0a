"""EnergyAwareStrategy: wraps any Flower strategy (FedAvg, FedProx, FedAdam, ...).

The wrapped strategy keeps its own configuration and aggregation; this wrapper decides WHO
participates (a Selector fed by per-node energy forecasts) and HOW each update is compressed
(a CompressionPolicy), adds each node's per-message config, takes every EnergyReport out of the
replies (validated; the wrapped strategy never sees it), decodes compressed updates to float32
weights before the wrapped strategy aggregates, accounts the energy wasted by failed or silent
nodes, and commits each round to the Ledger in one transaction before the next round starts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedenergy.codecs import (
    CodecSpec,
    PayloadError,
    decode_reply_content,
    encode_global,
    expected_nbytes,
    numpy_arrays,
    pack_payload,
    template_of,
)
from fedenergy.ledger import EnergyRow, Ledger, rows_from_report
from fedenergy.protocol import (
    ARRAYS_RECORD,
    CFG_CODEC,
    CFG_DEVICE,
    CFG_DOWNLINK,
    CFG_LINK,
    CONFIG_RECORD,
    METRICS_RECORD,
    NUM_EXAMPLES,
    OFFLINE_REASON,
    PAYLOAD_KEY,
    REPORT_KEY,
    SERVER_ROUND,
    TRAIN_LOSS,
)
from fedenergy.report import Component, EnergyReport, Expected, ReportError, validate_report
from fedenergy.server.fleet_state import UNKNOWN_PARTITION, FleetState, NodeInfo
from fedenergy.server.policies import CompressionPolicy, FixedPolicy
from fedenergy.server.selectors import RandomSelector, Selector
from fedenergy.wire import message_bytes

log = logging.getLogger("fedenergy")
MAX_EXAMPLES = 10**9  # num-examples above this in one reply is not a device's local data set
FAILED_SOURCE = "server estimate of a failed call: forecast download + compute (modeled)"


@dataclass
class RoundOutcome:
    """What one round produced, handed to the progress callback after the commit."""

    server_round: int
    accuracy: float | None
    loss: float | None
    joules: float
    selected: int
    succeeded: int
    failed: int
    rejected: list[tuple[int, str]] = field(default_factory=list)


class _SelectedGrid:
    """A Grid view exposing only the chosen node ids, so the wrapped strategy's own sampling
    returns exactly the selection while it still builds its messages its own way."""

    def __init__(self, grid: Grid, node_ids: Sequence[int]) -> None:
        self._grid, self._ids = grid, list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._ids)

    def __getattr__(self, name: str):
        return getattr(self._grid, name)


class EnergyAwareStrategy(Strategy):
    """Selection, compression and energy accounting around a wrapped Flower strategy."""

    def __init__(
        self,
        base: Strategy,
        fleet: FleetState,
        ledger: Ledger,
        run_id: str,
        common_config: dict,
        fraction_train: float = 0.5,
        fraction_evaluate: float = 0.0,
        selector: Selector | None = None,
        eval_selector: Selector | None = None,
        policy: CompressionPolicy | None = None,
        query_fn: Callable[[Grid, list[int]], list[NodeInfo]] | None = None,
        learn_fn: Callable[[int, EnergyReport], NodeInfo] | None = None,
        declare_fn: Callable[[Grid, list[int]], list[NodeInfo]] | None = None,
    ) -> None:
        self.base = base
        self.fleet = fleet
        self.ledger = ledger
        self.run_id = run_id
        self.common_config = dict(common_config)
        self.fraction_train = fraction_train
        self.fraction_evaluate = fraction_evaluate
        self.selector = selector or RandomSelector(seed=fleet.seed, stream=0)
        self.eval_selector = eval_selector or RandomSelector(seed=fleet.seed, stream=1)
        self.policy = policy or FixedPolicy()
        self.query_fn = query_fn  # None: lazy discovery (new nodes start unknown)
        self.learn_fn = learn_fn  # profile of an unknown node from its first valid report
        # declared discovery: the profiles nodes declared at registration (query_fn is None)
        self.declare_fn = declare_fn
        # nodes known by a declared profile whose first reply (partition, data) is still due
        self.declared_pending: set[int] = set()
        # Let the wrapped strategy "sample" all of the nodes we hand it.
        for attr, value in (
            ("fraction_train", 1.0),
            ("fraction_evaluate", 1.0),
            ("min_train_nodes", 1),
            ("min_evaluate_nodes", 1),
            ("min_available_nodes", 1),
        ):
            if hasattr(base, attr):
                setattr(base, attr, value)
        self._rows: list[EnergyRow] = []
        self._counts = {"selected": 0, "succeeded": 0, "failed": 0}
        self._rejected: list[tuple[int, str]] = []
        # the same rejections with their call, and the flags of accepted reports, for the ledger
        self._rejections: list[tuple[int, str, str]] = []
        self._flags: list[tuple[int, str, str]] = []
        self.model_to_save: dict | None = None  # set by the coordinator: the round's global model
        self._global: dict | None = None  # numpy copy of the global model sent this round
        self._codecs: dict[int, CodecSpec] = {}  # uplink codec asked of each node this round
        self._sent: dict[tuple[int, str], int] = {}  # (node, call) -> bytes sent this round
        self._downlink: dict[str, ArrayRecord] = {}  # this round's global model per codec
        self._download_bytes: dict[str, int] = {}  # this round's train message size per codec
        self._train_config: ConfigRecord | None = None
        self._global_record: ArrayRecord | None = None
        self._payload_cache: dict[str, int] = {}

    # -- selection -------------------------------------------------------------------------------
    def _k(self, fraction: float) -> int:
        n = len(self.fleet.nodes)
        return 0 if fraction <= 0 else max(1, math.floor(fraction * n + 1e-9))

    def forecast(self, node_id: int):
        """The forecast of ``node_id``'s next train call with the codecs the policy gives it."""
        st = self.fleet[node_id]
        spec = self.policy.codec_for(st, 0)
        payload = self._payload_bytes(spec)
        down = self.policy.downlink_for(st, 0)
        self.fleet.download_bytes = self._download_size(down)
        return self.fleet.forecast(node_id, spec.label(), payload)

    def _payload_bytes(self, spec: CodecSpec) -> int:
        """Raw update-payload bytes of ``spec`` for this round's model (cached per round)."""
        if self._global is None:
            return 0
        label = spec.label()
        if label not in self._payload_cache:
            self._payload_cache[label] = expected_nbytes(spec, template_of(self._global))
        return self._payload_cache[label]

    def _downlink_arrays(self, spec: CodecSpec) -> ArrayRecord | None:
        """The global model as sent with downlink codec ``spec`` (cached for the round)."""
        if spec.name == "none" or self._global is None:
            return None
        label = spec.label()
        if label not in self._downlink:
            template = template_of(self._global)
            blob = pack_payload(encode_global(self._global, spec), spec, template)
            self._downlink[label] = ArrayRecord({PAYLOAD_KEY: Array(blob)})
        return self._downlink[label]

    def _download_size(self, spec: CodecSpec) -> int:
        """Exact protobuf size of this round's train message with downlink codec ``spec``."""
        label = spec.label()
        if label not in self._download_bytes:
            cfg = ConfigRecord(dict(self._train_config or {}))
            cfg.update(self.common_config)
            cfg[CFG_CODEC] = "none"
            cfg[CFG_DOWNLINK] = label
            encoded = self._downlink_arrays(spec)
            arrays = encoded if encoded is not None else self._global_record
            msg = Message(
                RecordDict({ARRAYS_RECORD: arrays, CONFIG_RECORD: cfg}),
                dst_node_id=0,
                message_type="train",
            )
            self._download_bytes[label] = message_bytes(msg)
        return self._download_bytes[label]

    def admit_without_query(self, grid: Grid, node_ids: list[int]) -> None:
        """Add ``node_ids`` with the profiles they declared at registration (``declare_fn``);
        the others, and every node without declared discovery, as unknown (lazy)."""
        declared = self.declare_fn(grid, node_ids) if self.declare_fn is not None else []
        for info in declared:
            self.fleet.add(info)
            self.declared_pending.add(info.node_id)
        if declared:
            self.ledger.add_nodes(
                self.run_id,
                [(i.node_id, i.partition_id, i.device, i.link, i.country) for i in declared],
            )
        for n in sorted(node_ids):
            self.fleet.add_unknown(n)  # a no-op for the declared ones

    def _admit_new_nodes(self, grid: Grid) -> None:
        """Admit nodes that registered after the start (deployment: late joiners): query them,
        or read their declared profiles, or with lazy discovery add them as unknown."""
        new = [n for n in grid.get_node_ids() if n not in self.fleet]
        if new and self.query_fn is None:
            self.admit_without_query(grid, new)
        elif new:
            for info in self.query_fn(grid, new):
                self.fleet.add(info)
                self.ledger.add_nodes(
                    self.run_id,
                    [(info.node_id, info.partition_id, info.device, info.link, info.country)],
                )

    def _per_node(self, msgs: Iterable[Message], call: str, server_round: int) -> list[Message]:
        out = []
        for m in msgs:
            nid = m.metadata.dst_node_id
            st = self.fleet[nid]
            content = RecordDict(dict(m.content.items()))
            key = next(k for k, v in m.content.items() if isinstance(v, ConfigRecord))
            cfg = ConfigRecord(dict(m.content[key]))
            cfg.update(self.common_config)
            # an unknown node uses its own profile; so does a declared one until its first
            # reply (its report is checked against the declaration, not told it)
            if st.known and nid not in self.declared_pending:
                cfg[CFG_DEVICE], cfg[CFG_LINK] = st.device.id, st.link.id
            if call == "train":
                spec = self.policy.codec_for(st, server_round)
                self._codecs[nid] = spec
                cfg[CFG_CODEC] = spec.label()
                down = self.policy.downlink_for(st, server_round)
                cfg[CFG_DOWNLINK] = down.label()
                if (encoded := self._downlink_arrays(down)) is not None:
                    arrays_key = next(k for k, v in m.content.items() if isinstance(v, ArrayRecord))
                    content[arrays_key] = encoded
            content[key] = cfg
            msg = Message(
                content=content,
                message_type=m.metadata.message_type,
                dst_node_id=nid,
                group_id=m.metadata.group_id,
            )
            self._sent[(nid, call)] = message_bytes(msg)
            out.append(msg)
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._admit_new_nodes(grid)
        self._global = numpy_arrays(arrays)
        self._global_record = arrays
        self._train_config = config
        self._downlink, self._download_bytes, self._payload_cache = {}, {}, {}
        chosen = self.selector.select(
            server_round,
            self.fleet.online(server_round),
            self._k(self.fraction_train),
            self.fleet,
            self.forecast,
        )
        self._counts["selected"] += len(chosen)
        if not chosen:
            return []
        msgs = self.base.configure_train(server_round, arrays, config, _SelectedGrid(grid, chosen))
        return self._per_node(msgs, "train", server_round)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        chosen = self.eval_selector.select(
            server_round,
            self.fleet.online(server_round),
            self._k(self.fraction_evaluate),
            self.fleet,
            self.forecast,
        )
        if not chosen:
            return []
        msgs = self.base.configure_evaluate(
            server_round, arrays, config, _SelectedGrid(grid, chosen)
        )
        return self._per_node(msgs, "evaluate", server_round)

    # -- accounting ------------------------------------------------------------------------------
    def _failed_rows(self, node_id: int, call: str, reason: str) -> None:
        """Energy a failed or silent node still spent: the download we sent it and, for a train
        call, the forecast compute (it may have trained before failing). Marked failed."""
        if node_id not in self.fleet:
            return
        st = self.fleet[node_id]
        down = self._sent.get((node_id, call), 0)
        fc = self.forecast(node_id) if call == "train" else None
        from fedenergy.physics.network import infrastructure_energy_j, radio_energy

        radio = radio_energy(st.link, down, 0, gap_s=0.0)
        infra = infrastructure_energy_j(down, self.fleet.infra_kwh_per_gb)
        src = f"{FAILED_SOURCE}; {reason[:120]}"
        if not st.known:
            src += f"; link unknown, prior {st.link.id}"
        dl = (
            Component("download", "radio", radio.download_j, "modeled", src),
            Component("download", "infrastructure", infra, "modeled", src),
        )
        self._rows.append(
            EnergyRow(
                str(node_id),
                call,
                "download",
                radio.download_j + infra,
                down,
                radio.download_s,
                "failed",
                dl,
            )
        )
        if fc is not None:
            comp = (Component(call, "compute", fc.compute_j, "modeled", src),)
            self._rows.append(
                EnergyRow(str(node_id), call, call, fc.compute_j, 0, 0.0, "failed", comp)
            )

    def take_reports(self, replies: Iterable[Message], call: str, count: bool) -> list[Message]:
        """Move every reply's EnergyReport into this round's rows; return the replies the wrapped
        strategy may aggregate. Error replies and replies that never arrived are accounted as
        failed with the server's estimate of the energy they spent; replies whose report is
        missing or invalid are dropped and the reason recorded, as are replies whose update or
        metrics could not be aggregated (docs/robustness.md)."""
        kept, answered = [], set()
        for msg in replies:
            nid = msg.metadata.src_node_id
            if (nid, call) not in self._sent and not msg.has_error():
                log.warning("dropped a %s reply from node %s: no message was sent to it", call, nid)
                continue
            if nid in answered:
                log.warning("dropped a second %s reply from node %s", call, nid)
                continue
            answered.add(nid)
            if msg.has_error():
                if (nid, call) not in self._sent:
                    # an error the SuperLink made for a node that is gone: it carries no usable
                    # node id, so that node is accounted below as one that never replied
                    answered.discard(nid)
                    log.info("error reply without a known node (%s): %s", nid, msg.error.reason)
                    continue
                if count:
                    self._counts["failed"] += 1
                if str(msg.error.reason).startswith(OFFLINE_REASON):
                    continue  # never reached the node: nothing spent
                self._failed_rows(nid, call, f"error reply: {msg.error.reason}")
                continue
            rec = msg.content.config_records.get(REPORT_KEY)
            try:
                if rec is None:
                    raise ReportError("reply carries no energy report")
                report, flags = validate_report(rec, self._expected(nid, call, msg))
            except ReportError as err:
                self._reject(nid, call, str(err))
                if count:
                    self._counts["failed"] += 1
                self._failed_rows(nid, call, f"report rejected: {err}")
                continue
            del msg.content[REPORT_KEY]
            self._learn(nid, report)
            self._flags.extend((nid, call, f) for f in flags)
            self._rows.extend(rows_from_report(nid, report))
            try:
                if call in ("train", "evaluate"):
                    self._check_reply(msg, call)
            except PayloadError as err:
                self._reject(nid, call, f"update: {err}")  # its reported energy: wasted
                if count:
                    self._counts["failed"] += 1
                continue
            if count:
                self._counts["succeeded"] += 1
            kept.append(msg)
        for nid, c in [k for k in self._sent if k[1] == call]:
            if nid not in answered:
                if count:
                    self._counts["failed"] += 1
                self._failed_rows(nid, c, "no reply before the round timeout")
        return self._same_metric_keys(kept, call, count)

    def _learn(self, node_id: int, report: EnergyReport) -> None:
        """Lazy discovery: an unknown node's first valid report names its profile. Declared
        discovery: a declared node's first valid report (checked against its declared device
        and link) adds its partition and data."""
        if self.learn_fn is None or node_id not in self.fleet:
            return
        if node_id in self.declared_pending:
            self.declared_pending.discard(node_id)
            self.fleet.complete(self.learn_fn(node_id, report))
        elif not self.fleet[node_id].known:
            self.fleet.add(self.learn_fn(node_id, report))
        else:
            return
        info = self.fleet[node_id].info
        self.ledger.add_nodes(
            self.run_id, [(info.node_id, info.partition_id, info.device, info.link, info.country)]
        )

    def _check_reply(self, msg: Message, call: str) -> None:
        """The reply's content must be aggregatable: one MetricRecord with a positive, finite
        ``num-examples`` and finite numbers; for an uncompressed train update, one ArrayRecord
        with the global model's names, shapes and float dtypes, all finite (compressed updates
        are checked by decode_updates). Raise PayloadError with the reason."""
        metrics = msg.content.metric_records
        if len(metrics) != 1:
            raise PayloadError(f"expected one MetricRecord, got {len(metrics)}")
        (rec,) = metrics.values()
        for key, v in rec.items():
            values = v if isinstance(v, list) else [v]
            if not all(_finite(x) for x in values):
                raise PayloadError(f"metric {str(key)[:40]!r} is not a finite number")
        n = rec.get(NUM_EXAMPLES)
        if isinstance(n, list) or n is None or not 0 < n <= MAX_EXAMPLES:
            raise PayloadError(f"num-examples must be in (0, {MAX_EXAMPLES}], got {n!r:.40}")
        if call != "train":
            return
        arrays = msg.content.array_records
        if len(arrays) != 1:
            raise PayloadError(f"expected one ArrayRecord, got {len(arrays)}")
        spec = self._codecs.get(msg.metadata.src_node_id)
        if (spec is not None and spec.name != "none") or self._global is None:
            return
        (rec,) = arrays.values()
        if list(rec.keys()) != list(self._global):
            raise PayloadError("update arrays do not have the global model's names")
        for k, g in self._global.items():
            a = rec[k]
            # any float dtype is fine (FedAdam's global is float64, clients send float32)
            if tuple(a.shape) != tuple(g.shape) or a.dtype not in ("float16", "float32", "float64"):
                raise PayloadError(
                    f"update array {k!r}: {a.dtype} {a.shape}, expected a float {tuple(g.shape)}"
                )
            try:
                x = a.numpy()
            except Exception as err:  # a malformed .npy buffer
                raise PayloadError(
                    f"unreadable update array {k!r} ({type(err).__name__})"
                ) from None
            if x.shape != g.shape or (
                np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all()
            ):
                raise PayloadError(f"update array {k!r} is malformed or not finite")

    def _same_metric_keys(self, kept: list[Message], call: str, count: bool) -> list[Message]:
        """Flower's aggregation needs the same metric names in every reply: keep the replies
        with the most common set (ties: the first seen), reject the others."""
        if call not in ("train", "evaluate") or len(kept) < 2:
            return kept
        keysets = [frozenset(next(iter(m.content.metric_records.values())).keys()) for m in kept]
        common = max(dict.fromkeys(keysets), key=keysets.count)
        out = []
        for msg, keys in zip(kept, keysets, strict=True):
            if keys == common:
                out.append(msg)
                continue
            nid = msg.metadata.src_node_id
            self._reject(nid, call, f"metric names {sorted(keys)} differ from the other replies")
            if count:
                self._counts["succeeded"] -= 1
                self._counts["failed"] += 1
        return out

    def _reject(self, node_id: int, call: str, reason: str) -> None:
        """Record a rejected reply (report or update payload) with its reason; energy already
        accounted from its (valid) report is marked failed: spent on a result not used."""
        for i, r in enumerate(self._rows):
            if r.node_id == str(node_id) and r.call == call and r.status == "ok":
                self._rows[i] = replace(r, status="failed")
        self._rejected.append((node_id, reason))
        self._rejections.append((node_id, call, reason))
        # one line per reply at debug; commit_round logs one warning per round (a 10,000-node
        # fleet can reject hundreds of empty-partition replies a round)
        log.debug("rejected %s reply from node %s: %s", call, node_id, reason)

    def _expected(self, node_id: int, call: str, msg: Message) -> Expected:
        """What the server knows of the call a report answers (docs/robustness.md)."""
        st = self.fleet[node_id] if node_id in self.fleet else None
        if st is not None and not st.known:
            st = None  # lazy discovery: its report is checked against its own claimed profile
        # a declared node's partition is learned from its first report
        part = st.info.partition_id if st is not None else UNKNOWN_PARTITION
        payload = 0
        for rec in msg.content.array_records.values():
            payload += sum(len(a.data) for a in rec.values())
        cfg = self._train_config if call == "train" else None
        rnd = cfg.get(SERVER_ROUND) if cfg is not None else None
        return Expected(
            kind=call,
            server_round=rnd if call == "train" and isinstance(rnd, int) else None,
            partition_id=part if part != UNKNOWN_PARTITION else None,
            device=st.device if st is not None else None,
            link=st.link if st is not None else None,
            infra_kwh_per_gb=self.fleet.infra_kwh_per_gb,
            bytes_sent=self._sent.get((node_id, call)) or None,
            reply_payload_bytes=payload,
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept = self.decode_updates(self.take_reports(replies, "train", count=True))
        # aggregate in partition order, not arrival order: float sums then repeat run to run
        kept.sort(key=self._order_key)
        for msg in kept:
            metrics = msg.content.metric_records.get(METRICS_RECORD)
            loss = metrics.get(TRAIN_LOSS) if metrics is not None else None
            nid = msg.metadata.src_node_id
            if nid in self.fleet:
                self.fleet.observe_train(
                    nid, server_round, float(loss) if loss is not None else None
                )
                n = metrics.get(NUM_EXAMPLES) if metrics is not None else None
                if isinstance(n, (int, float)) and n > 0 and not self.fleet[nid].info.num_examples:
                    self.fleet.set_examples(nid, int(n))
        return self.base.aggregate_train(server_round, kept)

    def _order_key(self, msg: Message) -> tuple[int, int]:
        nid = msg.metadata.src_node_id
        return (self.fleet[nid].info.partition_id if nid in self.fleet else -1, nid)

    def decode_updates(self, replies: Iterable[Message]) -> list[Message]:
        """Replace every encoded update by the full float32 weights ``global + update`` so the
        wrapped strategy aggregates weights as usual; a reply whose payload is malformed (or
        encoded with another codec than asked) is dropped, counted as failed and its reason
        recorded (its energy report is already in the ledger: that energy was spent)."""
        kept = []
        for msg in replies:
            nid = msg.metadata.src_node_id
            spec = self._codecs.get(nid)
            if spec is None or spec.name == "none":
                kept.append(msg)
                continue
            try:
                if self._global is None:
                    raise PayloadError("no global model was sent this round")
                content = decode_reply_content(msg.content, spec, self._global)
            except PayloadError as err:
                self._reject(nid, "train", f"update payload: {err}")
                self._counts["succeeded"] -= 1
                self._counts["failed"] += 1
                continue
            msg.content = content
            kept.append(msg)
        return kept

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.base.aggregate_evaluate(
            server_round, self.take_reports(replies, "evaluate", count=False)
        )

    def summary(self) -> None:
        self.base.summary()

    def commit_round(
        self, server_round: int, accuracy: float | None, loss: float | None
    ) -> RoundOutcome:
        """Write the buffered rows of ``server_round`` to the ledger in one transaction, then
        update the fleet state (observed energy, batteries) and the compression policy."""
        rows, counts = self._rows, self._counts
        if self._rejections:
            nid, call, reason = self._rejections[0]
            more = len(self._rejections) - 1
            log.warning(
                "round %d: rejected %s reply from node %s: %s%s",
                server_round,
                call,
                nid,
                reason,
                f" (and {more} more; reasons in the ledger's rejections table)" if more else "",
            )
        self.ledger.commit_round(
            self.run_id,
            server_round,
            rows,
            accuracy,
            loss,
            **counts,
            rejections=self._rejections,
            flags=self._flags,
        )
        self.fleet.observe_rows(rows, {n: s.label() for n, s in self._codecs.items()})
        self.fleet.recharge()
        self.policy.observe(server_round, accuracy)
        outcome = RoundOutcome(
            server_round,
            accuracy,
            loss,
            sum(r.joules for r in rows),
            rejected=self._rejected,
            **counts,
        )
        self._rows, self._rejected, self._sent, self._codecs = [], [], {}, {}
        self._rejections, self._flags, self.model_to_save = [], [], None
        self._counts = {"selected": 0, "succeeded": 0, "failed": 0}
        return outcome

    # -- the round loop --------------------------------------------------------------------------
    def start(  # type: ignore[override]
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
        on_round: Callable[[RoundOutcome], None] | None = None,
        target_accuracy: float | None = None,
        first_round: int = 1,
    ) -> Result:
        """Flower's round loop (train, evaluate, server-side evaluation), committing every round
        to the ledger before the next begins and reporting it to ``on_round``; stops early once
        the server-side accuracy reaches ``target_accuracy`` (``num_rounds`` is then a cap)."""
        train_config = train_config or ConfigRecord()
        evaluate_config = evaluate_config or ConfigRecord()
        result, arrays = Result(), initial_arrays
        for rnd in range(first_round, num_rounds + 1):  # first_round > 1: a resumed run
            replies = grid.send_and_receive(
                self.configure_train(rnd, arrays, ConfigRecord(dict(train_config)), grid),
                timeout=timeout,
            )
            new_arrays, train_metrics = self.aggregate_train(rnd, replies)
            if new_arrays is not None:
                arrays = result.arrays = new_arrays
            if train_metrics is not None:
                result.train_metrics_clientapp[rnd] = train_metrics
            replies = grid.send_and_receive(
                self.configure_evaluate(rnd, arrays, ConfigRecord(dict(evaluate_config)), grid),
                timeout=timeout,
            )
            eval_metrics = self.aggregate_evaluate(rnd, replies)
            if eval_metrics is not None:
                result.evaluate_metrics_clientapp[rnd] = eval_metrics
            acc = loss = None
            if evaluate_fn is not None and (res := evaluate_fn(rnd, arrays)) is not None:
                result.evaluate_metrics_serverapp[rnd] = res
                acc, loss = res.get("accuracy"), res.get("loss")
            outcome = self.commit_round(rnd, acc, loss)
            if on_round is not None:
                on_round(outcome)
            if target_accuracy and acc is not None and acc >= target_accuracy:
                log.info("target accuracy %.4f reached in round %d", target_accuracy, rnd)
                break
        result.arrays = arrays
        return result


def _finite(x) -> bool:
    """A finite int or float (bools and numbers beyond float range are not)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False
