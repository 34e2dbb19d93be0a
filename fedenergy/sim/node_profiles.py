"""Virtual devices that know what they are: a Flower ClientApp run on a simulated fleet.

A deployed SuperNode is started with its profile in its node config (``--node-config
"device='rpi4' link='wifi'"``), so the energy mod prices its calls with that device and link.
The virtual SuperNodes of Flower's Simulation Engine get only ``partition-id`` and
``num-partitions``. :class:`ProfiledClientApp` runs any ClientApp so that each virtual node
knows the fleet profile of its partition, kept in its ``context.state`` under
``NODE_PROFILE_STATE_KEY``, where the energy mod looks after the node config and the server's
per-message config (:func:`fedenergy.client.mod.resolve_profile`). Messages are not touched:
the bytes the mod counts are the bytes on the wire.

fedenergy's built-in ClientApp learns its profile from the fleet its messages name
(:mod:`fedenergy.sim.faults`); this wrapper is for apps that know nothing of fedenergy's
configs (``simulate(..., client_app=app)``, ``fedenergy simulate --app``). With a user catalog,
the run's catalog paths are recorded beside the profile (key ``catalog``), so the energy mod
finds a user device or link even when the app's server sends no ``fe-catalog``.
"""

from __future__ import annotations

from collections.abc import Sequence

from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from fedenergy.protocol import (
    NODE_CATALOG,
    NODE_DEVICE,
    NODE_LINK,
    NODE_PROFILE_STATE_KEY,
    PARTITION_ID,
)
from fedenergy.sim.fleet import NodeProfile


class ProfiledClientApp(ClientApp):
    """``app`` on virtual nodes that each know the device and link of their partition
    (``profiles[partition-id]``, from the user catalog at ``catalog`` paths where given); a node
    whose config names its own device is left alone."""

    def __init__(
        self, app: ClientApp, profiles: Sequence[NodeProfile], catalog: Sequence[str] = ()
    ) -> None:
        super().__init__()
        self.app = app
        self.profiles = tuple((p.device.id, p.link.id) for p in profiles)
        self.catalog = {NODE_CATALOG: list(catalog)} if catalog else {}

    def __call__(self, message: Message, context: Context) -> Message:
        pid = context.node_config.get(PARTITION_ID)
        if NODE_DEVICE not in context.node_config and isinstance(pid, int):
            if 0 <= pid < len(self.profiles):
                device, link = self.profiles[pid]
                context.state[NODE_PROFILE_STATE_KEY] = ConfigRecord(
                    {NODE_DEVICE: device, NODE_LINK: link, **self.catalog}
                )
        return self.app(message, context)
