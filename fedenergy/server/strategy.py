"""EnergyAwareStrategy: wraps any Flower strategy (FedAvg, FedProx, FedAdam, ...).

The wrapped strategy keeps its own configuration and aggregation; this wrapper decides WHO
participates (a Selector fed by per-node energy forecasts) and HOW each update is compressed
(a CompressionPolicy). With ``base_samples`` the wrapped strategy samples the nodes itself, its
sampling fields untouched (accounting only). It is the composition of parts with one job each:

- :class:`~fedenergy.server.admission.Admission`: which nodes the fleet holds (query, declared,
  lazy discovery; late joiners; profiles learned from first reports);
- :class:`~fedenergy.server.outbox.Outbox`: the round's global model, its downlink encodings
  and sizes, each node's message config, what was sent to whom;
- :class:`~fedenergy.server.collector.Collector`: every EnergyReport taken out of the replies
  (validated; the wrapped strategy never sees it), rejections, failed-call energy, the round's
  books;
- :func:`~fedenergy.server.decoding.decode_updates`: compressed updates back to weights;
- :mod:`~fedenergy.server.rounds`: each round committed to the Ledger in one transaction
  before the next starts, and the round loop (``start``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedenergy.ledger import Ledger
from fedenergy.physics.radio import keepalive_from_table
from fedenergy.protocol import CFG_KEEPALIVE, METRICS_RECORD, NUM_EXAMPLES, TRAIN_LOSS
from fedenergy.server.admission import Admission, LearnFn, QueryFn
from fedenergy.server.collector import Collector
from fedenergy.server.decoding import decode_updates
from fedenergy.server.fleet_state import FleetState
from fedenergy.server.forecast import Forecast
from fedenergy.server.forecasters import Forecaster, PlannedForecaster
from fedenergy.server.outbox import Outbox
from fedenergy.server.policies import CompressionPolicy, FixedPolicy
from fedenergy.server.radio_clock import VIRTUAL, RunClock
from fedenergy.server.rounds import RoundOutcome, commit_books, run_rounds
from fedenergy.server.selectors import RandomSelector, Selector

__all__ = ["EnergyAwareStrategy", "RoundOutcome"]


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
        query_fn: QueryFn | None = None,
        learn_fn: LearnFn | None = None,
        declare_fn: QueryFn | None = None,
        base_samples: bool = False,
        strict_reports: bool = False,
        radio_clock: str = VIRTUAL,
    ) -> None:
        self.base = base
        # the wrapped strategy chooses the nodes itself (its own fractions and sampling, left
        # as they are); the selectors and fractions here are then unused (accounting only)
        self.base_samples = base_samples
        self.fleet = fleet
        self.ledger = ledger
        self.run_id = run_id
        self.fraction_train = fraction_train
        self.fraction_evaluate = fraction_evaluate
        self.selector = selector or RandomSelector(seed=fleet.seed, stream=0)
        self.eval_selector = eval_selector or RandomSelector(seed=fleet.seed, stream=1)
        self.policy = policy or FixedPolicy()
        # query_fn None: lazy discovery (new nodes start unknown), or declared (declare_fn)
        self.admission = Admission(fleet, ledger, run_id, query_fn, learn_fn, declare_fn)
        self.outbox = Outbox(common_config)
        # a policy that prices its options (server/local_work.py) reads this round's sizes
        if callable(bind := getattr(self.policy, "bind_sizes", None)):
            bind(self.outbox)
        # the run's clock, on which each node's radio is a state machine (server/radio_clock.py):
        # virtual in simulation, wall in deployment; keep-alive as the message config says
        keepalive = keepalive_from_table() if common_config.get(CFG_KEEPALIVE) is True else None
        self.clock = RunClock(radio_clock, keepalive)
        self.outbox.clock = self.clock
        fleet.keepalive = keepalive
        self.collector = Collector(
            fleet,
            self.outbox,
            self.admission.learn,
            self.forecast,
            strict=strict_reports,  # refuse replies without an energy report
            declared=self.admission.declared_pending,
            clock=self.clock,
        )
        if not base_samples:  # let the wrapped strategy "sample" all of the nodes we hand it
            for attr, value in (
                ("fraction_train", 1.0),
                ("fraction_evaluate", 1.0),
                ("min_train_nodes", 1),
                ("min_evaluate_nodes", 1),
                ("min_available_nodes", 1),
            ):
                if hasattr(base, attr):
                    setattr(base, attr, value)

    # -- nodes -----------------------------------------------------------------------------------
    @property
    def declared_pending(self) -> set[int]:
        """Nodes known by a declared profile whose first reply (partition, data) is still due."""
        return self.admission.declared_pending

    def admit_without_query(self, grid: Grid, node_ids: list[int]) -> None:
        """Add ``node_ids`` with the profiles they declared at registration; the others, and
        every node without declared discovery, as unknown (lazy)."""
        self.admission.admit_without_query(grid, node_ids)

    def record_sent(self, messages: Iterable[Message], call: str) -> None:
        """Messages the coordinator sent itself (the profile QUERY): their replies are taken by
        ``take_reports`` like those of configure_train/evaluate's (their size is not measured:
        reports are not checked against it)."""
        for m in messages:
            self.outbox.record_sent(m.metadata.dst_node_id, call, 0)

    # -- forecasts and selection -----------------------------------------------------------------
    def forecaster(self) -> Forecaster:
        """This round's forecasts of the nodes' next train calls, with the codecs the policy
        gives each node and the exact size of this round's messages, on the run's clock now.
        Vectorised (one forecast per (known, link) class of nodes) when the policy declares
        ``per_link``."""
        self.fleet.clock_s = self.clock.now()
        return PlannedForecaster(
            self.fleet,
            lambda node: self.outbox.train_call(self.policy, node),
            per_link=bool(getattr(self.policy, "per_link", False)),
        )

    def forecast(self, node_id: int) -> Forecast:
        """The forecast of ``node_id``'s next train call (``forecaster()``'s)."""
        return self.forecaster().forecast(node_id)

    def _k(self, fraction: float) -> int:
        n = len(self.fleet.nodes)
        return 0 if fraction <= 0 else max(1, math.floor(fraction * n + 1e-9))

    def _select(self, selector: Selector, server_round: int, fraction: float) -> list[int]:
        online = self.fleet.online(server_round)
        return selector.select(
            server_round, online, self._k(fraction), self.fleet, self.forecaster()
        )

    def _chosen(
        self, call: str, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """The wrapped strategy's ``call`` messages to this round's chosen nodes: those the
        selector picks, or with ``base_samples`` those the wrapped strategy samples from the
        grid itself. A train call counts the chosen nodes as the round's selected."""
        train = call == "train"
        configure = self.base.configure_train if train else self.base.configure_evaluate
        if self.base_samples:
            msgs = list(configure(server_round, arrays, config, grid))
            if any(m.metadata.dst_node_id not in self.fleet for m in msgs):
                self.admission.admit_new(grid)  # registered since this round's admission
            chosen = len(msgs)
        else:
            selector, fraction = (
                (self.selector, self.fraction_train)
                if train
                else (self.eval_selector, self.fraction_evaluate)
            )
            ids = self._select(selector, server_round, fraction)
            grid_view = _SelectedGrid(grid, ids)
            msgs = list(configure(server_round, arrays, config, grid_view)) if ids else []
            chosen = len(ids)
        if train:
            self.collector.selected(chosen)
        return msgs

    # -- Flower's hooks --------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.admission.admit_new(grid)
        self.outbox.begin_round(arrays, config)
        msgs = self._chosen("train", server_round, arrays, config, grid)
        return self.outbox.address(
            msgs, "train", server_round, self.fleet, self.policy, self.declared_pending
        )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        msgs = self._chosen("evaluate", server_round, arrays, config, grid)
        return self.outbox.address(
            msgs, "evaluate", server_round, self.fleet, self.policy, self.declared_pending
        )

    def take_reports(self, replies: Iterable[Message], call: str, count: bool) -> list[Message]:
        """Move every reply's EnergyReport into this round's books; return the replies the
        wrapped strategy may aggregate (see Collector.take_reports)."""
        with self.admission.batched():  # the nodes they teach: one ledger write
            return self.collector.take_reports(replies, call, count)

    def decode_updates(self, replies: Iterable[Message]) -> list[Message]:
        """Encoded train updates replaced by full weights; a malformed one is rejected and
        counted as failed (its energy report is already in the books: that energy was spent)."""
        demote = self.collector.demote
        return decode_updates(
            replies,
            self.outbox.codecs,
            self.outbox.global_arrays,
            lambda nid, reason: demote(nid, "train", reason),
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

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.base.aggregate_evaluate(
            server_round, self.take_reports(replies, "evaluate", count=False)
        )

    def summary(self) -> None:
        self.base.summary()

    def close_radio(self) -> None:
        """The run ends with the round being committed: each node's last radio tail (which no
        later transfer cut) joins that round's books (:meth:`RunClock.closing_rows`)."""
        self.collector.books.rows.extend(self.clock.closing_rows(self.fleet))

    # -- the end of a round, and the round loop --------------------------------------------------
    def commit_round(
        self, server_round: int, accuracy: float | None, loss: float | None
    ) -> RoundOutcome:
        """Write the books of ``server_round`` to the ledger in one transaction, then update
        the fleet state (observed energy, batteries) and the compression policy."""
        books = self.collector.books
        outcome = commit_books(self.ledger, self.run_id, server_round, books, accuracy, loss)
        self.fleet.observe_rows(books.rows, {n: s.label() for n, s in self.outbox.codecs.items()})
        self.fleet.observe_tried(self.outbox.codecs, server_round)  # every node sent a train call
        self.fleet.recharge()
        self.policy.observe(server_round, accuracy)
        self.collector.take()
        self.outbox.end_round()
        return outcome

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
        """Run the rounds of :func:`fedenergy.server.rounds.run_rounds` with this strategy."""
        return run_rounds(
            self,
            grid,
            initial_arrays,
            num_rounds,
            timeout,
            train_config,
            evaluate_config,
            evaluate_fn,
            on_round,
            target_accuracy,
            first_round,
        )
