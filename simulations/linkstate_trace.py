"""Where a large simulation's time goes inside Flower: its link state's delivery sweep, timed.

Flower 1.42's Simulation Engine hands messages to the virtual nodes from one thread
(``vce_api.add_messages_to_queue``) that loops over *every* registered node and asks the
``InMemoryLinkState`` for that node's next message (``get_message_ins(node_id, limit=1)``),
then waits 0.1 s and starts again. Each such call walks the whole message store (every
instruction not yet deleted, delivered ones included, checking each one's expiry and
federation), so one sweep costs about N nodes x M stored messages: with 100 messages a round,
a sweep over 100,000 nodes is ten million message checks, and a message waits for the sweep to
reach its node.

:func:`traced_linkstate` wraps ``InMemoryLinkState.get_message_ins`` while a block runs and
counts the calls, the seconds spent in them (wall, GIL waits included) and the messages in the
store at each call (the checks a call may make). Both arms of a benchmark are traced alike; the
wrapper adds two clock reads and a dict length per call (about a microsecond, against the tens
to hundreds of microseconds a call takes with messages in the store).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

LINKSTATE = "flwr.server.superlink.linkstate.in_memory_linkstate"


@dataclass
class LinkStateTrace:
    """What the delivery sweep cost during one run."""

    nodes: int
    calls: int = 0
    seconds: float = 0.0
    stored: int = 0  # sum over calls of the messages in the store: the checks a sweep makes
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, seconds: float, stored: int) -> None:
        with self._lock:
            self.calls += 1
            self.seconds += seconds
            self.stored += stored

    def as_dict(self) -> dict:
        sweeps = self.calls / self.nodes if self.nodes else 0.0
        return {
            "get_message_ins_calls": self.calls,
            "get_message_ins_s": self.seconds,
            "sweeps": sweeps,
            "s_per_sweep": self.seconds / sweeps if sweeps else None,
            "message_checks": self.stored,
            "us_per_check": 1e6 * self.seconds / self.stored if self.stored else None,
        }


@contextlib.contextmanager
def traced_linkstate(nodes: int) -> Iterator[LinkStateTrace]:
    """Time ``InMemoryLinkState.get_message_ins`` while the block runs (``nodes``: the number
    of virtual nodes, to turn calls into sweeps)."""
    import importlib

    cls = importlib.import_module(LINKSTATE).InMemoryLinkState
    original = cls.get_message_ins
    trace = LinkStateTrace(nodes)

    def get_message_ins(self, *args, **kwargs):
        stored = len(self.message_ins_store)
        t0 = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            trace.add(time.perf_counter() - t0, stored)

    cls.get_message_ins = get_message_ins
    try:
        yield trace
    finally:
        cls.get_message_ins = original
