"""Update compression codecs for federated learning (pure numpy).

A client encodes a model update (``delta = new - global``, a dict ``name -> float32 ndarray`` in
model order) into a *payload*: a flat ``dict[str, np.ndarray]`` with keys ``f"{tensor}.{part}"``
that the caller stores in a Flower ``ArrayRecord`` (Flower keeps numpy dtypes such as float16,
int8 and uint16).  The server decodes the payload back to float32 arrays of the global model's
shapes and aggregates them.  Every payload array is 1-D; its dtype and length are fixed by the
codec and the template, see :func:`payload_layout` and ``docs/compression.md``.

Codecs (``CodecSpec.label()`` forms):

* ``none``          -- float32 copy (exact).
* ``fp16``          -- IEEE half precision, saturating at +-65504 (2x smaller).
* ``int8``          -- affine 8-bit, one (scale, zero) pair per tensor (~4x smaller).
* ``int8:channel``  -- affine 8-bit, one pair per output channel (axis 0) of tensors with ndim >= 2.
* ``topk:<f>``      -- DGC-style top-k sparsification (Lin et al., ICLR 2018) with error feedback;
  keeps ``max(1, ceil(f * n))`` entries per tensor, indices uint16/int32, values float16 scaled by a
  float32 per-tensor scale (~``1/f`` smaller with uint16 indices).
* ``stc:<f>``       -- sparse ternary compression (Sattler et al., IEEE TNNLS 2019) with error
  feedback: the same ``k`` entries as top-k, but every kept value is ``+-mu`` (one float32 ``mu``
  = mean |kept| per tensor, one sign bit per entry) and the positions are Golomb-Rice coded
  (~``log2(1/f) + 2`` bits per entry instead of 16-64), so a given byte budget keeps ~4x more
  entries than ``topk``.  Its layout is a fixed worst-case size that follows from ``n`` and ``k``.
* ``stcb:<b>``      -- STC with a layer-aware byte budget: the payload is at most ``b`` times the
  float32 size (``stcb:0.02`` = 50x), and the budget is shared out by a fixed rule on tensor
  sizes (smallest tensors first, each a share ``~ sqrt(n)`` of what is left), so small tensors
  (biases, output layers) keep a larger fraction of their entries than big ones.
  Same wire format and decoder as ``stc``; only the per-tensor ``k`` differs.
* ``qsgd:<s>``      -- QSGD stochastic quantisation (Alistarh et al., NeurIPS 2017) with max-norm
  scaling and ``s`` levels; unbiased; levels bit-packed (2 bits for s=1, 4 bits for s<=7,
  else int8).

On Flower every ``Array`` carries ~180 bytes of metadata; :func:`pack_payload` /
:func:`unpack_payload` optionally ship a whole payload as a single uint8 array instead.

The decoder treats every payload as hostile: it checks the key set, dtypes, shapes, lengths, index
ranges, ordering, finiteness and scale signs before it allocates any output, never allocates more
than O(template size), and raises only :class:`PayloadError` for anything wrong with the payload.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

__all__ = [
    "CODEC_NAMES",
    "MAX_QSGD_LEVELS",
    "CodecSpec",
    "PayloadError",
    "decode",
    "decode_global",
    "encode",
    "encode_global",
    "expected_nbytes",
    "expected_ratio",
    "pack_payload",
    "parse_codec",
    "payload_layout",
    "payload_nbytes",
    "rice_parameter",
    "stcb_budget",
    "stcb_counts",
    "topk_count",
    "unpack_payload",
    "uses_error_feedback",
]

CODEC_NAMES: tuple[str, ...] = ("none", "fp16", "int8", "topk", "stc", "stcb", "qsgd")
EF_CODECS: tuple[str, ...] = ("topk", "stc", "stcb")  # codecs that keep an error-feedback residual
STC_CODECS: tuple[str, ...] = ("stc", "stcb")  # same wire format; they differ in k per tensor
MAX_QSGD_LEVELS = 127  # signed levels must fit in int8
GLOBAL_CODECS: tuple[str, ...] = ("none", "fp16", "int8")

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)
_I8 = np.dtype(np.int8)
_U8 = np.dtype(np.uint8)
_U16 = np.dtype(np.uint16)
_I32 = np.dtype(np.int32)
_I64 = np.dtype(np.int64)
_FP16_MAX = float(np.finfo(np.float16).max)  # 65504
_F32_MAX = float(np.finfo(np.float32).max)
_DEFAULT_FRACTION = 0.01
_DEFAULT_LEVELS = 16
_CHUNK = 1 << 16  # entries per block when dequantising int8
_VALID_FORMS = (
    "none, fp16, int8, int8:channel, topk:<fraction in (0, 1]> (e.g. topk:0.01), "
    "stc:<fraction in (0, 1]> (e.g. stc:0.09), "
    "stcb:<payload bytes / float32 bytes in (0, 1]> (e.g. stcb:0.02 = 50x), "
    f"qsgd:<levels 1..{MAX_QSGD_LEVELS}> (e.g. qsgd:16)"
)


class PayloadError(ValueError):
    """Raised when a payload is malformed or hostile; str(err) is the reason."""


# --------------------------------------------------------------------------------------------
# Codec specification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodecSpec:
    """Which codec to use and its parameter.

    Parameters that the codec does not use must stay at their defaults (so that equal codecs
    compare equal and ``parse_codec(spec.label()) == spec``); otherwise ``ValueError``.
    """

    name: str  # "none" | "fp16" | "int8" | "topk" | "stc" | "stcb" | "qsgd"
    # topk/stc: fraction of entries kept per tensor; stcb: byte budget / float32 bytes; (0, 1]
    fraction: float = _DEFAULT_FRACTION
    levels: int = _DEFAULT_LEVELS  # qsgd: number of quantisation levels s, 1..127
    per_channel: bool = False  # int8: per-output-channel (axis 0) scale/zero-point

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or self.name not in CODEC_NAMES:
            raise ValueError(f"unknown codec name {self.name!r}; valid forms: {_VALID_FORMS}")
        frac = self.fraction
        if isinstance(frac, (bool, np.bool_)) or not isinstance(
            frac, (int, float, np.integer, np.floating)
        ):
            raise ValueError(f"fraction must be a real number, got {frac!r}")
        frac = float(frac)
        if not (math.isfinite(frac) and 0.0 < frac <= 1.0):
            raise ValueError(f"fraction must be in (0, 1], got {frac!r}")
        object.__setattr__(self, "fraction", frac)
        lev = self.levels
        if isinstance(lev, (bool, np.bool_)) or not isinstance(lev, (int, np.integer)):
            raise ValueError(f"levels must be an int, got {lev!r}")
        lev = int(lev)
        if not 1 <= lev <= MAX_QSGD_LEVELS:
            raise ValueError(f"levels must be in 1..{MAX_QSGD_LEVELS}, got {lev}")
        object.__setattr__(self, "levels", lev)
        if not isinstance(self.per_channel, (bool, np.bool_)):
            raise ValueError(f"per_channel must be a bool, got {self.per_channel!r}")
        object.__setattr__(self, "per_channel", bool(self.per_channel))
        if self.name not in EF_CODECS and frac != _DEFAULT_FRACTION:
            raise ValueError(f"fraction only applies to topk, stc and stcb, not {self.name}")
        if self.name != "qsgd" and lev != _DEFAULT_LEVELS:
            raise ValueError(f"levels only applies to qsgd, not {self.name}")
        if self.name != "int8" and self.per_channel:
            raise ValueError(f"per_channel only applies to int8, not {self.name}")

    def label(self) -> str:
        """Canonical text form; ``parse_codec(spec.label()) == spec``."""
        if self.name == "int8":
            return "int8:channel" if self.per_channel else "int8"
        if self.name in EF_CODECS:
            return f"{self.name}:{self.fraction!r}"
        if self.name == "qsgd":
            return f"qsgd:{self.levels}"
        return self.name


def parse_codec(text: str) -> CodecSpec:
    """Parse ``none | fp16 | int8 | int8:channel | topk:<f> | stc:<f> | stcb:<b> | qsgd:<s>``
    (case-insensitive).

    Also accepted: ``int8:tensor`` (= ``int8``), bare ``topk`` / ``stc`` / ``stcb`` (0.01) and bare
    ``qsgd`` (16 levels).  Raises ``ValueError`` naming the problem and the valid forms.
    """
    if not isinstance(text, str):
        raise ValueError(
            f"codec must be a string, got {type(text).__name__}; valid forms: {_VALID_FORMS}"
        )
    raw = text.strip().lower()
    name, sep, arg = raw.partition(":")
    name, arg = name.strip(), arg.strip()

    def bad(reason: str) -> ValueError:
        return ValueError(f"invalid codec {text!r}: {reason}; valid forms: {_VALID_FORMS}")

    if name in ("none", "fp16"):
        if sep:
            raise bad(f"{name} takes no parameter")
        return CodecSpec(name)
    if name == "int8":
        if not sep or arg == "tensor":
            return CodecSpec("int8")
        if arg == "channel":
            return CodecSpec("int8", per_channel=True)
        raise bad("int8 parameter must be 'channel' (or 'tensor')")
    if name in EF_CODECS:
        if not sep:
            return CodecSpec(name)
        try:
            frac = float(arg)
        except ValueError:
            raise bad(f"{name} fraction {arg!r} is not a number") from None
        if not (math.isfinite(frac) and 0.0 < frac <= 1.0):
            raise bad(f"{name} fraction must be in (0, 1], got {arg!r}")
        return CodecSpec(name, fraction=frac)
    if name == "qsgd":
        if not sep:
            return CodecSpec("qsgd")
        try:
            lev = int(arg)
        except ValueError:
            raise bad(f"qsgd levels {arg!r} is not an integer") from None
        if not 1 <= lev <= MAX_QSGD_LEVELS:
            raise bad(f"qsgd levels must be in 1..{MAX_QSGD_LEVELS}, got {lev}")
        return CodecSpec("qsgd", levels=lev)
    raise bad(f"unknown codec name {name!r}")


def uses_error_feedback(spec: CodecSpec) -> bool:
    """True when ``encode`` keeps a residual (error feedback): top-k, STC and STC-b.

    QSGD is unbiased and int8/fp16 errors are bounded, so they are sent without error feedback.
    """
    return _check_spec(spec).name in EF_CODECS


# --------------------------------------------------------------------------------------------
# Layout (the single source of truth for sizes and validation)
# --------------------------------------------------------------------------------------------


def topk_count(n: int, fraction: float) -> int:
    """Entries kept by top-k/STC for a tensor of ``n`` entries: ``min(n, max(1, ceil(f * n)))``.

    Computed in decimal on the shortest repr of ``fraction`` so that e.g. 0.07 * 100 gives 7,
    not 8.  An empty tensor keeps 0 entries; any non-empty tensor keeps at least 1.
    """
    if n <= 0:
        return 0
    k = math.ceil(Decimal(repr(float(fraction))) * n)
    return min(n, max(1, k))


def _topk_index_dtype(n: int) -> np.dtype:
    if n <= 1 << 16:
        return _U16
    if n <= 1 << 31:
        return _I32
    return _I64


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


def _stc_position_bits(n: int, k: int) -> tuple[int, int]:
    """(b, unary bits U) of the position stream; total bits = k * b + U (0 when k == n: dense)."""
    if k <= 0 or k >= n:
        return 0, 0
    b = rice_parameter(n, k)
    return b, k + ((n - k) >> b)


def _stc_nbytes(n: int, k: int) -> int:
    """Payload bytes of one STC tensor with ``k`` of ``n`` entries kept: mu + signs + positions."""
    b, u = _stc_position_bits(n, k)
    return 4 + -(-k // 8) + -(-(k * b + u) // 8)


def _stc_max_count(n: int, allowance: int) -> int:
    """Largest sparse ``k`` in ``[1, n - 1]`` with ``_stc_nbytes(n, k) <= allowance`` (1 if
    none fits), or ``n`` (dense ternary) when both ``k = n - 1`` and ``k = n`` fit.

    Dense ternary (1 bit per entry, no positions) is often *cheaper* than a sparse code keeping
    20% or more of the entries, but sending every entry as ``+-mu`` is a much cruder quantiser
    (small entries get the magnitude of the large ones); on the MLP, allowing it as soon as it
    fits cost ~1.6 more accuracy points than this rule (see docs/compression.md).  The size is
    non-decreasing in ``k`` on ``[1, n - 1]`` (for a fixed Rice parameter one more entry adds
    ``b + 1`` bits and removes at most one unary bit; the minimum over ``b`` of non-decreasing
    functions is non-decreasing), so a binary search finds the largest fitting ``k``."""
    if n == 1 or (_stc_nbytes(n, n - 1) <= allowance and _stc_nbytes(n, n) <= allowance):
        return n
    lo, hi = 1, n - 1  # invariant: the answer is lo, or the largest fitting k in (lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _stc_nbytes(n, mid) <= allowance:
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
        _stc_nbytes(n, k) for n, k in zip(sizes, counts, strict=True)
    )
    order = sorted((i for i, n in enumerate(sizes) if n > 0), key=lambda i: (sizes[i], i))
    weights = {i: math.isqrt(sizes[i] << 32) for i in order}
    total_w = sum(weights.values())
    for i in order:
        n, w = sizes[i], weights[i]
        share = spare * w // total_w if spare > 0 else 0
        base = _stc_nbytes(n, 1)
        k = _stc_max_count(n, base + share)
        spare -= _stc_nbytes(n, k) - base
        total_w -= w
        counts[i] = k
    return tuple(counts)


def _stc_counts(spec: CodecSpec, template: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """Entries kept per tensor by ``stc`` (``topk_count``) or ``stcb`` (:func:`stcb_counts`)."""
    sizes = {name: math.prod(shape) for name, shape in template.items()}
    if spec.name == "stc":
        return {name: topk_count(n, spec.fraction) for name, n in sizes.items()}
    return dict(zip(sizes, stcb_counts(tuple(sizes.values()), spec.fraction), strict=True))


def _qsgd_bits(levels: int) -> int:
    """Bits per signed level: 2 for s = 1 ({-1,0,1}), 4 for s <= 7, else 8 (plain int8)."""
    if levels == 1:
        return 2
    if levels <= 7:
        return 4
    return 8


def _check_spec(spec: CodecSpec) -> CodecSpec:
    if not isinstance(spec, CodecSpec):
        raise TypeError(f"spec must be a CodecSpec, got {type(spec).__name__}")
    return spec


def _normalize_template(template: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Trusted input from the server's own model; bad templates are a caller bug (ValueError)."""
    if not isinstance(template, Mapping):
        raise ValueError(f"template must be a mapping name -> shape, got {type(template).__name__}")
    out: dict[str, tuple[int, ...]] = {}
    for name, shape in template.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"template names must be non-empty strings, got {name!r}")
        if hasattr(shape, "shape") and not isinstance(shape, tuple):
            shape = shape.shape  # accept arrays as their own template
        try:
            dims = tuple(int(d) for d in shape)
        except TypeError:
            raise ValueError(f"template shape for {name!r} is not a sequence: {shape!r}") from None
        if any(d < 0 for d in dims):
            raise ValueError(f"template shape for {name!r} has a negative dimension: {dims}")
        out[name] = dims
    return out


