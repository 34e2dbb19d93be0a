"""EnergyReport: what one client call spent, component by component, with provenance.

A report travels in the reply as a Flower ``ConfigRecord`` under the key ``REPORT_KEY`` (not a
MetricRecord: FedAvg accepts exactly one MetricRecord per reply and averages it). Components are
stored as parallel lists so the record stays flat. ``from_record`` validates everything it
reads and raises :class:`ReportError` with a reason; it never trusts the sender.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from flwr.app import ConfigRecord

REPORT_KEY = "fedenergy.report"
SCHEMA_VERSION = 1
PHASES = ("train", "evaluate", "query", "download", "upload", "startup")
PROVENANCES = ("measured", "modeled")
MAX_COMPONENTS = 64
MAX_TEXT = 256
MAX_JOULES = 1e9  # 1 GJ in one call is ~ 280 kWh: beyond any single device call


class ReportError(ValueError):
    """An energy report is malformed or implausible; ``str(err)`` is the reason."""


@dataclass(frozen=True)
class Component:
    """Joules spent in one phase on one domain, tagged measured or modeled and by what."""

    phase: str  # one of PHASES
    domain: str  # "compute", "radio", "infrastructure", or a sensor domain e.g. "rapl:package-0"
    joules: float
    provenance: str  # "measured" | "modeled"
    source: str  # sensor id, or model id with its constants


@dataclass(frozen=True)
class EnergyReport:
    """Everything a client spent on one call (one message), in joules, bytes and seconds."""

    kind: str  # "train" | "evaluate" | "query"
    server_round: int
    partition_id: int
    device: str
    link: str
    bytes_down: int
    bytes_up: int
    flops: int
    compute_s: float  # modeled (simulated device) or measured wall seconds of the handler
    components: tuple[Component, ...] = field(default_factory=tuple)
    machine_j: float = 0.0  # measured nodes: whole machine/device energy over the call, beside
    schema: int = SCHEMA_VERSION

    @property
    def total_j(self) -> float:
        return sum(c.joules for c in self.components)

    def phase_j(self, phase: str) -> float:
        return sum(c.joules for c in self.components if c.phase == phase)

    def to_record(self) -> ConfigRecord:
        """Flatten into a ConfigRecord (parallel lists for the components)."""
        return ConfigRecord(
            {
                "schema": self.schema,
                "kind": self.kind,
                "server-round": self.server_round,
                "partition-id": self.partition_id,
                "device": self.device,
                "link": self.link,
                "bytes-down": self.bytes_down,
                "bytes-up": self.bytes_up,
                "flops": self.flops,
                "compute-s": float(self.compute_s),
                "machine-j": float(self.machine_j),
                "c-phase": [c.phase for c in self.components],
                "c-domain": [c.domain for c in self.components],
                "c-joules": [float(c.joules) for c in self.components],
                "c-provenance": [c.provenance for c in self.components],
                "c-source": [c.source for c in self.components],
            }
        )

    @classmethod
    def from_record(cls, rec: ConfigRecord) -> EnergyReport:
        """Validate and rebuild a report; raise ReportError naming the first problem."""
        get = _Reader(rec)
        schema = get.int("schema", lo=0)
        if schema != SCHEMA_VERSION:
            raise ReportError(
                f"unsupported report schema {schema} (this server reads {SCHEMA_VERSION})"
            )
        kind = get.text("kind")
        if kind not in ("train", "evaluate", "query"):
            raise ReportError(f"unknown call kind {kind!r}")
        phases = get.texts("c-phase")
        domains = get.texts("c-domain")
        joules = get.floats("c-joules")
        provs = get.texts("c-provenance")
        sources = get.texts("c-source")
        n = len(phases)
        if not (len(domains) == len(joules) == len(provs) == len(sources) == n):
            raise ReportError("component lists have different lengths")
        if n > MAX_COMPONENTS:
            raise ReportError(f"too many components ({n} > {MAX_COMPONENTS})")
        comps = []
        for i in range(n):
            if phases[i] not in PHASES:
                raise ReportError(f"component {i}: unknown phase {phases[i]!r}")
            if provs[i] not in PROVENANCES:
                raise ReportError(f"component {i}: provenance must be measured or modeled")
            if not math.isfinite(joules[i]) or not 0 <= joules[i] <= MAX_JOULES:
                raise ReportError(f"component {i}: joules {joules[i]!r} not in [0, {MAX_JOULES:g}]")
            comps.append(Component(phases[i], domains[i], joules[i], provs[i], sources[i]))
        return cls(
            kind=kind,
            server_round=get.int("server-round", lo=0),
            partition_id=get.int("partition-id", lo=-1),
            device=get.text("device"),
            link=get.text("link"),
            bytes_down=get.int("bytes-down", lo=0),
            bytes_up=get.int("bytes-up", lo=0),
            flops=get.int("flops", lo=0),
            compute_s=get.float("compute-s"),
            components=tuple(comps),
            machine_j=get.float("machine-j"),
            schema=schema,
        )


class _Reader:
    """Typed, bounded access to an untrusted ConfigRecord."""

    def __init__(self, rec: ConfigRecord) -> None:
        self.rec = rec

    def _get(self, key: str):
        if key not in self.rec:
            raise ReportError(f"missing field {key!r}")
        return self.rec[key]

    def int(self, key: str, lo: int) -> int:
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or v > 2**63 - 1:
            raise ReportError(f"field {key!r} must be an integer >= {lo}, got {v!r:.40}")
        return v

    def float(self, key: str) -> float:
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ReportError(f"field {key!r} must be a number")
        if not math.isfinite(v) or v < 0:
            raise ReportError(f"field {key!r} must be finite and >= 0, got {v!r}")
        return float(v)

    def text(self, key: str) -> str:
        v = self._get(key)
        if not isinstance(v, str) or len(v) > MAX_TEXT:
            raise ReportError(f"field {key!r} must be a string of at most {MAX_TEXT} characters")
        return v

    def texts(self, key: str) -> list[str]:
        v = self._get(key)
        if isinstance(v, str) or not isinstance(v, list):
            raise ReportError(f"field {key!r} must be a list of strings")
        if len(v) > MAX_COMPONENTS or not all(isinstance(s, str) and len(s) <= MAX_TEXT for s in v):
            raise ReportError(f"field {key!r} must hold at most {MAX_COMPONENTS} short strings")
        return list(v)

    def floats(self, key: str) -> list[float]:
        v = self._get(key)
        if not isinstance(v, list) or len(v) > MAX_COMPONENTS:
            raise ReportError(f"field {key!r} must be a list of at most {MAX_COMPONENTS} numbers")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise ReportError(f"field {key!r} must hold numbers only")
        return [float(x) for x in v]
