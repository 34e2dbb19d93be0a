"""EnergyAwareStrategy: wraps any Flower strategy (FedAvg, FedProx, FedAdam, ...).

The wrapped strategy keeps its own configuration and aggregation; this wrapper decides WHO
participates (a Selector), adds each node's per-message config (device, link, task settings),
takes every EnergyReport out of the replies (validated; the wrapped strategy never sees it) and
commits each round to the Ledger in one transaction before the next round starts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedenergy.compression import PayloadError, parse_codec
from fedenergy.ledger import EnergyRow, Ledger, rows_from_report
from fedenergy.report import REPORT_KEY, EnergyReport, ReportError
from fedenergy.strategy.selectors import RandomSelector, Selector
from fedenergy.uplink import CODEC_CFG_KEY, decode_reply_content, numpy_arrays

log = logging.getLogger("fedenergy")


@dataclass(frozen=True)
class NodeInfo:
    """What the server knows of a node: its partition, device and link."""

    node_id: int
    partition_id: int
    device: str
    link: str


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
    """Selection and energy accounting around a wrapped Flower strategy."""

    def __init__(
        self,
        base: Strategy,
        nodes: dict[int, NodeInfo],
        ledger: Ledger,
        run_id: str,
        common_config: dict,
        fraction_train: float = 0.5,
        fraction_evaluate: float = 0.0,
        selector: Selector | None = None,
        eval_selector: Selector | None = None,
    ) -> None:
        self.base = base
        self.nodes = nodes
        self.ledger = ledger
        self.run_id = run_id
        self.common_config = dict(common_config)
        self.fraction_train = fraction_train
        self.fraction_evaluate = fraction_evaluate
        self.selector = selector or RandomSelector(seed=0, stream=0)
        self.eval_selector = eval_selector or RandomSelector(seed=0, stream=1)
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
        # Uplink codec: train replies carry encoded updates, decoded against the global model
        # sent in this round's configure_train.
        self.codec = parse_codec(str(self.common_config.get(CODEC_CFG_KEY, "none")))
        self._global: dict | None = None

    # -- selection -------------------------------------------------------------------------------
    def candidates(self) -> list[int]:
        """Known node ids in a run-independent order: by partition id (Flower's ids are random)."""
        return sorted(self.nodes, key=lambda n: (self.nodes[n].partition_id, n))

    def _k(self, fraction: float) -> int:
        return 0 if fraction <= 0 else max(1, math.floor(fraction * len(self.nodes) + 1e-9))

    def _per_node(self, msgs: Iterable[Message]) -> list[Message]:
        out = []
        for m in msgs:
            nid = m.metadata.dst_node_id
            info = self.nodes[nid]
            content = RecordDict(dict(m.content.items()))
            key = next(k for k, v in m.content.items() if isinstance(v, ConfigRecord))
            cfg = ConfigRecord(dict(m.content[key]))
            cfg.update(self.common_config)
            cfg["fe-device"], cfg["fe-link"] = info.device, info.link
            content[key] = cfg
            out.append(
                Message(
                    content=content,
                    message_type=m.metadata.message_type,
                    dst_node_id=nid,
                    group_id=m.metadata.group_id,
                )
            )
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        chosen = self.selector.select(server_round, self.candidates(), self._k(self.fraction_train))
        self._counts["selected"] += len(chosen)
        if self.codec.name != "none":
            self._global = numpy_arrays(arrays)
        if not chosen:
            return []
        msgs = self.base.configure_train(server_round, arrays, config, _SelectedGrid(grid, chosen))
        return self._per_node(msgs)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        chosen = self.eval_selector.select(
            server_round, self.candidates(), self._k(self.fraction_evaluate)
        )
        if not chosen:
            return []
        msgs = self.base.configure_evaluate(
            server_round, arrays, config, _SelectedGrid(grid, chosen)
        )
        return self._per_node(msgs)

    # -- accounting ------------------------------------------------------------------------------
    def take_reports(self, replies: Iterable[Message], count: bool) -> list[Message]:
        """Move every reply's EnergyReport into this round's rows; return the replies the wrapped
        strategy may aggregate (error replies pass through so it can log them; replies whose
        report is missing or invalid are dropped and the reason recorded)."""
        kept = []
        for msg in replies:
            nid = msg.metadata.src_node_id
            if msg.has_error():
                if count:
                    self._counts["failed"] += 1
                kept.append(msg)
                continue
            rec = msg.content.config_records.get(REPORT_KEY)
            try:
                if rec is None:
                    raise ReportError("reply carries no energy report")
                report = EnergyReport.from_record(rec)
            except ReportError as err:
                self._rejected.append((nid, str(err)))
                log.warning("rejected reply from node %s: %s", nid, err)
                if count:
                    self._counts["failed"] += 1
                continue
            del msg.content[REPORT_KEY]
            self._rows.extend(rows_from_report(nid, report))
            if count:
                self._counts["succeeded"] += 1
            kept.append(msg)
        return kept

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept = self.take_reports(replies, count=True)
        if self.codec.name != "none":
            kept = self.decode_updates(kept)
        return self.base.aggregate_train(server_round, kept)

    def decode_updates(self, replies: Iterable[Message]) -> list[Message]:
        """Replace every encoded update by the full float32 weights ``global + update`` so the
        wrapped strategy aggregates weights as usual; a reply whose payload is malformed (or
        encoded with another codec) is dropped, counted as failed and its reason recorded."""
        kept = []
        for msg in replies:
            if msg.has_error():
                kept.append(msg)
                continue
            nid = msg.metadata.src_node_id
            try:
                if self._global is None:
                    raise PayloadError("no global model was sent this round")
                content = decode_reply_content(msg.content, self.codec, self._global)
            except PayloadError as err:
                self._rejected.append((nid, f"update payload: {err}"))
                log.warning("rejected update from node %s: %s", nid, err)
                self._counts["succeeded"] -= 1
                self._counts["failed"] += 1
                continue
            msg.content = content
            kept.append(msg)
        return kept

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.base.aggregate_evaluate(server_round, self.take_reports(replies, count=False))

    def summary(self) -> None:
        self.base.summary()

    def commit_round(
        self, server_round: int, accuracy: float | None, loss: float | None
    ) -> RoundOutcome:
        """Write the buffered rows of ``server_round`` to the ledger in one transaction."""
        rows, counts = self._rows, self._counts
        self.ledger.commit_round(self.run_id, server_round, rows, accuracy, loss, **counts)
        outcome = RoundOutcome(
            server_round,
            accuracy,
            loss,
            sum(r.joules for r in rows),
            rejected=self._rejected,
            **counts,
        )
        self._rows, self._rejected = [], []
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
    ) -> Result:
        """Flower's round loop (train, evaluate, server-side evaluation), committing every round
        to the ledger before the next begins and reporting it to ``on_round``."""
        train_config = train_config or ConfigRecord()
        evaluate_config = evaluate_config or ConfigRecord()
        result, arrays = Result(), initial_arrays
        if evaluate_fn is not None and (res := evaluate_fn(0, arrays)) is not None:
            result.evaluate_metrics_serverapp[0] = res
        for rnd in range(1, num_rounds + 1):
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
        result.arrays = arrays
        return result
