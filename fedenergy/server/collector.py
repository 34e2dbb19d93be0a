"""The collector: takes every EnergyReport out of a round's replies and keeps the round's books.

Each report is validated against what the server knows of the call (:mod:`fedenergy.report`)
and becomes energy rows; a reply without a report (a stock Flower app, an older client) is
accounted by the coordinator itself: network from the bytes it saw, compute unmetered
(:mod:`.stock`), unless ``strict`` refuses such replies. A reply with an invalid report (or,
when strict, without one), an error reply and a node that never replied are accounted as failed
with the server's estimate of what the node spent (:mod:`.failed`); a reply whose update or
metrics cannot be aggregated is rejected with its reason, its energy kept as failed (spent on a
result not used). The rows, the
selected/succeeded/failed counts, the rejections and the flags of accepted reports are
buffered until the round is committed (``take``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace

from flwr.app import Message

from fedenergy.codecs import PayloadError
from fedenergy.ledger import EnergyRow, rows_from_report
from fedenergy.protocol import OFFLINE_REASON, REPORT_KEY, SERVER_ROUND
from fedenergy.report import EnergyReport, Expected, ReportError, validate_report
from fedenergy.server.failed import failed_call_rows
from fedenergy.server.fleet_state import FleetState
from fedenergy.server.forecast import Forecast
from fedenergy.server.node import UNKNOWN_PARTITION
from fedenergy.server.outbox import Outbox
from fedenergy.server.radio_clock import RunClock
from fedenergy.server.reply_checks import check_reply, metric_names
from fedenergy.server.stock import link_note, stock_call_rows
from fedenergy.wire import reply_ack_bytes, upload_bytes

log = logging.getLogger("fedenergy")
NO_REPORT = "reply carries no energy report"
STRICT_NO_REPORT = f"{NO_REPORT} (strict-reports: a reply must carry one)"


def _counts() -> dict[str, int]:
    return {"selected": 0, "succeeded": 0, "failed": 0}


@dataclass
class RoundBooks:
    """What a round has collected so far, to be committed with it."""

    rows: list[EnergyRow] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=_counts)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (node, reason)
    rejections: list[tuple[int, str, str]] = field(default_factory=list)  # (node, call, reason)
    flags: list[tuple[int, str, str]] = field(default_factory=list)  # of accepted reports


class Collector:
    """Reports out of replies, into this round's books."""

    def __init__(
        self,
        fleet: FleetState,
        outbox: Outbox,
        learn: Callable[[int, EnergyReport], None],
        forecast: Callable[[int], Forecast],
        strict: bool = False,
        declared: Collection[int] = (),
        clock: RunClock | None = None,
    ) -> None:
        self.fleet, self.outbox = fleet, outbox
        self.clock = clock or RunClock("off")  # the run's clock (radio state per node)
        self.learn = learn  # a valid report's node: what it tells of the node (admission)
        self.forecast = forecast  # a node's train-call forecast (failed-call compute)
        self.strict = strict  # refuse replies without a report (else: stock-node accounting)
        self.declared = declared  # nodes whose profile is (still) their declared one
        self.books = RoundBooks()
        self._stock_seen: set[int] = set()  # stock nodes already warned about (once each)

    @property
    def counts(self) -> dict[str, int]:
        return self.books.counts

    @property
    def rejected(self) -> list[tuple[int, str]]:
        return self.books.rejected

    def selected(self, n: int) -> None:
        """``n`` more nodes were selected to train this round."""
        self.books.counts["selected"] += n

    def take(self) -> RoundBooks:
        """This round's books; the collector starts a new round's."""
        books, self.books = self.books, RoundBooks()
        return books

    # -- replies ---------------------------------------------------------------------------------
    def take_reports(self, replies: Iterable[Message], call: str, count: bool) -> list[Message]:
        """Move every reply's EnergyReport into this round's rows; return the replies the wrapped
        strategy may aggregate. Error replies and replies that never arrived are accounted as
        failed with the server's estimate of the energy they spent; replies whose report is
        invalid (or missing, when strict) are dropped and the reason recorded, as are replies
        whose update or metrics could not be aggregated (docs/robustness.md); a reply without a
        report is otherwise accounted from the coordinator's side (``stock``). ``count``: the
        replies count towards the round's succeeded/failed."""
        sent, counts = self.outbox.sent, self.books.counts
        kept, answered = [], set()
        for msg in replies:
            nid = msg.metadata.src_node_id
            if (nid, call) not in sent and not msg.has_error():
                log.warning("dropped a %s reply from node %s: no message was sent to it", call, nid)
                continue
            if nid in answered:
                log.warning("dropped a second %s reply from node %s", call, nid)
                continue
            answered.add(nid)
            if msg.has_error():
                if (nid, call) not in sent:
                    # an error the SuperLink made for a node that is gone: it carries no usable
                    # node id, so that node is accounted below as one that never replied
                    answered.discard(nid)
                    log.info("error reply without a known node (%s): %s", nid, msg.error.reason)
                    continue
                if count:
                    counts["failed"] += 1
                if str(msg.error.reason).startswith(OFFLINE_REASON):
                    continue  # never reached the node: nothing spent
                self.failed(nid, call, f"error reply: {msg.error.reason}")
                continue
            rec = msg.content.config_records.get(REPORT_KEY)
            try:
                if rec is None and self.strict:
                    raise ReportError(STRICT_NO_REPORT)
                if rec is not None:
                    report, flags = validate_report(rec, self.expected(nid, call, msg))
            except ReportError as err:
                self.reject(nid, call, str(err))
                if count:
                    counts["failed"] += 1
                self.failed(nid, call, f"report rejected: {err}")
                continue
            if rec is None:
                self.stock(nid, call, msg)
            else:
                del msg.content[REPORT_KEY]
                self.learn(nid, report)
                if nid in self.fleet:
                    self.clock.transferred(
                        self.fleet, nid, call, self.fleet[nid].link, report.bytes_down,
                        report.bytes_up, report.compute_s + report.startup_s,
                    )  # fmt: skip
                self.books.flags.extend((nid, call, f) for f in flags)
                self.books.rows.extend(rows_from_report(nid, report))
            try:
                if call in ("train", "evaluate"):
                    spec = self.outbox.codecs.get(nid)
                    check_reply(msg, call, spec, self.outbox.global_arrays)
            except PayloadError as err:
                self.reject(nid, call, f"update: {err}")  # its reported energy: wasted
                if count:
                    counts["failed"] += 1
                continue
            if count:
                counts["succeeded"] += 1
            kept.append(msg)
        for nid, c in [k for k in sent if k[1] == call]:
            if nid not in answered:
                if count:
                    counts["failed"] += 1
                self.failed(nid, c, "no reply before the round timeout")
        self.clock.end_phase(call)
        return self._same_metric_names(kept, call, count)

    def _same_metric_names(self, kept: list[Message], call: str, count: bool) -> list[Message]:
        """Flower's aggregation needs the same metric names in every reply: keep the replies
        with the most common set (ties: the first seen), reject the others."""
        if call not in ("train", "evaluate") or len(kept) < 2:
            return kept
        keysets = [metric_names(m) for m in kept]
        common = max(dict.fromkeys(keysets), key=keysets.count)
        out = []
        for msg, keys in zip(kept, keysets, strict=True):
            if keys == common:
                out.append(msg)
                continue
            reason = f"metric names {sorted(keys)} differ from the other replies"
            if count:
                self.demote(msg.metadata.src_node_id, call, reason)
            else:
                self.reject(msg.metadata.src_node_id, call, reason)
        return out

    # -- the books -------------------------------------------------------------------------------
    def reject(self, node_id: int, call: str, reason: str) -> None:
        """Record a rejected reply (report or update payload) with its reason; energy already
        accounted from its (valid) report, or from the coordinator's side for a reply without
        one, is marked failed: spent on a result not used."""
        rows = self.books.rows
        for i, r in enumerate(rows):
            if r.node_id == str(node_id) and r.call == call and r.status == "ok":
                rows[i] = replace(r, status="failed")
        self.books.rejected.append((node_id, reason))
        self.books.rejections.append((node_id, call, reason))
        # one line per reply at debug; the commit logs one warning per round (a 10,000-node
        # fleet can reject hundreds of empty-partition replies a round)
        log.debug("rejected %s reply from node %s: %s", call, node_id, reason)

    def demote(self, node_id: int, call: str, reason: str) -> None:
        """Reject a reply already counted as succeeded: it counts as failed instead."""
        self.reject(node_id, call, reason)
        self.books.counts["succeeded"] -= 1
        self.books.counts["failed"] += 1

    def stock(self, node_id: int, call: str, msg: Message) -> None:
        """Rows of a reply without a report (:mod:`.stock`): network from the bytes sent and
        received through the node's link, compute unmetered; a warning the first time a node
        replies so (none for a node the fleet does not hold)."""
        if node_id not in self.fleet:
            return
        node = self.fleet[node_id]
        declared = node_id in self.declared
        if node_id not in self._stock_seen:
            self._stock_seen.add(node_id)
            log.warning(
                "node %s replies without an energy report (a Flower app without fedenergy's "
                "mod?): its network energy is modeled from the bytes the coordinator saw (%s), "
                "its compute is unmetered; --strict-reports refuses such replies",
                node_id,
                link_note(node, declared),
            )
        # as Flower counts them: the message and the acknowledgement of the reply down, the
        # reply up (fedenergy.wire)
        sent = self.outbox.sent.get((node_id, call), 0) + reply_ack_bytes(msg)
        received = upload_bytes(msg, node_id)
        self.books.rows.extend(
            stock_call_rows(
                node,
                call,
                sent,
                received,
                self.fleet.infra_kwh_per_gb,
                declared,
                idle_s=self.clock.idle_sent(node_id, call),
                keepalive=self.clock.keepalive,
                infra_model=self.fleet.infra_model,
            )
        )
        self.clock.transferred(self.fleet, node_id, call, node.link, sent, received, 0.0)

    def failed(self, node_id: int, call: str, reason: str) -> None:
        """Rows of the energy a failed or silent node still spent (none for a node the fleet
        does not hold)."""
        if node_id not in self.fleet:
            return
        fc = self.forecast(node_id) if call == "train" else None
        node, sent = self.fleet[node_id], self.outbox.sent.get((node_id, call), 0)
        self.books.rows.extend(
            failed_call_rows(
                node,
                call,
                reason,
                sent,
                fc,
                self.fleet.infra_kwh_per_gb,
                idle_s=self.clock.idle_sent(node_id, call),
                keepalive=self.clock.keepalive,
                infra_model=self.fleet.infra_model,
            )
        )
        self.clock.transferred(self.fleet, node_id, call, node.link, sent, 0, 0.0)

    def expected(self, node_id: int, call: str, msg: Message) -> Expected:
        """What the server knows of the call a report answers (docs/robustness.md)."""
        st = self.fleet[node_id] if node_id in self.fleet else None
        if st is not None and not st.known:
            st = None  # lazy discovery: its report is checked against its own claimed profile
        # a declared node's partition is learned from its first report
        part = st.info.partition_id if st is not None else UNKNOWN_PARTITION
        payload = 0
        for rec in msg.content.array_records.values():
            payload += sum(len(a.data) for a in rec.values())
        cfg = self.outbox.train_config if call == "train" else None
        rnd = cfg.get(SERVER_ROUND) if cfg is not None else None
        return Expected(
            kind=call,
            server_round=rnd if call == "train" and isinstance(rnd, int) else None,
            partition_id=part if part != UNKNOWN_PARTITION else None,
            device=st.device if st is not None else None,
            link=st.link if st is not None else None,
            infra_kwh_per_gb=self.fleet.infra_kwh_per_gb,
            catalog=self.fleet.catalog,
            infra_model=self.fleet.infra_model,
            bytes_sent=self.outbox.sent.get((node_id, call)) or None,
            reply_payload_bytes=payload,
            radio_idle_s=self.clock.idle_sent(node_id, call),
            keepalive=self.clock.keepalive,
        )
