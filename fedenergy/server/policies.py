"""Compression policies: which uplink codec each chosen node uses this round.

A policy whose codecs depend on the node only through ``node.known`` and ``node.link`` (and on
the round) says so with ``per_link = True``: the strategy then forecasts whole candidate lists
at once, one forecast per (known, link) class (:mod:`fedenergy.server.forecasters`). A policy
without it is asked once per node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from fedenergy.codecs import CodecSpec, parse_codec
from fedenergy.server.columns import NodeState

POLICIES = ("fixed", "per-link", "accuracy-aware")

# Expensive radios compress hardest: LTE/3G/5G pay a high per-byte radio cost and tails; every
# other link int8: network infrastructure energy is charged per byte whatever the link (0.059
# kWh/GB by default), so a wired node gains from int8 as much as a Wi-Fi one. (Ethernet used
# fp16 before: ~1.9-2.4 J per train call in the ledger of a cellular-fleet run, against ~1.4 J
# for int8 Wi-Fi nodes.)
DEFAULT_PER_LINK = {
    "3g": "topk:0.05",
    "lte": "topk:0.05",
    "5g": "topk:0.1",
    "5g-mmwave": "int8",
    "wifi": "int8",
    "ethernet": "int8",
}


# Downlink (the global model): fp16/int8 only (see compression.encode_global); int8 everywhere.
DEFAULT_DOWNLINK = {
    "3g": "int8",
    "lte": "int8",
    "5g": "int8",
    "5g-mmwave": "int8",
    "wifi": "int8",
    "ethernet": "int8",
}


class CompressionPolicy(Protocol):
    """``codec_for``/``downlink_for``: the uplink and downlink codec of ``node`` this round;
    ``observe``: the global accuracy after a round. Optional ``per_link`` (see above)."""

    def codec_for(self, node: NodeState, server_round: int) -> CodecSpec: ...

    def downlink_for(self, node: NodeState, server_round: int) -> CodecSpec: ...

    def observe(self, server_round: int, accuracy: float | None) -> None: ...


@dataclass
class FixedPolicy:
    """Every node uses the same codec."""

    per_link: ClassVar[bool] = True
    codec: CodecSpec = field(default_factory=lambda: parse_codec("none"))
    downlink: CodecSpec = field(default_factory=lambda: parse_codec("none"))

    def codec_for(self, node: NodeState, server_round: int) -> CodecSpec:
        return self.codec

    def downlink_for(self, node: NodeState, server_round: int) -> CodecSpec:
        return self.downlink

    def observe(self, server_round: int, accuracy: float | None) -> None:
        return None


@dataclass
class PerLinkPolicy:
    """A codec per link id (expensive links compress harder); ``default`` (uplink) and
    ``default_downlink`` for other links and for nodes whose link is not known yet."""

    per_link: ClassVar[bool] = True

    by_link: dict[str, CodecSpec] = field(
        default_factory=lambda: {k: parse_codec(v) for k, v in DEFAULT_PER_LINK.items()}
    )
    default: CodecSpec = field(default_factory=lambda: parse_codec("int8"))
    default_downlink: CodecSpec = field(default_factory=lambda: parse_codec("int8"))
    downlink_by_link: dict[str, CodecSpec] = field(
        default_factory=lambda: {k: parse_codec(v) for k, v in DEFAULT_DOWNLINK.items()}
    )

    def codec_for(self, node: NodeState, server_round: int) -> CodecSpec:
        if not node.known:
            return self.default
        return self.by_link.get(node.link.id, self.default)

    def downlink_for(self, node: NodeState, server_round: int) -> CodecSpec:
        if not node.known:
            return self.default_downlink
        return self.downlink_by_link.get(node.link.id, self.default_downlink)

    def observe(self, server_round: int, accuracy: float | None) -> None:
        return None


@dataclass
class AccuracyAwarePolicy:
    """``inner``'s codecs while the global accuracy improves; ``relaxed`` while it stalls
    (no gain of ``min_gain`` over the last ``patience`` rounds), until it improves again."""

    inner: CompressionPolicy
    relaxed: CodecSpec = field(default_factory=lambda: parse_codec("int8"))
    patience: int = 2
    min_gain: float = 0.005
    history: list[float] = field(default_factory=list)
    relaxing: bool = False

    @property
    def per_link(self) -> bool:
        """Per-link when ``inner`` is (``relaxed`` is one codec for every node)."""
        return bool(getattr(self.inner, "per_link", False))

    def codec_for(self, node: NodeState, server_round: int) -> CodecSpec:
        return self.relaxed if self.relaxing else self.inner.codec_for(node, server_round)

    def downlink_for(self, node: NodeState, server_round: int) -> CodecSpec:
        return self.inner.downlink_for(node, server_round)

    def observe(self, server_round: int, accuracy: float | None) -> None:
        if accuracy is None:
            return
        self.history.append(accuracy)
        if len(self.history) > self.patience:
            best_before = max(self.history[: -self.patience])
            self.relaxing = max(self.history[-self.patience :]) < best_before + self.min_gain
