"""Hooks into Flower's Simulation Engine internals: seeded node ids and declared node names.

Both patch ``InMemoryLinkState`` while a block runs and yield whether they could be installed.
"""

from __future__ import annotations

import contextlib
import importlib
import random
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def seeded_node_ids(seed: int) -> Iterator[bool]:
    """Make the Simulation Engine's node ids and run id a seeded sequence while the block runs.

    Flower draws each virtual SuperNode's id from ``os.urandom``; nodes register in partition
    order, so seeded ids make the order of node ids — which a coordinator that has not heard
    from its nodes yet (lazy discovery) must sample from — the same in every run with the same
    seed. The run id is seeded too: it is a varint in every message's metadata, so a random one
    changes message sizes (hence modeled network joules) by a byte from run to run. Only ids
    drawn inside ``InMemoryLinkState.create_node`` / ``create_run`` and by ``run_simulation``'s
    own run/task id draw are affected. Yields whether
    the hook could be installed (False on a Flower without these internals: ids stay random).
    """
    try:
        mod = importlib.import_module("flwr.server.superlink.linkstate.in_memory_linkstate")
        sim = importlib.import_module("flwr.simulation.run_simulation")
        cls, draw = mod.InMemoryLinkState, mod.generate_rand_int_from_bytes
        create, create_run = cls.create_node, cls.create_run
        sim_draw = sim.generate_rand_int_from_bytes
    except (ImportError, AttributeError):
        yield False
        return
    rng, lock, local = random.Random(seed * 7919 + 0x5EED), threading.Lock(), threading.local()

    def seeded_draw(num_bytes: int, exclude: set[int] | None = None, always: bool = False) -> int:
        if not always and not getattr(local, "on", False):
            return draw(num_bytes, exclude)
        with lock:
            while (v := rng.getrandbits(8 * num_bytes)) in (exclude or ()):
                pass
            return v

    def seeded(method):
        def call(self, *args, **kwargs):
            local.on = True
            try:
                return method(self, *args, **kwargs)
            finally:
                local.on = False

        return call

    mod.generate_rand_int_from_bytes = seeded_draw
    sim.generate_rand_int_from_bytes = lambda n, exclude=None: seeded_draw(n, exclude, True)
    cls.create_node, cls.create_run = seeded(create), seeded(create_run)
    try:
        yield True
    finally:
        mod.generate_rand_int_from_bytes, sim.generate_rand_int_from_bytes = draw, sim_draw
        cls.create_node, cls.create_run = create, create_run


@contextlib.contextmanager
def declared_node_names(names: list[str]) -> Iterator[bool]:
    """Register the Simulation Engine's virtual SuperNodes under ``names`` (the i-th node
    created, i.e. partition i, gets ``names[i]``) while the block runs, as an operator would
    with ``flwr supernode register --name`` (see :mod:`fedenergy.server.declared`). Yields
    whether the hook could be installed (False on a Flower without these internals: nodes
    stay unnamed and declared discovery learns every node from its first reply)."""
    try:
        mod = importlib.import_module("flwr.server.superlink.linkstate.in_memory_linkstate")
        cls = mod.InMemoryLinkState
        create = cls.create_node
    except (ImportError, AttributeError):
        yield False
        return
    lock, counter = threading.Lock(), iter(range(len(names)))

    def named(self, *args, **kwargs):
        if kwargs.get("name") is None:
            with lock:
                i = next(counter, None)
            if i is not None:
                kwargs["name"] = names[i]
        return create(self, *args, **kwargs)

    cls.create_node = named
    try:
        yield True
    finally:
        cls.create_node = create
