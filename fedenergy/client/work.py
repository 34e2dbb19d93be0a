"""The work a handler states for the energy mod: the call kind and its FLOPs.

The energy mod (:mod:`fedenergy.client.mod`) turns a call's bytes and FLOPs into joules with the
node's device and link profiles; it reports only calls whose handler stated their work.
:func:`report_work` is how a handler of any framework (numpy, JAX, torch, ...) states it.
"""

from __future__ import annotations

import math

from flwr.app import Message, RecordDict

from fedenergy.client.mod import work_record
from fedenergy.protocol import WORK_KEY
from fedenergy.report import KINDS


def report_work(reply: Message | RecordDict, flops: int, kind: str | None = None) -> None:
    """State the work of the call ``reply`` answers: ``flops`` floating-point operations of
    local computation (training, evaluation). ``kind`` is the call (``train``, ``evaluate``,
    ``query``); by default the reply's message type (it must be given for a bare RecordDict).
    The energy mod takes the record out of the reply and attaches the call's EnergyReport."""
    content = reply.content if isinstance(reply, Message) else reply
    if kind is None:
        if not isinstance(reply, Message):
            raise ValueError("report_work: give kind= for a RecordDict (train, evaluate, query)")
        kind = str(reply.metadata.message_type).split(".")[0]
    if kind not in KINDS:
        raise ValueError(f"report_work: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if isinstance(flops, bool) or not isinstance(flops, (int, float)) or not 0 <= flops < math.inf:
        raise ValueError(f"report_work: flops must be a finite number >= 0, got {flops!r}")
    content[WORK_KEY] = work_record(kind, int(flops))
