"""Admission: which nodes the fleet holds, and what the ledger records of each.

Registered nodes are admitted by a profile query (``query_fn``), by the profiles they declared
at registration (``declare_fn``), or as unknown (lazy discovery); a node admitted unknown or by
declaration is completed from its first valid energy report (``learn_fn``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from flwr.serverapp import Grid

from fedenergy.ledger import Ledger
from fedenergy.report import EnergyReport
from fedenergy.server.fleet_state import FleetState
from fedenergy.server.node import NodeInfo

QueryFn = Callable[[Grid, list[int]], list[NodeInfo]]
LearnFn = Callable[[int, EnergyReport], NodeInfo]


class Admission:
    """Admits nodes into ``fleet`` and records them in the ledger of ``run_id``."""

    def __init__(
        self,
        fleet: FleetState,
        ledger: Ledger,
        run_id: str,
        query_fn: QueryFn | None = None,
        learn_fn: LearnFn | None = None,
        declare_fn: QueryFn | None = None,
    ) -> None:
        self.fleet, self.ledger, self.run_id = fleet, ledger, run_id
        self.query_fn = query_fn  # None: lazy or declared discovery (no profile query)
        self.learn_fn = learn_fn  # profile of an unknown node from its first valid report
        # declared discovery: the profiles nodes declared at registration (query_fn is None)
        self.declare_fn = declare_fn
        # nodes known by a declared profile whose first reply (partition, data) is still due
        self.declared_pending: set[int] = set()
        self._batch: list[NodeInfo] | None = None  # nodes learned while a batch is open

    def _record(self, infos: Iterable[NodeInfo]) -> None:
        if self._batch is not None:
            self._batch.extend(infos)
            return
        self.ledger.add_nodes(
            self.run_id, [(i.node_id, i.partition_id, i.device, i.link, i.country) for i in infos]
        )

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Nodes learned inside the block are recorded in the ledger when it ends, in one
        transaction (a round's replies teach up to one node each: one commit, not one each)."""
        if self._batch is not None:  # already inside a batch: that one records them
            yield
            return
        self._batch = []
        try:
            yield
        finally:
            batch, self._batch = self._batch, None
            if batch:
                self._record(batch)

    def admit_without_query(self, grid: Grid, node_ids: list[int]) -> None:
        """Add ``node_ids`` with the profiles they declared at registration (``declare_fn``);
        the others, and every node without declared discovery, as unknown (lazy)."""
        declared = self.declare_fn(grid, node_ids) if self.declare_fn is not None else []
        for info in declared:
            self.fleet.add(info)
            self.declared_pending.add(info.node_id)
        if declared:
            self._record(declared)
        self.fleet.add_unknown_many(sorted(node_ids))  # a no-op for the declared ones

    def admit_new(self, grid: Grid) -> None:
        """Admit nodes that registered after the start (deployment: late joiners): query them,
        or read their declared profiles, or with lazy discovery add them as unknown."""
        new = self.fleet.missing(grid.get_node_ids())
        if new and self.query_fn is None:
            self.admit_without_query(grid, new)
        elif new:
            for info in self.query_fn(grid, new):
                self.fleet.add(info)
                self._record([info])

    def learn(self, node_id: int, report: EnergyReport) -> None:
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
        self._record([self.fleet[node_id].info])
