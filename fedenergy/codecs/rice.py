"""Golomb-Rice code of STC's positions: ``k`` strictly increasing indices out of ``n``, in a
stream whose length follows from ``n`` and ``k`` alone (encoder and validating decoder)."""

from __future__ import annotations

import numpy as np

from fedenergy.codecs.checks import PayloadError


def rice_parameter(n: int, k: int) -> int:
    """Golomb-Rice parameter ``b`` of STC's position code for ``k`` of ``n`` entries.

    ``k`` strictly increasing indices are coded as gaps ``g_i >= 0`` (``g_0 = idx_0``,
    ``g_i = idx_i - idx_(i-1) - 1``), each as ``g >> b`` in unary plus ``b`` low bits.  Since
    ``sum(g) <= n - k``, the code never exceeds ``k * (b + 1) + ((n - k) >> b)`` bits; ``b`` is
    the smallest value minimising that bound, so the bound (the layout's size) follows from ``n``
    and ``k`` alone and is within ~10% of ``log2 C(n, k)`` for sparse tensors.
    """
    if k <= 0 or k >= n:
        return 0
    best_b, best = 0, None
    for b in range(max(1, (n - k).bit_length()) + 1):
        cost = k * (b + 1) + ((n - k) >> b)
        if best is None or cost < best:
            best_b, best = b, cost
    return best_b


def position_bits(n: int, k: int) -> tuple[int, int]:
    """(b, unary bits U) of the position stream; total bits = k * b + U (0 when k == n: dense)."""
    if k <= 0 or k >= n:
        return 0, 0
    b = rice_parameter(n, k)
    return b, k + ((n - k) >> b)


def position_nbytes(n: int, k: int) -> int:
    """Bytes of the position stream (the bound ``k * b + U`` bits, rounded up)."""
    b, u = position_bits(n, k)
    return -(-(k * b + u) // 8)


def encode_positions(idx: np.ndarray, n: int) -> np.ndarray:
    """Code ``0 < k < n`` strictly increasing int64 indices: the remainder bits of all gaps, then
    the unary quotients, little-endian bits, zero-padded to :func:`position_nbytes`."""
    k = idx.size
    b, u = position_bits(n, k)
    gaps = np.diff(idx, prepend=-1) - 1  # >= 0, sum <= n - k
    quot = gaps >> b
    bits = np.zeros(k * b + u, dtype=np.uint8)
    if b:
        rem = gaps & ((1 << b) - 1)
        bits[: k * b] = ((rem[:, None] >> np.arange(b, dtype=np.int64)) & 1).reshape(-1)
    unary = bits[k * b :]
    stops = np.cumsum(quot + 1) - 1  # each quotient: `quot` ones, then a terminating zero
    unary[: stops[-1] + 1] = 1
    unary[stops] = 0
    return np.packbits(bits, bitorder="little")


def decode_positions(pos: np.ndarray, n: int, k: int, key: str) -> np.ndarray:
    """Validate and decode a position stream into ``k`` strictly increasing int64 indices in
    ``[0, n)`` (for ``0 <= k < n``; ``k == n`` needs no positions).

    ``pos`` already has the layout's exact length.  Only the canonical form is accepted: ``k``
    remainders of ``b`` bits, then exactly ``k`` unary quotients, then nothing but zero bits.
    Gaps are >= 0, so the indices cannot repeat or decrease; the last one must be < n.  Working
    memory: one byte per bit of ``pos`` plus ~16 bytes per kept entry."""
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    b, u = position_bits(n, k)
    bits = np.unpackbits(pos, bitorder="little")
    if bits[k * b + u :].any():
        raise PayloadError(f"{key!r}: non-zero padding bits after the position code")
    unary = bits[k * b : k * b + u]
    ones = int(np.count_nonzero(unary))
    if ones + k > u:
        raise PayloadError(f"{key!r}: truncated position code (fewer than {k} gaps)")
    if unary[ones + k - 1] or unary[ones + k :].any():  # a one after the k-th terminator
        raise PayloadError(f"{key!r}: more than {k} gaps in the position code")
    stops = np.flatnonzero(unary[: ones + k] == 0)  # exactly k terminating zeros
    gaps = np.diff(stops, prepend=-1)  # quotient + 1
    del stops
    gaps -= 1
    gaps <<= b
    for j in range(b):  # remainder bit j of entry i is bit i * b + j
        low = bits[j : k * b : b].astype(np.int64)
        low <<= j
        gaps |= low
        del low
    gaps += 1
    idx = np.cumsum(gaps, out=gaps)
    idx -= 1  # strictly increasing by construction
    if int(idx[-1]) >= n:
        raise PayloadError(f"{key!r}: index {int(idx[-1])} out of range for {n} entries")
    return idx
