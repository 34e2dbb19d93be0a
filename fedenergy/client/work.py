"""The compute work of one call: stated by the handler, counted from its torch work, or unknown.

A handler may state its work (:func:`report_work`, or ``work_record`` itself: the call kind, its
FLOPs and, optionally, its steps, examples per step and threads under ``WORK_KEY`` in the
reply); that is how frameworks other than torch, or a user who knows better, say what a call
did. Otherwise the energy mod counts the torch work the
handler did (:mod:`fedenergy.client.torch_work`, loaded only when the process has already
imported torch: a ClientApp without torch never pays for it). Where neither says anything the
work is unknown, and the report says so (provenance ``unmetered``) rather than claiming 0 J.

Precedence, for the compute figure of a report: measured (a meter on the node) > stated >
counted > unmetered. Measured nodes still report the stated or counted FLOPs beside.
"""

from __future__ import annotations

import math
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flwr.app import ConfigRecord, Message, RecordDict

from fedenergy.protocol import WORK_KEY
from fedenergy.report import KINDS

if TYPE_CHECKING:
    from fedenergy.client.torch_work import TorchCalls

STATED, COUNTED, UNKNOWN = "stated", "counted", "unknown"


def work_record(
    kind: str, flops: int, steps: int = 0, batch: int = 0, threads: int = 0
) -> ConfigRecord:
    """What a handler puts in its reply for the mod: the call kind, its FLOPs, its steps
    (optimizer steps, or forward batches of an evaluation), examples per step and compute
    threads (0: not known)."""
    return ConfigRecord(
        {
            "kind": kind,
            "flops": int(flops),
            "steps": int(steps),
            "batch": int(batch),
            "threads": int(threads),
        }
    )


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"report_work: {name} must be an integer >= 0, got {value!r}")
    return value


def report_work(
    reply: Message | RecordDict,
    flops: int,
    kind: str | None = None,
    *,
    steps: int = 0,
    batch: int = 0,
    threads: int = 0,
) -> None:
    """State the work of the call ``reply`` answers: ``flops`` floating-point operations of
    local computation (training, evaluation), in ``steps`` steps (optimizer steps; forward
    batches of an evaluation) of ``batch`` examples on ``threads`` threads (0: not known; the
    threads then default to torch's where torch is loaded, else all cores). ``kind`` is the
    call (``train``, ``evaluate``, ``query``); by default the reply's message type (it must be
    given for a bare RecordDict). The energy mod takes the record out of the reply, over any
    automatic count, and attaches the call's EnergyReport."""
    content = reply.content if isinstance(reply, Message) else reply
    if kind is None:
        if not isinstance(reply, Message):
            raise ValueError("report_work: give kind= for a RecordDict (train, evaluate, query)")
        kind = str(reply.metadata.message_type).split(".")[0]
    if kind not in KINDS:
        raise ValueError(f"report_work: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if isinstance(flops, bool) or not isinstance(flops, (int, float)) or not 0 <= flops < math.inf:
        raise ValueError(f"report_work: flops must be a finite number >= 0, got {flops!r}")
    counts = [_count(n, v) for n, v in (("steps", steps), ("batch", batch), ("threads", threads))]
    content[WORK_KEY] = work_record(kind, int(flops), *counts)


@dataclass(frozen=True)
class CallWork:
    """The work of one call as the energy mod settled it."""

    kind: str
    flops: int
    basis: str  # STATED | COUNTED | UNKNOWN
    note: str = ""  # for COUNTED: what was not counted; for UNKNOWN: why nothing is known
    steps: int = 0  # optimizer steps (evaluate: forward batches); 0: not known
    batch: int = 0  # examples per step; 0: not known
    threads: int = 0  # compute threads; 0: not known (all cores)


def _torch_threads() -> int:
    """torch's intra-op threads where torch is loaded, else 0 (not known)."""
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else 0


def _stated_int(record: ConfigRecord, key: str) -> int:
    v = record.get(key, 0)
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def torch_calls() -> AbstractContextManager[TorchCalls | None]:
    """A recorder of the torch work of the call about to run, or a no-op (yielding None) when
    torch is not loaded in this process."""
    if "torch" not in sys.modules:
        return nullcontext(None)
    from fedenergy.client.torch_work import TorchCalls

    return TorchCalls()


def call_work(
    reply: Message, kind: str, seen: TorchCalls | None, counting: bool = True
) -> CallWork:
    """The work of a call from its reply and its recorded torch work. A stated work record is
    taken (and removed from the reply); else the torch work is counted; else it is unknown
    (``counting`` False: nothing was recorded because the mod counts nothing)."""
    if WORK_KEY in reply.content:
        stated = reply.content[WORK_KEY]
        del reply.content[WORK_KEY]
        threads = _stated_int(stated, "threads") or _torch_threads()
        steps, batch = _stated_int(stated, "steps"), _stated_int(stated, "batch")
        return CallWork(
            str(stated["kind"]), int(stated["flops"]), STATED, "", steps, batch, threads
        )
    if seen is None:
        why = "torch not loaded" if counting else "this mod counts no work"
        return CallWork(kind, 0, UNKNOWN, f"no work stated and {why}")
    counted = seen.counted()
    if counted.calls == 0:
        return CallWork(kind, 0, UNKNOWN, "no work stated and no torch module call seen")
    if counted.uncounted == counted.calls:
        return CallWork(kind, 0, UNKNOWN, f"torch module calls not countable ({counted.reason})")
    note = ""
    if counted.uncounted:
        note = f"{counted.uncounted} of {counted.calls} calls not counted ({counted.reason})"
    # steps: optimizer steps, else backward passes, else (an evaluation) outermost forward calls
    steps = counted.steps or counted.backwards or counted.calls - counted.uncounted
    return CallWork(kind, counted.flops, COUNTED, note, steps, counted.batch, _torch_threads())
