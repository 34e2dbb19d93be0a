"""Attribution of a window's energy to the process tree: one share per part of the total.

A window's total is split into *parts*, each with the share that applies to it:

  * ``cpu``: everything a CPU-side meter measures (RAPL packages + DRAM or psys, a CPU or board
    model, a battery, a Jetson input rail less its GPU rails), split by CPU time — the tree's
    CPU time ÷ the machine's busy CPU time (PowerJoular's rule: idle power goes with busy time);
  * ``gpu[i]``: an NVML GPU, split by GPU use (``gpu_use.py``);
  * a Jetson GPU rail: by the board's GPU share, which no Jetson source gives per process, so
    it is unattributed (``jetson.py`` explains the policy).

A share that is undefined (nothing observed) leaves its part *unattributed*: the part's joules
are reported beside the process figure, never counted as a measured 0 J.
"""

from __future__ import annotations

from fedenergy.meters.records import Attributed, Share

COARSE_WINDOW_S = 0.1  # below this a 10 ms-tick machine clock cannot resolve a share

Part = tuple[str, float, str]  # (part name, joules, share key)


def cpu_share(
    proc_s: float, mach_s: float, source: str = "", *, coarse: bool = False, duration: float = 0.0
) -> tuple[Share, list[str]]:
    """The CPU-time share over a window from the two CPU-time deltas (s); and its flags.

    The machine's busy time includes the tree's, so a machine delta below the tree's (clocks of
    different resolution, a tick not yet counted) is raised to it. Nothing observed on either
    clock: undefined (``attribution-undefined``).
    """
    proc_s, mach_s = max(0.0, proc_s), max(0.0, mach_s)
    if proc_s <= 0.0 and mach_s <= 0.0:
        return Share("cpu-time", None, proc_s, mach_s, source), ["attribution-undefined"]
    mach_s = max(mach_s, proc_s)
    flags = ["coarse-cpu-clock"] if coarse and duration < COARSE_WINDOW_S else []
    return Share("cpu-time", min(1.0, proc_s / mach_s), proc_s, mach_s, source), flags


def combine(parts: list[Part], shares: dict[str, Share]) -> tuple[list[Attributed], float, float]:
    """Apply each part's share: (attribution records, process J, unattributed J)."""
    out: list[Attributed] = []
    process_j = unattributed_j = 0.0
    for name, joules, key in parts:
        share = shares.get(key)
        if share is None or share.value is None:
            out.append(Attributed(name, joules, key, None))
            unattributed_j += joules
        else:
            pj = joules * share.value
            out.append(Attributed(name, joules, key, pj))
            process_j += pj
    return out, process_j, unattributed_j
