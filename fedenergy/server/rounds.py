"""Rounds: committing a round's books to the ledger, and the round loop that runs them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from fedenergy.ledger import Ledger, rows_joules
from fedenergy.server.collector import RoundBooks

log = logging.getLogger("fedenergy")


@dataclass
class RoundOutcome:
    """What one round produced, handed to the progress callback after the commit."""

    server_round: int
    accuracy: float | None
    loss: float | None
    joules: float  # the round's metered joules
    selected: int
    succeeded: int
    failed: int
    rejected: list[tuple[int, str]] = field(default_factory=list)


def commit_books(
    ledger: Ledger,
    run_id: str,
    server_round: int,
    books: RoundBooks,
    accuracy: float | None,
    loss: float | None,
) -> RoundOutcome:
    """Write ``books`` (the rows, counts, rejections and flags of ``server_round``) to the
    ledger in one transaction, logging the round's first rejection (and how many more)."""
    if books.rejections:
        nid, call, reason = books.rejections[0]
        more = len(books.rejections) - 1
        log.warning(
            "round %d: rejected %s reply from node %s: %s%s",
            server_round,
            call,
            nid,
            reason,
            f" (and {more} more; reasons in the ledger's rejections table)" if more else "",
        )
    ledger.commit_round(
        run_id,
        server_round,
        books.rows,
        accuracy,
        loss,
        **books.counts,
        rejections=books.rejections,
        flags=books.flags,
    )
    return RoundOutcome(
        server_round,
        accuracy,
        loss,
        rows_joules(books.rows),  # metered: unmetered compute is not 0 J, it is not counted
        rejected=books.rejected,
        **books.counts,
    )


class RoundStrategy(Protocol):
    """What the round loop drives: Flower's four hooks and a commit at the end of each round."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]: ...

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]: ...

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]: ...

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None: ...

    def commit_round(
        self, server_round: int, accuracy: float | None, loss: float | None
    ) -> RoundOutcome: ...


def run_rounds(
    strategy: RoundStrategy,
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
            strategy.configure_train(rnd, arrays, ConfigRecord(dict(train_config)), grid),
            timeout=timeout,
        )
        new_arrays, train_metrics = strategy.aggregate_train(rnd, replies)
        if new_arrays is not None:
            arrays = result.arrays = new_arrays
        if train_metrics is not None:
            result.train_metrics_clientapp[rnd] = train_metrics
        replies = grid.send_and_receive(
            strategy.configure_evaluate(rnd, arrays, ConfigRecord(dict(evaluate_config)), grid),
            timeout=timeout,
        )
        eval_metrics = strategy.aggregate_evaluate(rnd, replies)
        if eval_metrics is not None:
            result.evaluate_metrics_clientapp[rnd] = eval_metrics
        acc = loss = None
        if evaluate_fn is not None and (res := evaluate_fn(rnd, arrays)) is not None:
            result.evaluate_metrics_serverapp[rnd] = res
            acc, loss = res.get("accuracy"), res.get("loss")
        reached = bool(target_accuracy and acc is not None and acc >= target_accuracy)
        if (rnd == num_rounds or reached) and (close := getattr(strategy, "close_radio", None)):
            close()  # the run's last round: the radio tails no later transfer will cut
        outcome = strategy.commit_round(rnd, acc, loss)
        if on_round is not None:
            on_round(outcome)
        if reached:
            log.info("target accuracy %.4f reached in round %d", target_accuracy, rnd)
            break
    result.arrays = arrays
    return result
