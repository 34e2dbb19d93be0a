"""``stcb:<b>``: STC with a layer-aware byte budget.

The payload is at most ``b`` times the float32 size (``stcb:0.02`` = 50x), and the budget is
shared out by a fixed rule on tensor sizes (smallest tensors first, each a share ``~ sqrt(n)``
of what is left), so small tensors (biases, output layers) keep a larger fraction of their
entries than big ones.  Same wire format and decoder as ``stc`` (:class:`SparseTernary`); only
the per-tensor ``k`` differs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from decimal import Decimal

from fedenergy.codecs.checks import Template
from fedenergy.codecs.stc import SparseTernary, stc_nbytes


def _stc_max_count(n: int, allowance: int) -> int:
    """Largest sparse ``k`` in ``[1, n - 1]`` with ``stc_nbytes(n, k) <= allowance`` (1 if
    none fits), or ``n`` (dense ternary) when both ``k = n - 1`` and ``k = n`` fit.

    Dense ternary (1 bit per entry, no positions) is often *cheaper* than a sparse code keeping
    20% or more of the entries, but sending every entry as ``+-mu`` is a much cruder quantiser
    (small entries get the magnitude of the large ones); on the MLP, allowing it as soon as it
    fits cost ~1.6 more accuracy points than this rule (see docs/compression.md).  The size is
    non-decreasing in ``k`` on ``[1, n - 1]`` (for a fixed Rice parameter one more entry adds
    ``b + 1`` bits and removes at most one unary bit; the minimum over ``b`` of non-decreasing
    functions is non-decreasing), so a binary search finds the largest fitting ``k``."""
    if n == 1 or (stc_nbytes(n, n - 1) <= allowance and stc_nbytes(n, n) <= allowance):
        return n
    lo, hi = 1, n - 1  # invariant: the answer is lo, or the largest fitting k in (lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if stc_nbytes(n, mid) <= allowance:
            lo = mid
        else:
            hi = mid - 1
    return lo


def stcb_budget(n_total: int, fraction: float) -> int:
    """Byte budget of ``stcb:<fraction>`` for ``n_total`` parameters: ``floor(f * 4 * n)``
    (computed in decimal on the shortest repr of ``f``, like :func:`topk_count`)."""
    return math.floor(Decimal(repr(float(fraction))) * 4 * n_total)


@functools.lru_cache(maxsize=256)
def stcb_counts(sizes: tuple[int, ...], fraction: float) -> tuple[int, ...]:
    """Entries kept per tensor by ``stcb:<fraction>`` for tensors of ``sizes`` entries.

    A fixed, name-free rule on the sizes alone (integer arithmetic only, so client and server
    always agree):

    1. The budget is ``B = stcb_budget(sum(sizes), fraction)`` bytes.  Every non-empty tensor
       starts at ``k = 1`` (so no tensor is starved: error feedback alone never sends a tensor
       with ``k = 0``), empty tensors at ``k = 0``; the spare is ``B`` minus those bytes.
    2. Non-empty tensors are visited from the smallest to the largest (ties: model order).  Each
       gets the share ``spare * w / W`` of what is still spare, with ``w = isqrt(n << 32)``
       (``sqrt(n)`` in 16.16 fixed point) and ``W`` the sum of ``w`` over the tensors not yet
       visited, and keeps the largest ``k`` whose bytes fit its ``k = 1`` bytes plus that share
       (see :func:`_stc_max_count`: dense ternary only when ``k = n - 1`` fits as well).
       Whatever it does not use stays spare for the larger tensors; the largest tensor gets
       all that is left.

    So small tensors (biases, output layers) keep a larger fraction of their entries than big
    ones; the payload never exceeds ``B`` unless ``B`` is below the ``k = 1`` minimum (about
    6-9 bytes per tensor), in which case every tensor keeps one entry.
    """
    counts = [min(n, 1) for n in sizes]
    spare = stcb_budget(sum(sizes), fraction) - sum(
        stc_nbytes(n, k) for n, k in zip(sizes, counts, strict=True)
    )
    order = sorted((i for i, n in enumerate(sizes) if n > 0), key=lambda i: (sizes[i], i))
    weights = {i: math.isqrt(sizes[i] << 32) for i in order}
    total_w = sum(weights.values())
    for i in order:
        n, w = sizes[i], weights[i]
        share = spare * w // total_w if spare > 0 else 0
        base = stc_nbytes(n, 1)
        k = _stc_max_count(n, base + share)
        spare -= stc_nbytes(n, k) - base
        total_w -= w
        counts[i] = k
    return tuple(counts)


@dataclass(frozen=True)
class StcB(SparseTernary):
    """``stcb:<b>``: payload bytes <= ``b`` x float32 bytes, shared out by :func:`stcb_counts`
    (``stcb`` = 0.01)."""

    name = "stcb"
    forms = "stcb:<payload bytes / float32 bytes in (0, 1]> (e.g. stcb:0.02 = 50x)"

    def plan(self, template: Template) -> dict[str, int]:
        sizes = {name: math.prod(shape) for name, shape in template.items()}
        return dict(zip(sizes, stcb_counts(tuple(sizes.values()), self.fraction), strict=True))
