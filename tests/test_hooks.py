"""The Flower hooks of the Simulation Engine: they take effect on this Flower, and say so (a
warning naming the Flower version and what is lost) when they cannot be installed."""

import importlib
import logging
import secrets

import flwr
import pytest
from flwr.common.constant import HEARTBEAT_INTERVAL_INF, NOOP_ACCOUNT_NAME, NOOP_FLWR_AID
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.superlink.federation import NoOpFederationManager

from fedenergy.sim.hooks import declared_node_names, seeded_node_ids

LINKSTATE = importlib.import_module("flwr.server.superlink.linkstate.in_memory_linkstate")
SIMULATION = importlib.import_module("flwr.simulation.run_simulation")


def _register(num_nodes: int) -> tuple[object, list[int]]:
    """Register nodes on a fresh in-memory link state as the Simulation Engine does."""
    factory = LinkStateFactory(
        FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()
    )
    state = factory.state()
    ids = [
        state.create_node(
            NOOP_FLWR_AID,
            NOOP_ACCOUNT_NAME,
            secrets.token_bytes(32),
            heartbeat_interval=HEARTBEAT_INTERVAL_INF,
        )
        for _ in range(num_nodes)
    ]
    return state, ids


def _warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "fedenergy" and r.levelno == logging.WARNING
    ]


def test_hooks_install_and_take_effect_without_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger="fedenergy")
    original = LINKSTATE.InMemoryLinkState.create_node
    runs = []
    for _ in range(2):
        with seeded_node_ids(7) as seeded, declared_node_names(["fe:rpi4/lte", "b"]) as named:
            assert seeded is True and named is True
            state, ids = _register(3)
        runs.append(ids)
        # the third node has no name to take: Flower stores none ("")
        assert [state.nodes[i].name for i in ids] == ["fe:rpi4/lte", "b", ""]
    assert runs[0] == runs[1]  # seeded: the same ids in every run with the same seed
    with seeded_node_ids(8):
        assert _register(3)[1] != runs[0]
    assert _register(3)[1] != runs[0]  # outside the block ids are random again
    assert LINKSTATE.InMemoryLinkState.create_node is original
    assert _warnings(caplog) == []


@pytest.mark.parametrize(
    "target, name",
    [
        (LINKSTATE.InMemoryLinkState, "create_node"),
        (LINKSTATE.InMemoryLinkState, "create_run"),
        (LINKSTATE, "generate_rand_int_from_bytes"),
        (SIMULATION, "generate_rand_int_from_bytes"),
    ],
)
def test_seeded_ids_warn_when_flower_internals_are_missing(monkeypatch, caplog, target, name):
    caplog.set_level(logging.WARNING, logger="fedenergy")
    monkeypatch.delattr(target, name)
    with seeded_node_ids(7) as installed:
        assert installed is False
    (msg,) = _warnings(caplog)
    assert f"Flower {flwr.__version__}" in msg and "seeded node ids" in msg
    assert "node ids and the run id stay random" in msg and "message sizes" in msg


def test_declared_names_warn_when_flower_internals_are_missing(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="fedenergy")
    monkeypatch.delattr(LINKSTATE, "InMemoryLinkState")
    with declared_node_names(["fe:rpi4/lte"]) as installed:
        assert installed is False
    (msg,) = _warnings(caplog)
    assert f"Flower {flwr.__version__}" in msg and "declared node names" in msg
    assert "declared discovery learns every node lazily" in msg


def test_hooks_warn_when_the_patch_would_not_take_effect(monkeypatch, caplog):
    """Deleting the subclass's create_node leaves LinkState's abstract one: the attribute is
    there, but it neither draws ids nor stores names, so neither patch would do anything."""
    caplog.set_level(logging.WARNING, logger="fedenergy")
    monkeypatch.delattr(LINKSTATE.InMemoryLinkState, "create_node")
    assert hasattr(LINKSTATE.InMemoryLinkState, "create_node")

    def create_node(self, owner_aid, owner_name, public_key, heartbeat_interval):
        return 1  # a Flower whose ids come from elsewhere and which takes no name

    for replacement in (None, create_node):
        caplog.clear()
        if replacement is not None:
            monkeypatch.setattr(LINKSTATE.InMemoryLinkState, "create_node", replacement)
        with seeded_node_ids(7) as seeded, declared_node_names(["fe:rpi4/lte"]) as named:
            assert seeded is False and named is False
        msgs = _warnings(caplog)
        assert len(msgs) == 2 and all(f"Flower {flwr.__version__}" in m for m in msgs)
        assert "do not call generate_rand_int_from_bytes" in msgs[0]
        assert "does not store a node name" in msgs[1]


def test_declared_names_without_names_lose_nothing_and_say_nothing(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="fedenergy")
    monkeypatch.delattr(LINKSTATE, "InMemoryLinkState")
    with declared_node_names([]) as installed:
        assert installed is False
    assert _warnings(caplog) == []
