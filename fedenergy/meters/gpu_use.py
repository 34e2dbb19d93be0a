"""Which part of an NVIDIA GPU's work was this process tree's: NVML per-process use.

NVML has no per-process energy (codecarbon#936), but it has per-process use:

  * ``nvmlDeviceGetProcessUtilization(handle, lastSeenTimeStamp)``: the driver's recent samples
    (pid, timeStamp in µs, ``smUtil`` %, ``memUtil`` % …) newer than the time stamp; NVML answers
    NOT_FOUND when there is none. Each sample is one sampling period of the driver, so the sum of
    a pid's ``smUtil`` over the window ÷ the sum over every pid is that pid's part of the SM
    work (``gpu-use`` basis). Read at window boundaries and by the poll thread every
    ``UTIL_POLL_S``, since the driver keeps only a bounded buffer of samples.
  * ``nvmlDeviceGetComputeRunningProcesses(handle)``: the processes holding a compute context.
    With no utilization sample in the window (a short call, an idle GPU, or a GPU/MIG mode that
    does not sample per process) the share comes from it (``gpu-context`` basis): the tree is the
    only holder → 1; the tree holds none → 0; shared → undefined (the GPU's energy is then
    *unattributed*, not guessed).

NVML names processes by host pids. In a container with its own pid namespace they do not
match ours: a pid NVML reports that does not exist in our ``/proc`` could be this tree, so a
share of 0 is never concluded while such pids are present (undefined instead).

Cumulative counters kept per GPU domain ``d`` in the meter's use dict (windows subtract them):
``d.ours`` / ``d.all`` (summed smUtil %), ``d.samples``; last holder state ``d.held`` (1: the tree
holds a context), ``d.others`` (1: visible other holders), ``d.unknown`` (1: holders with pids
not visible here, or the list is unreadable).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fedenergy.meters.records import Share, Snapshot

UTIL_POLL_S = 1.0  # read the utilization samples at least this often while a window is open
NVML_ERROR_NOT_FOUND = 6  # nvml.h: no sample newer than the time stamp
UTIL_SOURCE = "nvmlDeviceGetProcessUtilization smUtil"
CONTEXT_SOURCE = "nvmlDeviceGetComputeRunningProcesses"


@dataclass
class GpuUseState:
    """Per-GPU reading state: the last sample time stamp seen (µs) and what NVML supports."""

    cursor: int = 0
    util_ok: bool = True
    procs_ok: bool = True


def read_samples(nv: Any, handle: Any, since: int, err: type[BaseException]) -> list[Any] | None:
    """Samples newer than ``since`` (µs); [] when there is none; None when unsupported."""
    try:
        return list(nv.nvmlDeviceGetProcessUtilization(handle, since))
    except AttributeError:
        return None
    except err as e:
        return [] if getattr(e, "value", None) == NVML_ERROR_NOT_FOUND else None


def read_holders(nv: Any, handle: Any, err: type[BaseException]) -> set[int] | None:
    """Pids holding a compute context on the GPU, or None when NVML cannot list them."""
    try:
        return {int(p.pid) for p in nv.nvmlDeviceGetComputeRunningProcesses(handle)}
    except (AttributeError, err):
        return None


def start(nv: Any, handle: Any, err: type[BaseException]) -> GpuUseState:
    """Probe what the GPU supports and set the cursor past the samples already there."""
    st = GpuUseState()
    samples = read_samples(nv, handle, 0, err)
    st.util_ok = samples is not None
    st.cursor = max((int(s.timeStamp) for s in samples or []), default=0)
    st.procs_ok = read_holders(nv, handle, err) is not None
    return st


def update(
    st: GpuUseState,
    nv: Any,
    handle: Any,
    err: type[BaseException],
    domain: str,
    ours: set[int],
    visible: Callable[[int], bool],
    use: dict[str, float],
) -> None:
    """Add the samples since the last read to ``use`` and record the holder state now."""
    if st.util_ok:
        samples = read_samples(nv, handle, st.cursor, err) or []
        fresh = [s for s in samples if int(s.timeStamp) > st.cursor]
        mine = sum(float(s.smUtil) for s in fresh if int(s.pid) in ours)
        every = sum(float(s.smUtil) for s in fresh)
        use[f"{domain}.ours"] = use.get(f"{domain}.ours", 0.0) + mine
        use[f"{domain}.all"] = use.get(f"{domain}.all", 0.0) + every
        use[f"{domain}.samples"] = use.get(f"{domain}.samples", 0.0) + len(fresh)
        st.cursor = max([st.cursor, *(int(s.timeStamp) for s in fresh)])
    holders = read_holders(nv, handle, err) if st.procs_ok else None
    if holders is None:
        use[f"{domain}.unknown"] = 1.0
        use[f"{domain}.held"] = use[f"{domain}.others"] = 0.0
        return
    others = holders - ours
    use[f"{domain}.held"] = float(bool(holders & ours))
    use[f"{domain}.others"] = float(any(visible(p) for p in others))
    use[f"{domain}.unknown"] = float(any(not visible(p) for p in others))


def _flag(use: dict[str, float], key: str) -> bool:
    return use.get(key, 0.0) > 0.0


def window_share(domain: str, begin: Snapshot, end: Snapshot) -> tuple[Share, list[str]]:
    """The tree's share of GPU ``domain`` over a window, and its flags."""
    b, e = begin.use, end.use
    mine = e.get(f"{domain}.ours", 0.0) - b.get(f"{domain}.ours", 0.0)
    every = e.get(f"{domain}.all", 0.0) - b.get(f"{domain}.all", 0.0)
    unknown = _flag(b, f"{domain}.unknown") or _flag(e, f"{domain}.unknown")
    if every > 0.0 and (mine > 0.0 or not unknown):
        return Share("gpu-use", min(1.0, mine / every), mine, every, UTIL_SOURCE), []
    held = _flag(b, f"{domain}.held") or _flag(e, f"{domain}.held")
    others = _flag(b, f"{domain}.others") or _flag(e, f"{domain}.others")
    if not unknown and not others and held:
        return Share("gpu-context", 1.0, 1.0, 1.0, CONTEXT_SOURCE + ": sole holder"), []
    if not unknown and not held:
        return Share("gpu-context", 0.0, 0.0, 1.0, CONTEXT_SOURCE + ": no context"), []
    why = "holders not visible here" if unknown else "shared with other processes"
    share = Share("none", None, mine, every, f"{CONTEXT_SOURCE}: {why}")
    return share, [f"gpu-attribution-undefined:{domain}"]


def shares(
    domains: Iterable[str], begin: Snapshot, end: Snapshot
) -> tuple[dict[str, Share], list[str]]:
    """``window_share`` for several GPU domains: ({domain: Share}, flags)."""
    out: dict[str, Share] = {}
    flags: list[str] = []
    for d in domains:
        out[d], f = window_share(d, begin, end)
        flags += f
    return out, flags
