"""The ``Codec`` interface: what every update codec declares and implements.

A codec is a frozen dataclass holding only its own parameters.  It declares its registry
``name``, the text ``forms`` it parses, whether it keeps an error-feedback residual and whether
it may encode the global model (downlink).  It implements the wire format tensor by tensor:
:meth:`Codec.tensor_layout`, :meth:`Codec.encode_tensor`, :meth:`Codec.check_tensor` and
:meth:`Codec.decode_tensor`.  This base class turns those into the whole-model operations
(:meth:`Codec.layout`, :meth:`Codec.encode` with error feedback, :meth:`Codec.decode` with the
hostile-payload guarantees), so every codec gets them the same way.  Normalisation
statistics (``running_mean``, ``running_var``, ``num_batches_tracked``) bypass the per-tensor
methods: every codec sends them as a float32 copy (:mod:`fedenergy.codecs.raw`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np

from fedenergy.codecs.checks import (
    Layout,
    Payload,
    PayloadError,
    Template,
    as_float32_dict,
    check_structure,
    normalize_template,
)
from fedenergy.codecs.raw import check_raw, decode_raw, encode_raw, raw_layout, travels_raw


class Codec(ABC):
    """An update codec: a payload layout that follows from the template, an encoder and a
    validating decoder.

    Class attributes a codec sets:

    * ``name`` -- its registry name, the text before ``:`` in its label (lower case).
    * ``forms`` -- the text forms it parses, for error messages (e.g. ``"topk:<fraction>"``).
    * ``error_feedback`` -- ``encode`` keeps a residual (``update + residual`` is compressed and
      what was not sent is the new residual).
    * ``downlink`` -- it may encode the global model sent to clients (no residual, no averaging).
    """

    name: ClassVar[str]
    forms: ClassVar[str]
    error_feedback: ClassVar[bool] = False
    downlink: ClassVar[bool] = False

    # ----------------------------------------------------------------------------------------
    # What a codec implements
    # ----------------------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def parse(cls, arg: str | None) -> Self:
        """The codec for the text after ``name:`` (stripped, lower case; ``None`` without a
        ``:``).  ``ValueError`` whose message is the reason for a bad parameter."""

    @abstractmethod
    def label(self) -> str:
        """Canonical text, ``name`` or ``name:<parameter>``; ``parse_codec(c.label()) == c``."""

    @abstractmethod
    def error_bound(self) -> str:
        """What the codec loses, per element, in words (``"exact"`` for a lossless codec)."""

    def plan(self, template: Template) -> Mapping[str, Any]:
        """Per-tensor values that follow from the whole template, passed to the per-tensor
        methods as ``plan`` (``None`` for a tensor not in the mapping).  Default: nothing;
        STC-b shares one byte budget across tensors here.  ``template`` holds only the
        tensors the codec encodes (not the raw normalisation statistics)."""
        return {}

    @abstractmethod
    def tensor_layout(self, name: str, shape: tuple[int, ...], plan: Any) -> Layout:
        """``key -> (dtype, length)`` of this tensor's payload arrays, keys ``f"{name}.{part}"``
        with part names free of dots."""

    @abstractmethod
    def encode_tensor(
        self,
        name: str,
        flat: np.ndarray,
        shape: tuple[int, ...],
        plan: Any,
        rng: np.random.Generator | None,
    ) -> Payload:
        """Encode one tensor (``flat``: its finite float32 entries, C order) into arrays that
        match :meth:`tensor_layout` exactly."""

    @abstractmethod
    def check_tensor(self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any) -> None:
        """Check the values of one tensor's arrays (keys, dtypes and lengths are already
        checked); :class:`PayloadError` with the reason for anything a decoder must refuse."""

    @abstractmethod
    def decode_tensor(
        self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any
    ) -> np.ndarray:
        """Decode one checked tensor into a flat float32 array of ``prod(shape)`` finite
        entries, with working memory of the order of the tensor's float32 size."""

    # ----------------------------------------------------------------------------------------
    # What every codec gets from the per-tensor methods
    # ----------------------------------------------------------------------------------------

    def layout(self, template: Mapping[str, tuple[int, ...]]) -> Layout:
        """Exact wire layout: ``key -> (dtype, length)`` of every (1-D) payload array, model
        order.  Both the size promise and the validator use it."""
        tmpl = normalize_template(template)
        plan = self._plan(tmpl)
        out: Layout = {}
        for name, shape in tmpl.items():
            if travels_raw(name):
                out.update(raw_layout(name, shape))
            else:
                out.update(self.tensor_layout(name, shape, plan.get(name)))
        return out

    def _plan(self, template: Template) -> Mapping[str, Any]:
        """:meth:`plan` of the tensors this codec encodes (raw statistics left out)."""
        return self.plan({n: s for n, s in template.items() if not travels_raw(n)})

    def expected_nbytes(self, template: Mapping[str, tuple[int, ...]]) -> int:
        """Raw array bytes that :meth:`encode` produces for this template (headers included)."""
        return sum(dt.itemsize * length for dt, length in self.layout(template).values())

    def expected_ratio(self, template: Mapping[str, tuple[int, ...]]) -> float:
        """Float32 bytes of the template / payload bytes (1.0 for an empty template)."""
        raw = 4 * sum(math.prod(s) for s in normalize_template(template).values())
        nbytes = self.expected_nbytes(template)
        return raw / nbytes if nbytes else 1.0

    def encode(
        self,
        update: Mapping[str, np.ndarray],
        residual: Mapping[str, np.ndarray] | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[Payload, dict[str, np.ndarray] | None]:
        """Encode a model update into a flat payload ``{f"{tensor}.{part}": 1-D ndarray}``.

        Returns ``(payload, new_residual)``.  With error feedback the codec compresses
        ``corrected = update + residual`` (residual ``None`` = zeros) and returns
        ``new_residual = corrected - decode(payload)`` (float32, same names/shapes), so
        ``update + residual == decoded + new_residual`` up to float32 rounding.  Without it the
        residual returned is ``None`` and a non-``None`` residual is a ``ValueError``.  ``rng``
        drives stochastic rounding (QSGD).  ``ValueError`` for non-finite or non-real input.
        Raw tensors (:func:`~fedenergy.codecs.raw.travels_raw`) are copied as they are, without
        the residual; their new residual is zero.
        """
        arrays = as_float32_dict(update, "update")
        ef = self.error_feedback
        if residual is not None and not ef:
            raise ValueError(
                f"codec {self.label()} does not use error feedback; pass residual=None"
            )
        corrected = arrays if residual is None else _add_residual(arrays, residual)
        plan = self._plan({name: x.shape for name, x in corrected.items()})
        payload: Payload = {}
        for name, x in corrected.items():
            if travels_raw(name):
                payload.update(encode_raw(name, arrays[name].reshape(-1)))
                continue
            flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
            payload.update(self.encode_tensor(name, flat, x.shape, plan.get(name), rng))
        if not ef:
            return payload, None
        new_residual = {}
        for name, x in corrected.items():
            if travels_raw(name):
                new_residual[name] = np.zeros(x.shape, dtype=np.float32)
                continue
            dec = self.decode_tensor(payload, name, x.shape, plan.get(name))
            new_residual[name] = (x.reshape(-1) - dec).reshape(x.shape)
        return payload, new_residual

    def decode(
        self, payload: Mapping[str, np.ndarray], template: Mapping[str, tuple[int, ...]]
    ) -> dict[str, np.ndarray]:
        """Validate and decode a payload into float32 arrays with exactly the template's
        names and shapes.

        ``template`` maps tensor name -> expected shape (from the server's global model;
        trusted, a bad template raises ``ValueError``).  Everything about the payload is
        checked before any output is allocated: exact key set, plain 1-D ``numpy.ndarray``
        values, exact dtypes and lengths (which follow from the template, so oversize arrays
        are rejected up front), then each tensor's values (:meth:`check_tensor`).  Any problem
        raises :class:`PayloadError` (and nothing else) whose message is the reason.
        """
        tmpl = normalize_template(template)
        layout = self.layout(tmpl)
        if not isinstance(payload, Mapping):
            raise PayloadError(
                f"payload must be a mapping key -> ndarray, got {type(payload).__name__}"
            )
        try:
            with np.errstate(all="ignore"):
                check_structure(payload, layout)
                plan = self._plan(tmpl)
                for name, shape in tmpl.items():
                    if travels_raw(name):
                        check_raw(payload, name)
                    else:
                        self.check_tensor(payload, name, shape, plan.get(name))
                out = {}
                for name, shape in tmpl.items():
                    if travels_raw(name):
                        flat = decode_raw(payload, name)
                    else:
                        flat = self.decode_tensor(payload, name, shape, plan.get(name))
                    out[name] = flat.reshape(shape)
        except PayloadError:
            raise
        except Exception as exc:  # defence in depth: a hostile payload must only yield this
            raise PayloadError(f"malformed payload ({type(exc).__name__}: {exc})") from exc
        return out


def _add_residual(
    arrays: dict[str, np.ndarray], residual: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``update + residual`` per tensor; ``ValueError`` if the names, order or shapes differ or
    the sum overflows float32."""
    res = as_float32_dict(residual, "residual")
    if list(res) != list(arrays):
        raise ValueError("residual must have the same tensor names (and order) as the update")
    corrected = {}
    for name, x in arrays.items():
        if res[name].shape != x.shape:
            raise ValueError(f"residual {name!r} has shape {res[name].shape}, update has {x.shape}")
        with np.errstate(over="ignore"):
            corrected[name] = x + res[name]
        if not np.isfinite(corrected[name]).all():
            raise ValueError(f"update + residual overflows float32 in {name!r}")
    return corrected
