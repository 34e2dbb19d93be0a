"""Input checks shared by every codec: templates and updates (trusted, ``ValueError``) and the
structure and values of payloads (hostile, :class:`PayloadError`)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Template = dict[str, tuple[int, ...]]  # tensor name -> shape, model order
Layout = dict[str, tuple[np.dtype, int]]  # payload key -> (dtype, length) of a 1-D array
Payload = dict[str, np.ndarray]  # payload key (f"{tensor}.{part}") -> 1-D array


class PayloadError(ValueError):
    """Raised when a payload is malformed or hostile; str(err) is the reason."""


def normalize_template(template: Mapping[str, tuple[int, ...]]) -> Template:
    """Trusted input from the server's own model; bad templates are a caller bug (ValueError)."""
    if not isinstance(template, Mapping):
        raise ValueError(f"template must be a mapping name -> shape, got {type(template).__name__}")
    out: Template = {}
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


def as_float32_dict(arrays: Mapping[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """``arrays`` as float32 copies, in order; ``ValueError`` for non-real, NaN/inf or values
    that overflow float32 (``what`` names the input in the message)."""
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


def _keys_text(keys: list) -> str:
    shown = sorted(repr(k) for k in keys)
    more = f" (+{len(shown) - 5} more)" if len(shown) > 5 else ""
    return "[" + ", ".join(shown[:5]) + "]" + more


def check_structure(payload: Mapping, layout: Layout) -> None:
    """The payload has exactly the layout's keys, each a plain 1-D ``numpy.ndarray`` of the
    layout's dtype and length; checked for every key before any value is read."""
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


def check_finite(key: str, arr: np.ndarray) -> None:
    """No NaN or inf in ``arr``."""
    if not np.isfinite(arr).all():
        raise PayloadError(f"{key!r}: contains NaN or inf")


def check_scale(key: str, arr: np.ndarray) -> None:
    """Scales, norms and magnitudes: finite and >= 0."""
    check_finite(key, arr)
    if (arr < 0).any():
        raise PayloadError(f"{key!r}: negative scale")
