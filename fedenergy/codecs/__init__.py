"""Update codecs: a ``Codec`` interface, one module per codec, a registry that parses codec
strings, payload packing, and their use on Flower messages.

A client encodes a model update (``delta = new - global``, a dict ``name -> float32 ndarray`` in
model order) into a *payload*: a flat ``dict[str, np.ndarray]`` with keys ``f"{tensor}.{part}"``,
every array 1-D, its dtype and length fixed by the codec and the template (``payload_layout``).
The server decodes the payload back to float32 arrays of the global model's shapes.  The
decoder treats every payload as hostile: it checks the key set, dtypes, shapes and lengths, then
each codec's value rules, before it allocates any output, never allocates more than O(template
size), and raises only :class:`PayloadError` for anything wrong with the payload.

Modules: ``base`` (the :class:`Codec` interface; ``CodecSpec`` is the same type), ``registry``
(:func:`register_codec`, :func:`parse_codec`), ``checks`` and ``packing`` (shared helpers),
``raw`` (BatchNorm running statistics, which every codec sends as float32 copies),
``api`` (the module-level functions below), ``messages`` (Flower records), and one module per
built-in codec (``label()`` forms):

* ``none``          -- float32 copy (exact).
* ``fp16``          -- IEEE half precision, saturating at +-65504 (2x smaller).
* ``int8``          -- affine 8-bit, one (scale, zero) pair per tensor (~4x smaller).
* ``int8:channel``  -- affine 8-bit, one pair per output channel (axis 0) of tensors with ndim >= 2.
* ``topk:<f>``      -- DGC-style top-k sparsification with error feedback (``topk``).
* ``stc:<f>``       -- sparse ternary compression with Golomb-Rice coded positions (``stc``,
  ``rice``).
* ``stcb:<b>``      -- STC with a layer-aware byte budget of ``b`` x the float32 size (``stcb``).
* ``qsgd:<s>``      -- QSGD stochastic quantisation with ``s`` levels, unbiased (``qsgd``).

Adding a codec (no change to this package): write a frozen dataclass subclassing
:class:`Codec` (``name``, ``forms``, ``parse``, ``label``, ``error_bound`` and the four
per-tensor methods) and call ``register_codec(name, TheClass)`` at the import of its module.
To use it in a federation give it a dotted name, ``"<module path>.<codec>"``, e.g.
``"my_pkg.codecs.halfsign"`` registered in ``my_pkg/codecs.py``: ``parse_codec`` imports the
module of an unknown dotted name, so the server, the Ray workers of a simulation and deployed
SuperNodes all find the codec from its label alone (the module must be importable there).
See ``docs/compression.md`` ("Adding a codec").
"""

from fedenergy.codecs.api import (
    as_codec,
    decode,
    decode_global,
    encode,
    encode_global,
    expected_nbytes,
    expected_ratio,
    pack_payload,
    payload_layout,
    unpack_payload,
    uses_error_feedback,
)
from fedenergy.codecs.base import Codec
from fedenergy.codecs.checks import Layout, Payload, PayloadError, Template
from fedenergy.codecs.fp16 import Fp16
from fedenergy.codecs.int8 import Int8
from fedenergy.codecs.messages import (
    decode_downlink,
    decode_reply_content,
    encode_reply_arrays,
    numpy_arrays,
    template_of,
)
from fedenergy.codecs.none import Uncompressed
from fedenergy.codecs.packing import payload_nbytes
from fedenergy.codecs.qsgd import MAX_QSGD_LEVELS, Qsgd
from fedenergy.codecs.registry import (
    CODEC_NAMES,
    EF_CODECS,
    GLOBAL_CODECS,
    STC_CODECS,
    parse_codec,
    register_codec,
    registered_codecs,
)
from fedenergy.codecs.rice import rice_parameter
from fedenergy.codecs.stc import SparseTernary, Stc
from fedenergy.codecs.stcb import StcB, stcb_budget, stcb_counts
from fedenergy.codecs.topk import TopK, topk_count

CodecSpec = Codec  # the name callers use for "a codec" (type annotations)

__all__ = [
    "CODEC_NAMES",
    "Codec",
    "CodecSpec",
    "EF_CODECS",
    "Fp16",
    "GLOBAL_CODECS",
    "Int8",
    "Layout",
    "MAX_QSGD_LEVELS",
    "Payload",
    "PayloadError",
    "Qsgd",
    "STC_CODECS",
    "SparseTernary",
    "Stc",
    "StcB",
    "Template",
    "TopK",
    "Uncompressed",
    "as_codec",
    "decode",
    "decode_downlink",
    "decode_global",
    "decode_reply_content",
    "encode",
    "encode_global",
    "encode_reply_arrays",
    "expected_nbytes",
    "expected_ratio",
    "numpy_arrays",
    "pack_payload",
    "parse_codec",
    "payload_layout",
    "payload_nbytes",
    "register_codec",
    "registered_codecs",
    "rice_parameter",
    "stcb_budget",
    "stcb_counts",
    "template_of",
    "topk_count",
    "unpack_payload",
    "uses_error_feedback",
]
