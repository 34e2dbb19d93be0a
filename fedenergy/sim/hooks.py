"""Hooks into Flower's Simulation Engine internals: seeded node ids and declared node names.

Both patch ``InMemoryLinkState`` while a block runs and yield whether they could be installed.
A hook that cannot be installed on this Flower (the internals are missing, or a cheap check says
the patch would not take effect) logs a warning on the ``fedenergy`` logger naming the Flower
version and what the run loses, and the block runs without it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import logging
import random
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger("fedenergy")

LINKSTATE_MODULE = "flwr.server.superlink.linkstate.in_memory_linkstate"
SIMULATION_MODULE = "flwr.simulation.run_simulation"
DRAW = "generate_rand_int_from_bytes"  # Flower's id draw (os.urandom)

SEEDED_IDS_LOST = (
    "node ids and the run id stay random, so the order lazy discovery samples nodes in and a "
    "byte of message sizes (hence modeled network joules) differ from run to run"
)
DECLARED_NAMES_LOST = (
    "the virtual SuperNodes stay unnamed, so declared discovery learns every node lazily, "
    "from its first reply"
)


def flower_version() -> str:
    """The installed Flower's version ("unknown" where it cannot be read)."""
    try:
        return str(importlib.import_module("flwr").__version__)
    except (ImportError, AttributeError):
        return "unknown"


def warn_not_installed(hook: str, why: str, lost: str) -> None:
    """Log that ``hook`` could not be installed on this Flower, why, and what the run loses."""
    log.warning(
        "the %s hook is not installed on Flower %s (%s): %s",
        hook,
        flower_version(),
        why,
        lost,
    )


def _calls(func: Callable, name: str) -> bool:
    """Whether ``func``'s own code refers to the global ``name`` (True where it has no code to
    look at: then the patch is trusted)."""
    code = getattr(inspect.unwrap(func), "__code__", None)
    return code is None or name in code.co_names


def _module_calls(module, name: str) -> bool:
    """Whether some function defined in ``module`` refers to the global ``name``."""
    return any(
        _calls(f, name)
        for f in vars(module).values()
        if inspect.isfunction(f) and f.__module__ == module.__name__
    )


@contextlib.contextmanager
def seeded_node_ids(seed: int) -> Iterator[bool]:
    """Make the Simulation Engine's node ids and run id a seeded sequence while the block runs.

    Flower draws each virtual SuperNode's id from ``os.urandom``; nodes register in partition
    order, so seeded ids make the order of node ids — which a coordinator that has not heard
    from its nodes yet (lazy discovery) must sample from — the same in every run with the same
    seed. The run id is seeded too: it is a varint in every message's metadata, so a random one
    changes message sizes (hence modeled network joules) by a byte from run to run. Only ids
    drawn inside ``InMemoryLinkState.create_node`` / ``create_run`` and by ``run_simulation``'s
    own run/task id draw are affected. Yields whether the hook could be installed (False, with a
    warning, on a Flower without these internals or whose methods no longer draw through them:
    ids stay random).
    """
    try:
        mod = importlib.import_module(LINKSTATE_MODULE)
        sim = importlib.import_module(SIMULATION_MODULE)
        cls, draw = mod.InMemoryLinkState, getattr(mod, DRAW)
        create, create_run = cls.create_node, cls.create_run
        sim_draw = getattr(sim, DRAW)
    except (ImportError, AttributeError) as err:
        warn_not_installed("seeded node ids", f"internals missing: {err}", SEEDED_IDS_LOST)
        yield False
        return
    if not (_calls(create, DRAW) and _calls(create_run, DRAW) and _module_calls(sim, DRAW)):
        why = f"InMemoryLinkState.create_node/create_run or run_simulation do not call {DRAW}"
        warn_not_installed("seeded node ids", why, SEEDED_IDS_LOST)
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
        @functools.wraps(method)
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
    whether the hook could be installed (False, with a warning, on a Flower without these
    internals or whose ``create_node`` takes no ``name``: nodes stay unnamed and declared
    discovery learns every node from its first reply; no warning when ``names`` is empty, as
    in a run without declared discovery, which loses nothing)."""
    try:
        mod = importlib.import_module(LINKSTATE_MODULE)
        cls = mod.InMemoryLinkState
        create = cls.create_node
    except (ImportError, AttributeError) as err:
        if names:
            why = f"internals missing: {err}"
            warn_not_installed("declared node names", why, DECLARED_NAMES_LOST)
        yield False
        return
    try:
        takes_name = "name" in inspect.signature(create).parameters
    except (TypeError, ValueError):
        takes_name = False
    if not takes_name or getattr(create, "__isabstractmethod__", False):
        if names:
            why = "InMemoryLinkState.create_node does not store a node name"
            warn_not_installed("declared node names", why, DECLARED_NAMES_LOST)
        yield False
        return
    lock, counter = threading.Lock(), iter(range(len(names)))

    @functools.wraps(create)
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
