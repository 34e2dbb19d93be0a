"""EnergyReport: what one client call spent, component by component, with provenance.

A report travels in the reply as a Flower ``ConfigRecord`` under the key ``REPORT_KEY`` (not a
MetricRecord: FedAvg accepts exactly one MetricRecord per reply and averages it). Components are
stored as parallel lists so the record stays flat. ``from_record`` validates everything it
reads and raises :class:`ReportError` with a reason; it never trusts the sender (see
docs/robustness.md for the trust model and the bounds). Every component is ``measured``,
``modeled`` or ``unmetered``: a compute part the node could not count, carried as 0 J and never
summed as energy (the ledger stores its joules as NULL).

Validation has two outcomes besides acceptance: a **rejection** (:class:`ReportError`: the
report is malformed, or physically impossible for the node's device and link and the call's
bytes and duration) and a **flag** (accepted, but an outlier worth a look: e.g. ~0 J for a large
amount of work). :func:`validate_report` returns the report with its flags.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from flwr.app import ConfigRecord

from fedenergy.physics.call import call_energy
from fedenergy.physics.catalog import Catalog, packaged_catalog
from fedenergy.physics.compute import BOUNDARIES, DEVICE, OFF, PER_CALL, Work, call_compute
from fedenergy.physics.devices import DeviceProfile
from fedenergy.physics.infra import PER_BYTE
from fedenergy.physics.network import LinkProfile
from fedenergy.physics.radio import KeepAlive
from fedenergy.protocol import REPORT_SCHEMA_VERSION

KINDS = ("train", "evaluate", "query")
PHASES = ("train", "evaluate", "query", "download", "upload", "startup")
NETWORK_PHASES = ("download", "upload")
NETWORK_DOMAINS = ("radio", "infrastructure")
# unmetered: the node does not know what this part of the call spent (e.g. compute on a node
# without a meter or a model); its joules are 0 on the wire and are never summed as energy
UNMETERED = "unmetered"
PROVENANCES = ("measured", "modeled", UNMETERED)
FIELDS = (
    "schema",
    "kind",
    "server-round",
    "partition-id",
    "device",
    "link",
    "bytes-down",
    "bytes-up",
    "flops",
    "compute-s",
    "machine-j",
    "c-phase",
    "c-domain",
    "c-joules",
    "c-provenance",
    "c-source",
)
# optional fields (reports from before the compute model carried steps do not have them)
OPTIONAL = ("steps", "batch", "threads", "boundary", "startup-s")
MAX_STEPS = 10**12  # a trillion optimizer steps in one call: far beyond any device-week
MAX_THREADS = 4096
# Absolute bounds (any device, any call); see docs/robustness.md for the reasoning.
MAX_COMPONENTS = 64
MAX_TEXT = 256
MAX_JOULES = 1e9  # 1 GJ in one call is ~ 280 kWh: beyond any single device call
MAX_BYTES = 2**36  # 64 GiB in one message: far beyond Flower's gRPC message limit (2 GiB)
MAX_FLOPS = 10**21  # a GPU server at 100 TFLOP/s for four months
MAX_CALL_S = 7 * 86400.0  # one call computing for a week (modeled or measured) is implausible
# Physical bounds relative to the node's device and link profiles.
POWER_SLACK = 10.0  # compute joules <= 10 x active power x plausible duration
MEASURED_MIN_S = 60.0  # a measured figure's duration is taken as at least one meter window
STARTUP_MAX_S = 600.0  # the start-up component: at most 10 minutes at 10 x active power
MACHINE_MAX_W = 10_000.0  # a measured machine total above 10 kW sustained is not one device
NETWORK_SLACK = 4.0  # radio/infrastructure joules <= 4 x the link model for the bytes
MAX_INFRA_KWH_PER_GB = 10.0  # bound when the run's intensity is unknown (SWD v4: 0.059)
BYTES_SLACK, BYTES_MARGIN = 2.0, 1 << 20  # reported bytes <= 2 x what the server saw + 1 MiB
MIN_J = 1e-3  # absolute tolerance (J) of every relative bound
# Outliers that are flagged, not rejected: figures this many times below the model's.
FLAG_RATIO = 10.0


class ReportError(ValueError):
    """An energy report is malformed or implausible; ``str(err)`` is the reason."""


@dataclass(frozen=True)
class Expected:
    """What the server knows about the call a report answers; every field is optional (None:
    unknown, that check is skipped). The node's device and link are those it registered with
    (its profile-query answer), not those the report claims."""

    kind: str | None = None
    server_round: int | None = None
    partition_id: int | None = None
    device: DeviceProfile | None = None
    link: LinkProfile | None = None
    infra_kwh_per_gb: float | None = None
    # the devices and links the run knows (None: the packaged ones): a report naming another
    # device or link is rejected
    catalog: Catalog | None = None
    infra_model: str | None = None  # physics.infra model of the run (None: unknown)
    bytes_sent: int | None = None  # the exact size of the message the server sent
    reply_payload_bytes: int | None = None  # the bytes of the arrays the reply carries
    # the node's radio on the run's clock as sent with the message (physics/radio.py): seconds
    # since its previous transfer (None: none sent, the call stands alone) and the keep-alive
    radio_idle_s: float | None = None
    keepalive: KeepAlive | None = None


@dataclass(frozen=True)
class Component:
    """Joules spent in one phase on one domain, tagged measured or modeled and by what."""

    phase: str  # one of PHASES
    domain: str  # "compute", "radio", "infrastructure", or a sensor domain e.g. "rapl:package-0"
    joules: float  # 0 for an unmetered component: not a figure, and never summed as energy
    provenance: str  # "measured" | "modeled" | "unmetered"
    source: str  # sensor id, or model id with its constants (unmetered: why it is not known)


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
    schema: int = REPORT_SCHEMA_VERSION
    steps: int = 0  # optimizer steps (evaluate: forward batches); 0: not known
    batch: int = 0  # examples per step; 0: not known
    threads: int = 0  # compute threads; 0: not known (all cores)
    boundary: str = ""  # accounting boundary (physics.compute.BOUNDARIES); "": not stated
    startup_s: float = 0.0  # seconds of the start-up phase (a fresh ClientApp process)

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
                "steps": self.steps,
                "batch": self.batch,
                "threads": self.threads,
                "boundary": self.boundary,
                "startup-s": float(self.startup_s),
            }
        )

    @classmethod
    def from_record(cls, rec: ConfigRecord, expected: Expected | None = None) -> EnergyReport:
        """Validate and rebuild a report; raise ReportError naming the first problem."""
        return validate_report(rec, expected)[0]


def validate_report(
    rec: ConfigRecord, expected: Expected | None = None
) -> tuple[EnergyReport, list[str]]:
    """Check every field of an untrusted report for type and range, then its physical
    plausibility for the node's device and link; return the report and its outlier flags or
    raise ReportError with the reason of the first problem."""
    if not isinstance(rec, ConfigRecord):
        raise ReportError(f"the report must be a ConfigRecord, got {type(rec).__name__}")
    unknown = sorted(str(k) for k in rec if k not in FIELDS and k not in OPTIONAL)
    if unknown:
        raise ReportError(f"unknown field {unknown[0][:40]!r}")
    exp = expected or Expected()
    catalog = packaged_catalog() if exp.catalog is None else exp.catalog
    report = _parse(rec, catalog)
    return report, _check(report, exp, catalog)


def _parse(rec: ConfigRecord, catalog: Catalog) -> EnergyReport:
    get = _Reader(rec)
    schema = get.int("schema", lo=0)
    if schema != REPORT_SCHEMA_VERSION:
        raise ReportError(
            f"unsupported report schema {schema} (this server reads {REPORT_SCHEMA_VERSION})"
        )
    kind = get.text("kind")
    if kind not in KINDS:
        raise ReportError(f"unknown call kind {kind[:40]!r}")
    phases = get.texts("c-phase")
    domains = get.texts("c-domain")
    joules = get.floats("c-joules")
    provs = get.texts("c-provenance")
    sources = get.texts("c-source")
    n = len(phases)
    if not (len(domains) == len(joules) == len(provs) == len(sources) == n):
        raise ReportError("component lists have different lengths")
    comps = []
    for i in range(n):
        if phases[i] not in PHASES:
            raise ReportError(f"component {i}: unknown phase {phases[i][:40]!r}")
        if provs[i] not in PROVENANCES:
            raise ReportError(f"component {i}: provenance must be measured, modeled or unmetered")
        if not math.isfinite(joules[i]) or not 0 <= joules[i] <= MAX_JOULES:
            raise ReportError(f"component {i}: joules {joules[i]!r} not in [0, {MAX_JOULES:g}]")
        if not domains[i] or not sources[i]:
            raise ReportError(f"component {i}: empty domain or source")
        network = phases[i] in NETWORK_PHASES
        if provs[i] == UNMETERED and (network or joules[i] != 0):
            raise ReportError(
                f"component {i}: an unmetered component is compute and carries 0 J "
                f"(got {phases[i]!r}, {joules[i]!r} J)"
            )
        if network != (domains[i] in NETWORK_DOMAINS):
            raise ReportError(
                f"component {i}: domain {domains[i][:40]!r} does not belong to phase {phases[i]!r}"
            )
        if not network and phases[i] not in (kind, "startup"):
            raise ReportError(f"component {i}: phase {phases[i]!r} in a {kind} report")
        comps.append(Component(phases[i], domains[i], joules[i], provs[i], sources[i]))
    device, link = get.text("device"), get.text("link")
    if device not in catalog.devices:
        raise ReportError(f"field 'device': unknown device {device[:40]!r}")
    if link not in catalog.links:
        raise ReportError(f"field 'link': unknown link {link[:40]!r}")
    boundary = get.text("boundary") if "boundary" in rec else ""
    if boundary not in ("", *BOUNDARIES):
        raise ReportError(f"field 'boundary': unknown boundary {boundary[:40]!r}")
    opt_int = {
        k: get.int(k, lo=0, hi=hi) if k in rec else 0
        for k, hi in (("steps", MAX_STEPS), ("batch", MAX_BYTES), ("threads", MAX_THREADS))
    }
    return EnergyReport(
        kind=kind,
        server_round=get.int("server-round", lo=0),
        partition_id=get.int("partition-id", lo=-1),
        device=device,
        link=link,
        bytes_down=get.int("bytes-down", lo=0, hi=MAX_BYTES),
        bytes_up=get.int("bytes-up", lo=0, hi=MAX_BYTES),
        flops=get.int("flops", lo=0, hi=MAX_FLOPS),
        compute_s=get.float("compute-s", hi=MAX_CALL_S),
        components=tuple(comps),
        machine_j=get.float("machine-j", hi=MAX_JOULES),
        schema=schema,
        steps=opt_int["steps"],
        batch=opt_int["batch"],
        threads=opt_int["threads"],
        boundary=boundary,
        startup_s=get.float("startup-s", hi=STARTUP_MAX_S) if "startup-s" in rec else 0.0,
    )


def _check(r: EnergyReport, exp: Expected, catalog: Catalog) -> list[str]:
    """Plausibility against what the server knows; raise ReportError or return flags."""
    for name, want, got in (
        ("call kind", exp.kind, r.kind),
        ("server round", exp.server_round, r.server_round),
        ("device", exp.device.id if exp.device else None, r.device),
        ("link", exp.link.id if exp.link else None, r.link),
    ):
        if want is not None and got != want:
            raise ReportError(f"{name} {str(got)[:40]!r} does not match the call's {want!r}")
    if exp.bytes_sent and r.bytes_down > BYTES_SLACK * exp.bytes_sent + BYTES_MARGIN:
        raise ReportError(
            f"bytes-down {r.bytes_down} far above the {exp.bytes_sent} bytes the server sent"
        )
    if exp.reply_payload_bytes is not None and (
        r.bytes_up > BYTES_SLACK * exp.reply_payload_bytes + BYTES_MARGIN
    ):
        raise ReportError(
            f"bytes-up {r.bytes_up} far above the reply's {exp.reply_payload_bytes} payload bytes"
        )
    device = exp.device or catalog.devices[r.device]
    link = exp.link or catalog.links[r.link]
    # the compute model's figure for the claimed work, in the report's boundary (whole-device,
    # the larger, where it does not say); the start-up as the report has it
    boundary = r.boundary or DEVICE
    has_startup = any(c.phase == "startup" for c in r.components)
    work = Work(r.flops, r.steps, r.batch, r.threads)
    mc = call_compute(device.terms, work, boundary, PER_CALL if has_startup else OFF)
    model_s = mc.compute_s
    if model_s > MAX_CALL_S:
        raise ReportError(
            f"{r.flops} FLOPs take {model_s:.3g} s on {device.id} (with {r.steps} steps), "
            f"beyond {MAX_CALL_S:g} s"
        )
    duration = max(r.compute_s, model_s)
    call_j = sum(c.joules for c in r.components if c.phase == r.kind)
    measured = any(c.provenance == "measured" for c in r.components if c.phase == r.kind)
    # the call model's figure for the claimed bytes, duration and work (infrastructure at the
    # run's intensity, or at the largest plausible one where it is unknown)
    intensity = exp.infra_kwh_per_gb
    kwh = MAX_INFRA_KWH_PER_GB if intensity is None else intensity
    # an unknown model is bounded per byte at the largest plausible intensity, a known one by
    # itself
    infra_model = exp.infra_model if intensity is not None and exp.infra_model else PER_BYTE
    claimed = functools.partial(
        call_energy,
        link,
        r.bytes_down,
        r.bytes_up,
        kwh,
        mc.compute_j,
        r.compute_s,
        wait_w=mc.wait_w,
        startup_j=mc.startup_j,
        startup_s=r.startup_s,
        infra_model=infra_model,
    )
    model = claimed()  # the call standing alone
    # meters integrate over their own sampling windows, longer than a short call; the call's
    # phase also holds the device's base while it waits on its transfers (whole-device)
    window = max(duration, MEASURED_MIN_S) if measured else duration
    waiting = model.download_s + model.upload_s
    cap = POWER_SLACK * device.active_power_w * (window + waiting) + MIN_J
    if call_j > cap:
        raise ReportError(
            f"compute {call_j:.4g} J over {window + waiting:.3g} s exceeds {POWER_SLACK:g} x "
            f"the {device.active_power_w:g} W of {device.id} ({cap:.4g} J)"
        )
    startup_j = sum(c.joules for c in r.components if c.phase == "startup")
    cap = POWER_SLACK * device.active_power_w * STARTUP_MAX_S + MIN_J
    if startup_j > cap:
        raise ReportError(f"start-up {startup_j:.4g} J exceeds {cap:.4g} J on {device.id}")
    if r.machine_j > MACHINE_MAX_W * (duration + STARTUP_MAX_S):
        raise ReportError(f"machine-j {r.machine_j:.4g} J beyond {MACHINE_MAX_W:g} W sustained")
    # the radio on the run's clock, from the idle time sent with the message; a node that
    # charged its call as standing alone (an older mod, no clock) is within bounds too
    clocked = claimed(idle_s=exp.radio_idle_s, keepalive=exp.keepalive)
    flags = []
    if exp.partition_id is not None and r.partition_id != exp.partition_id:
        flags.append(f"partition {r.partition_id} differs from the registered {exp.partition_id}")
    for phase, nbytes, radio_j, radio_low, bound in (
        (
            "download",
            r.bytes_down,
            max(model.download_radio_j, clocked.download_radio_j),
            min(model.download_radio_j, clocked.download_radio_j),
            model.download_infra_j,
        ),
        (
            "upload",
            r.bytes_up,
            max(model.upload_radio_j, clocked.upload_radio_j),
            min(model.upload_radio_j, clocked.upload_radio_j),
            model.upload_infra_j,
        ),
    ):
        got = sum(c.joules for c in r.components if c.phase == phase and c.domain == "radio")
        if got > NETWORK_SLACK * radio_j + MIN_J:
            raise ReportError(
                f"{phase} radio {got:.4g} J exceeds {NETWORK_SLACK:g} x the {link.id} model's "
                f"{radio_j:.4g} J for {nbytes} bytes"
            )
        if radio_low > MIN_J and got < radio_low / FLAG_RATIO:
            flags.append(
                f"{phase} radio {got:.4g} J is under 1/{FLAG_RATIO:g} of the {link.id} model's "
                f"{radio_low:.4g} J for {nbytes} bytes"
            )
        infra = sum(c.joules for c in r.components if c.phase == phase and c.domain != "radio")
        if infra > NETWORK_SLACK * bound + MIN_J:
            raise ReportError(
                f"{phase} infrastructure {infra:.4g} J exceeds {NETWORK_SLACK:g} x {bound:.4g} J "
                f"for {nbytes} bytes"
            )
        if intensity is not None and bound > MIN_J and infra < bound / FLAG_RATIO:
            flags.append(f"{phase} infrastructure {infra:.4g} J for {nbytes} bytes is low")
    # an unmetered compute says itself that its figure is not known: nothing to flag about it
    unmetered = any(c.provenance == UNMETERED for c in r.components if c.phase == r.kind)
    if not unmetered and model.compute_j > MIN_J and call_j < model.compute_j / FLAG_RATIO:
        flags.append(
            f"compute {call_j:.4g} J is under 1/{FLAG_RATIO:g} of {device.id}'s model figure "
            f"{model.compute_j:.4g} J for {r.flops} FLOPs in {r.steps} steps"
        )
    if not unmetered and r.kind == "train" and r.flops == 0:
        flags.append("a train call that reports 0 FLOPs")
    if r.machine_j > 0 and call_j > r.machine_j * 1.01 + MIN_J:
        flags.append(f"process compute {call_j:.4g} J above the machine total {r.machine_j:.4g} J")
    if exp.bytes_sent and r.bytes_down < exp.bytes_sent / BYTES_SLACK:
        flags.append(f"bytes-down {r.bytes_down} under half the {exp.bytes_sent} bytes sent")
    if exp.reply_payload_bytes and r.bytes_up < exp.reply_payload_bytes:
        flags.append(
            f"bytes-up {r.bytes_up} below the reply's {exp.reply_payload_bytes} payload bytes"
        )
    return flags


class _Reader:
    """Typed, bounded access to an untrusted ConfigRecord."""

    def __init__(self, rec: ConfigRecord) -> None:
        self.rec = rec

    def _get(self, key: str):
        if key not in self.rec:
            raise ReportError(f"missing field {key!r}")
        return self.rec[key]

    def int(self, key: str, lo: int, hi: int = 2**63 - 1) -> int:
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ReportError(f"field {key!r} must be an integer in [{lo}, {hi}], got {v!r:.40}")
        return v

    def float(self, key: str, hi: float) -> float:
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ReportError(f"field {key!r} must be a number")
        try:
            x = float(v)
        except OverflowError:
            x = math.inf
        if not math.isfinite(x) or not 0 <= x <= hi:
            raise ReportError(f"field {key!r} must be finite and in [0, {hi:g}], got {v!r:.40}")
        return x

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
        try:
            return [float(x) for x in v]
        except OverflowError:
            raise ReportError(f"field {key!r} holds a number beyond float range") from None