def _tensor_layout(
    spec: CodecSpec, name: str, shape: tuple[int, ...], k: int | None = None
) -> dict[str, tuple]:
    """Layout of one tensor; ``k`` is the kept-entry count for the STC family."""
    n = math.prod(shape)
    if spec.name == "none":
        return {f"{name}.f32": (_F32, n)}
    if spec.name == "fp16":
        return {f"{name}.f16": (_F16, n)}
    if spec.name == "int8":
        c = shape[0] if (spec.per_channel and len(shape) >= 2) else 1
        return {f"{name}.q": (_I8, n), f"{name}.scale": (_F32, c), f"{name}.zero": (_F32, c)}
    if spec.name == "topk":
        k = topk_count(n, spec.fraction)
        return {
            f"{name}.idx": (_topk_index_dtype(n), k),
            f"{name}.val": (_F16, k),
            f"{name}.scale": (_F32, 1),
        }
    if spec.name in STC_CODECS:
        b, u = _stc_position_bits(n, k)
        return {
            f"{name}.mu": (_F32, 1),
            f"{name}.sign": (_U8, -(-k // 8)),
            f"{name}.pos": (_U8, -(-(k * b + u) // 8)),
        }
    # qsgd
    bits = _qsgd_bits(spec.levels)
    lvl = (_I8, n) if bits == 8 else (_U8, -(-n * bits // 8))
    return {f"{name}.norm": (_F32, 1), f"{name}.lvl": lvl}


def payload_layout(
    spec: CodecSpec, template: Mapping[str, tuple[int, ...]]
) -> dict[str, tuple[np.dtype, int]]:
    """Exact wire layout: ``key -> (dtype, length)`` of every (1-D) payload array, model order."""
    spec = _check_spec(spec)
    tmpl = _normalize_template(template)
    counts = _stc_counts(spec, tmpl) if spec.name in STC_CODECS else {}
    out: dict[str, tuple[np.dtype, int]] = {}
    for name, shape in tmpl.items():
        out.update(_tensor_layout(spec, name, shape, counts.get(name)))
    return out


def expected_nbytes(spec: CodecSpec, template: Mapping[str, tuple[int, ...]]) -> int:
    """Raw array bytes that ``encode`` produces for this template (headers included)."""
    return sum(dt.itemsize * length for dt, length in payload_layout(spec, template).values())


def expected_ratio(spec: CodecSpec, template: Mapping[str, tuple[int, ...]]) -> float:
    """Size promise: float32 bytes of the template / payload bytes (1.0 for an empty template)."""
    raw = 4 * sum(math.prod(s) for s in _normalize_template(template).values())
    nbytes = expected_nbytes(spec, template)
    return raw / nbytes if nbytes else 1.0


def payload_nbytes(payload: Mapping[str, np.ndarray]) -> int:
    """Raw array bytes of a payload (what the codec promises; excludes keys/.npy headers)."""
    return int(sum(np.asarray(a).nbytes for a in payload.values()))


# --------------------------------------------------------------------------------------------
# Encoding (client side; inputs are trusted but checked)
# --------------------------------------------------------------------------------------------


def _as_float32_dict(arrays: Mapping[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    if not isinstance(arrays, Mapping):
        raise ValueError(f"{what} must be a mapping name -> ndarray, got {type(arrays).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what} names must be non-empty strings, got {name!r}")
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"{what} tensor {name!r} has non-real dtype {arr.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):
            arr32 = arr.astype(np.float32)
        if not np.isfinite(arr32).all():
            raise ValueError(f"{what} tensor {name!r} contains NaN/inf (or overflows float32)")
        out[name] = arr32
    return out


def _int8_encode(x: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine int8: x ~= zero + scale * (q + 128); scale rounded *up* to float32."""
    x2 = x.reshape(channels, -1).astype(np.float64) if channels else x.reshape(0, 0)
    if x2.shape[1] == 0:
        zeros = np.zeros(channels, dtype=np.float32)
        return np.zeros(x.size, dtype=np.int8), zeros, zeros.copy()
    lo = x2.min(axis=1)
    hi = x2.max(axis=1)
    s64 = (hi - lo) / 255.0
    scale = s64.astype(np.float32)
    low = scale.astype(np.float64) < s64
    scale[low] = np.nextafter(scale[low], np.float32(np.inf))  # 255 * scale >= hi - lo
    zero = lo.astype(np.float32)  # exact: lo is a float32 value
    safe = np.where(scale > 0, scale, 1.0).astype(np.float64)
    k = np.rint((x2 - zero.astype(np.float64)[:, None]) / safe[:, None])
    k = np.clip(k, 0, 255)
    k[scale == 0] = 0
    q = (k - 128).astype(np.int8).reshape(-1)
    return q, scale, zero


def _topk_select(x: np.ndarray, k: int) -> np.ndarray:
    """Indices (int64, strictly increasing) of the ``k`` entries of ``x`` with the largest |x|."""
    n = x.size
    if k == n:
        return np.arange(n, dtype=np.int64)
    idx = np.argpartition(np.abs(x), n - k)[n - k :].astype(np.int64)
    idx.sort()
    return idx


def _topk_encode(x: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = x.size
    k = topk_count(n, fraction)
    idx = _topk_select(x, k)
    kept = x[idx].astype(np.float64)
    m = float(np.max(np.abs(kept))) if k else 0.0
    if m > 0:
        val = (kept / m).astype(np.float16)  # |val| <= 1
    else:
        val = np.zeros(k, dtype=np.float16)
    return idx.astype(_topk_index_dtype(n)), val, np.array([m], dtype=np.float32)


def _stc_encode(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """STC: top-k entries -> sign bits and one magnitude ``mu = mean |kept|``; positions as a
    Golomb-Rice code (remainder bits of all gaps, then the unary quotients), little-endian bits,
    zero-padded to the layout's fixed length."""
    n = x.size
    idx = _topk_select(x, k) if k else np.zeros(0, dtype=np.int64)
    kept = x[idx]
    mu = float(np.mean(np.abs(kept.astype(np.float64)))) if k else 0.0
    sign = np.packbits(kept < 0, bitorder="little")
    b, u = _stc_position_bits(n, k)
    if k == 0 or k == n:  # dense (or empty): positions are implicit
        return np.array([mu], dtype=np.float32), sign, np.zeros(0, dtype=np.uint8)
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
    return np.array([mu], dtype=np.float32), sign, np.packbits(bits, bitorder="little")


def _pack(levels: np.ndarray, bits: int) -> np.ndarray:
    """Pack signed levels into uint8, little-end first, offset 2**(bits-1); pad with level 0."""
    per = 8 // bits
    offset = 1 << (bits - 1)
    n = levels.size
    padded = np.full(-(-n // per) * per, offset, dtype=np.uint8)
    padded[:n] = (levels.astype(np.int16) + offset).astype(np.uint8)
    groups = padded.reshape(-1, per)
    out = np.zeros(groups.shape[0], dtype=np.uint8)
    for j in range(per):
        out |= groups[:, j] << np.uint8(bits * j)
    return out


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`_pack` without the offset removed: uint8 values, length len*per."""
    per = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    shifts = (np.arange(per, dtype=np.uint8) * np.uint8(bits))[None, :]
    return ((packed[:, None] >> shifts) & mask).reshape(-1)


def _qsgd_encode(
    x: np.ndarray, levels: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    n = x.size
    norm = float(np.max(np.abs(x))) if n else 0.0
    if norm > 0:
        r = np.abs(x.astype(np.float64)) / norm * levels  # in [0, s]
        low = np.floor(r)
        lvl = low + (rng.random(n) < (r - low))
        lvl = np.minimum(lvl, levels) * np.sign(x)
        signed = lvl.astype(np.int8)
    else:
        signed = np.zeros(n, dtype=np.int8)
    bits = _qsgd_bits(levels)
    packed = signed if bits == 8 else _pack(signed, bits)
    return np.array([norm], dtype=np.float32), packed


def _encode_tensor(
    name: str,
    x: np.ndarray,
    spec: CodecSpec,
    rng: np.random.Generator | None,
    k: int | None = None,
) -> dict[str, np.ndarray]:
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    if spec.name == "none":
        return {f"{name}.f32": flat.copy()}
    if spec.name == "fp16":
        return {f"{name}.f16": np.clip(flat, -_FP16_MAX, _FP16_MAX).astype(np.float16)}
    if spec.name == "int8":
        c = x.shape[0] if (spec.per_channel and x.ndim >= 2) else 1
        q, scale, zero = _int8_encode(flat, c)
        return {f"{name}.q": q, f"{name}.scale": scale, f"{name}.zero": zero}
    if spec.name == "topk":
        idx, val, scale = _topk_encode(flat, spec.fraction)
        return {f"{name}.idx": idx, f"{name}.val": val, f"{name}.scale": scale}
    if spec.name in STC_CODECS:
        mu, sign, pos = _stc_encode(flat, k)
        return {f"{name}.mu": mu, f"{name}.sign": sign, f"{name}.pos": pos}
    if rng is None:
        rng = np.random.default_rng()
    norm, lvl = _qsgd_encode(flat, spec.levels, rng)
    return {f"{name}.norm": norm, f"{name}.lvl": lvl}


def encode(
    update: Mapping[str, np.ndarray],
    spec: CodecSpec,
    residual: Mapping[str, np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Encode a model update into a flat payload ``{f"{tensor}.{part}": 1-D ndarray}``.

    Returns ``(payload, new_residual)``.  For codecs with error feedback (top-k, STC) the codec
    compresses ``corrected = update + residual`` (residual ``None`` = zeros) and returns
    ``new_residual = corrected - decode(payload)`` (float32, same names/shapes), so
    ``update + residual == decoded + new_residual`` up to float32 rounding.  Other codecs return
    ``None`` as residual and reject a non-``None`` residual (``ValueError``).  ``rng`` drives
    QSGD's stochastic rounding (default: a fresh ``np.random.default_rng()``).  Raises
    ``ValueError`` for non-finite or non-real input.
    """
    spec = _check_spec(spec)
    arrays = _as_float32_dict(update, "update")
    ef = uses_error_feedback(spec)
    if residual is not None and not ef:
        raise ValueError(f"codec {spec.label()} does not use error feedback; pass residual=None")
    corrected = arrays
    if ef and residual is not None:
        res = _as_float32_dict(residual, "residual")
        if list(res) != list(arrays):
            raise ValueError("residual must have the same tensor names (and order) as the update")
        corrected = {}
        for name, x in arrays.items():
            if res[name].shape != x.shape:
                raise ValueError(
                    f"residual {name!r} has shape {res[name].shape}, update has {x.shape}"
                )
            with np.errstate(over="ignore"):
                corrected[name] = x + res[name]
            if not np.isfinite(corrected[name]).all():
                raise ValueError(f"update + residual overflows float32 in {name!r}")
    counts = (
        _stc_counts(spec, {name: x.shape for name, x in corrected.items()})
        if spec.name in STC_CODECS
        else {}
    )
    payload: dict[str, np.ndarray] = {}
    for name, x in corrected.items():
        payload.update(_encode_tensor(name, x, spec, rng, counts.get(name)))
    if not ef:
        return payload, None
    new_residual = {}
    for name, x in corrected.items():
        dec = _decode_tensor(payload, spec, name, x.size, counts.get(name))
        new_residual[name] = (x.reshape(-1) - dec).reshape(x.shape)
    return payload, new_residual


# --------------------------------------------------------------------------------------------
# Decoding (server side; payloads are hostile)
# --------------------------------------------------------------------------------------------


def _topk_decode(idx: np.ndarray, val: np.ndarray, scale: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    out[idx] = val  # float16 -> float32 is exact
    out *= scale[0]  # |val| <= 1, so no overflow; dropped entries stay 0
    return out


def _stc_positions(pos: np.ndarray, n: int, k: int, key: str) -> np.ndarray:
    """Validate and decode STC's Golomb-Rice position stream into ``k`` strictly increasing
    int64 indices in ``[0, n)`` (for ``0 <= k < n``; ``k == n`` needs no positions).

    ``pos`` already has the layout's exact length.  Only the canonical form is accepted: ``k``
    remainders of ``b`` bits, then exactly ``k`` unary quotients, then nothing but zero bits.
    Gaps are >= 0, so the indices cannot repeat or decrease; the last one must be < n.  Working
    memory: one byte per bit of ``pos`` plus ~16 bytes per kept entry."""
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    b, u = _stc_position_bits(n, k)
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


def _stc_decode(mu: np.ndarray, sign: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    """``+-mu`` at ``idx`` (sign bit 1 = negative), 0 elsewhere; ``idx`` None means all n."""
    k = n if idx is None else idx.size
    m = np.float32(mu[0])
    neg = np.unpackbits(sign, count=k, bitorder="little").view(bool)
    if idx is None:
        return np.where(neg, -m, m).astype(np.float32, copy=False)
    out = np.zeros(n, dtype=np.float32)
    if k:
        out[idx] = np.where(neg, -m, m)
    return out


def _keys_text(keys: list) -> str:
    shown = sorted(repr(k) for k in keys)
    more = f" (+{len(shown) - 5} more)" if len(shown) > 5 else ""
    return "[" + ", ".join(shown[:5]) + "]" + more


def _check_structure(payload: Mapping, layout: dict[str, tuple[np.dtype, int]]) -> None:
    keys = list(payload.keys())
    key_set = set(keys)
    missing = [k for k in layout if k not in key_set]
    extra = [k for k in keys if not (isinstance(k, str) and k in layout)]
    if missing:
        raise PayloadError(f"payload is missing keys {_keys_text(missing)}")
    if extra:
        raise PayloadError(f"payload has unexpected keys {_keys_text(extra)}")
    for key, (dtype, length) in layout.items():
        arr = payload[key]
        if type(arr) is not np.ndarray:
            raise PayloadError(f"{key!r}: expected a numpy.ndarray, got {type(arr).__name__}")
        if arr.dtype != dtype:
            raise PayloadError(f"{key!r}: dtype {arr.dtype} where {dtype} is expected")
        if arr.ndim != 1:
            raise PayloadError(f"{key!r}: expected a 1-D array, got shape {arr.shape}")
        if arr.shape[0] != length:
            raise PayloadError(
                f"{key!r}: length {arr.shape[0]} where the template requires {length}"
            )


def _check_finite(key: str, arr: np.ndarray) -> None:
    if not np.isfinite(arr).all():
        raise PayloadError(f"{key!r}: contains NaN or inf")


def _check_scale(key: str, arr: np.ndarray) -> None:
    _check_finite(key, arr)
    if (arr < 0).any():
        raise PayloadError(f"{key!r}: negative scale")


def _check_values(payload: Mapping, spec: CodecSpec, template: dict[str, tuple[int, ...]]) -> None:
    counts = _stc_counts(spec, template) if spec.name in STC_CODECS else {}
    for name, shape in template.items():
        n = math.prod(shape)
        if spec.name == "none":
            _check_finite(f"{name}.f32", payload[f"{name}.f32"])
        elif spec.name == "fp16":
            _check_finite(f"{name}.f16", payload[f"{name}.f16"])
        elif spec.name == "int8":
            _check_scale(f"{name}.scale", payload[f"{name}.scale"])
            _check_finite(f"{name}.zero", payload[f"{name}.zero"])
        elif spec.name == "topk":
            _check_scale(f"{name}.scale", payload[f"{name}.scale"])
            val = payload[f"{name}.val"]
            _check_finite(f"{name}.val", val)
            if val.size and float(np.max(np.abs(val))) > 1.0:
                raise PayloadError(f"'{name}.val': |value| > 1 (values are scaled to [-1, 1])")
            idx = payload[f"{name}.idx"]
            if idx.size:
                lo, hi = int(idx.min()), int(idx.max())
                if lo < 0:
                    raise PayloadError(f"'{name}.idx': negative index {lo}")
                if hi >= n:
                    raise PayloadError(f"'{name}.idx': index {hi} out of range for {n} entries")
                if idx.size > 1 and not (np.diff(idx.astype(np.int64)) > 0).all():
                    raise PayloadError(
                        f"'{name}.idx': indices must be strictly increasing (no duplicates)"
                    )
        elif spec.name in STC_CODECS:
            _check_scale(f"{name}.mu", payload[f"{name}.mu"])
            k = counts[name]
            sign = payload[f"{name}.sign"]
            if k % 8 and sign.size and int(sign[-1]) >> (k % 8):
                raise PayloadError(f"'{name}.sign': non-zero padding bits after {k} signs")
            if 0 < k < n:  # otherwise the positions are implicit (and .pos is empty)
                _stc_positions(payload[f"{name}.pos"], n, k, f"{name}.pos")
        else:  # qsgd
            _check_scale(f"{name}.norm", payload[f"{name}.norm"])
            lvl = payload[f"{name}.lvl"]
            s = spec.levels
            bits = _qsgd_bits(s)
            codes, levels = _qsgd_codes(lvl, bits)
            if not (np.abs(levels) <= s)[codes[:n]].all():
                raise PayloadError(f"'{name}.lvl': level magnitude exceeds s={s}")
            if (levels[codes[n:]] != 0).any():
                raise PayloadError(f"'{name}.lvl': non-zero padding after {n} entries")


def _qsgd_codes(lvl: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned codes (uint8, one per entry incl. padding) and the signed level of each code."""
    if bits == 8:
        codes = lvl.view(np.uint8)
        levels = np.arange(256, dtype=np.float64)
        levels[128:] -= 256  # two's complement
    else:
        codes = _unpack(lvl, bits)
        levels = np.arange(1 << bits, dtype=np.float64) - (1 << (bits - 1))
    return codes, levels


def _decode_tensor(
    payload: Mapping, spec: CodecSpec, name: str, n: int, k: int | None = None
) -> np.ndarray:
    """Decode one (validated) tensor; ``k`` is the kept-entry count for the STC family."""
    if spec.name == "none":
        return payload[f"{name}.f32"].copy()
    if spec.name == "fp16":
        return payload[f"{name}.f16"].astype(np.float32)
    if spec.name == "int8":
        # value = zero + scale * (q + 128), evaluated in float64 once per code via a 256-entry
        # table per channel; the lookup keeps working memory at ~5 bytes per entry.
        scale = payload[f"{name}.scale"].astype(np.float64)
        zero = payload[f"{name}.zero"].astype(np.float64)
        c = scale.size
        out = np.empty(n, dtype=np.float32)
        if n == 0:
            return out
        codes = (payload[f"{name}.q"].view(np.uint8) ^ np.uint8(0x80)).reshape(c, -1)  # q + 128
        rows = out.reshape(c, -1)
        steps = np.arange(256, dtype=np.float64)
        for ch in range(c):
            table = np.clip(zero[ch] + scale[ch] * steps, -_F32_MAX, _F32_MAX).astype(np.float32)
            for start in range(0, rows.shape[1], _CHUNK):  # bounded temporaries
                rows[ch, start : start + _CHUNK] = table[codes[ch, start : start + _CHUNK]]
        return out
    if spec.name == "topk":
        return _topk_decode(
            payload[f"{name}.idx"], payload[f"{name}.val"], payload[f"{name}.scale"], n
        )
    if spec.name in STC_CODECS:
        idx = None if k == n else _stc_positions(payload[f"{name}.pos"], n, k, f"{name}.pos")
        return _stc_decode(payload[f"{name}.mu"], payload[f"{name}.sign"], idx, n)
    s = spec.levels
    bits = _qsgd_bits(s)
    codes, levels = _qsgd_codes(payload[f"{name}.lvl"], bits)
    norm = float(payload[f"{name}.norm"][0])
    table = (levels * (norm / s)).astype(np.float32)  # level * norm / s, computed in float64
    return table[codes[:n]]


def decode(
    payload: Mapping[str, np.ndarray],
    spec: CodecSpec,
    template: Mapping[str, tuple[int, ...]],
) -> dict[str, np.ndarray]:
    """Validate and decode a payload into float32 arrays with exactly the template's names/shapes.

    ``template`` maps tensor name -> expected shape (from the server's global model; trusted, a
    bad template raises ``ValueError``).  Everything about the payload is checked before any
    output is allocated: exact key set, plain 1-D ``numpy.ndarray`` values, exact dtypes and
    lengths (which follow from the template, so oversize arrays are rejected up front), finite
    values, finite non-negative scales, index range/order, level range and padding.  Any
    problem raises :class:`PayloadError` (and nothing else) whose message is the reason.
    """
    spec = _check_spec(spec)
    tmpl = _normalize_template(template)
    layout = payload_layout(spec, tmpl)
    if not isinstance(payload, Mapping):
        raise PayloadError(
            f"payload must be a mapping key -> ndarray, got {type(payload).__name__}"
        )
    try:
        with np.errstate(all="ignore"):
            _check_structure(payload, layout)
            _check_values(payload, spec, tmpl)
            counts = _stc_counts(spec, tmpl) if spec.name in STC_CODECS else {}
            out = {}
            for name, shape in tmpl.items():
                n = math.prod(shape)
                out[name] = _decode_tensor(payload, spec, name, n, counts.get(name)).reshape(shape)
    except PayloadError:
        raise
    except Exception as exc:  # defence in depth: a hostile payload must only yield PayloadError
        raise PayloadError(f"malformed payload ({type(exc).__name__}: {exc})") from exc
    return out


# --------------------------------------------------------------------------------------------
# Optional single-blob packing (cuts Flower's per-array overhead)
# --------------------------------------------------------------------------------------------


def pack_payload(
    payload: Mapping[str, np.ndarray],
    spec: CodecSpec,
    template: Mapping[str, tuple[int, ...]],
) -> np.ndarray:
    """Concatenate a payload's arrays (layout order, little-endian) into one uint8 array.

    Flower stores every ``Array`` with its own metadata (~180 bytes of protobuf per array), which
    dominates top-k payloads of small models; one blob per update pays that once.  The blob holds
    exactly :func:`expected_nbytes` bytes; :func:`unpack_payload` is the inverse.
    """
    layout = payload_layout(spec, template)
    _check_structure(payload, layout)
    parts = [
        payload[k].astype(dt.newbyteorder("<"), copy=False).view(np.uint8)
        for k, (dt, _) in layout.items()
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)


def unpack_payload(
    blob: np.ndarray,
    spec: CodecSpec,
    template: Mapping[str, tuple[int, ...]],
) -> dict[str, np.ndarray]:
    """Split a :func:`pack_payload` blob back into a payload dict (then call :func:`decode`).

    The blob must be a 1-D uint8 ndarray of exactly ``expected_nbytes(spec, template)`` bytes,
    otherwise :class:`PayloadError`; the arrays returned are read-only views (no copy).
    """
    layout = payload_layout(spec, template)
    if type(blob) is not np.ndarray:
        raise PayloadError(f"blob: expected a numpy.ndarray, got {type(blob).__name__}")
    if blob.dtype != _U8 or blob.ndim != 1:
        raise PayloadError(f"blob: expected a 1-D uint8 array, got {blob.dtype} {blob.shape}")
    total = sum(dt.itemsize * n for dt, n in layout.values())
    if blob.shape[0] != total:
        raise PayloadError(f"blob: {blob.shape[0]} bytes where the template requires {total}")
    buf = np.ascontiguousarray(blob)
    out: dict[str, np.ndarray] = {}
    offset = 0
    for key, (dt, n) in layout.items():
        arr = np.frombuffer(buf, dtype=dt.newbyteorder("<"), count=n, offset=offset)
        out[key] = arr if arr.dtype == dt else arr.astype(dt)
        offset += dt.itemsize * n
    return out


# --------------------------------------------------------------------------------------------
# Downlink (global model) codec
# --------------------------------------------------------------------------------------------


def _check_global_spec(spec: CodecSpec) -> CodecSpec:
    spec = _check_spec(spec)
    if spec.name not in GLOBAL_CODECS:
        raise ValueError(
            f"downlink codec must be one of {', '.join(GLOBAL_CODECS)} (got {spec.label()}); "
            "top-k, STC and QSGD are uplink-only (they need error feedback or averaging)"
        )
    return spec


def encode_global(arrays: Mapping[str, np.ndarray], spec: CodecSpec) -> dict[str, np.ndarray]:
    """Encode the global model for the downlink (``none``, ``fp16``, ``int8``, ``int8:channel``).

    The server should adopt ``decode_global(payload, ...)`` as the reference model that clients
    compute their deltas against, so that both sides agree on the base of ``delta``.
    """
    spec = _check_global_spec(spec)
    payload, _ = encode(arrays, spec)
    return payload


def decode_global(
    payload: Mapping[str, np.ndarray],
    spec: CodecSpec,
    template: Mapping[str, tuple[int, ...]],
) -> dict[str, np.ndarray]:
    """Client-side decode of :func:`encode_global` (same validation as :func:`decode`)."""
    return decode(payload, _check_global_spec(spec), template)
