"""The codec registry: codec names -> Codec classes, and parsing of codec strings.

``parse_codec("topk:0.01")`` looks up the name before the first ``:`` and hands the rest to
that codec's ``parse``.  The built-in codecs are registered when this module is imported; a
user registers more with :func:`register_codec`.  A name with dots, ``pkg.mod.name``, is
loaded on demand: if it is not registered yet, :func:`parse_codec` imports ``pkg.mod`` (which
registers it) and looks again.  Such a name therefore works in every process that can import
the module, e.g. the Ray workers of a simulation or a deployed SuperNode, without any setup
there; the server only sends the label.
"""

from __future__ import annotations

import importlib
import re

from fedenergy.codecs.base import Codec
from fedenergy.codecs.fp16 import Fp16
from fedenergy.codecs.int8 import Int8
from fedenergy.codecs.none import Uncompressed
from fedenergy.codecs.qsgd import Qsgd
from fedenergy.codecs.stc import SparseTernary, Stc
from fedenergy.codecs.stcb import StcB
from fedenergy.codecs.topk import TopK

_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*")
_REGISTRY: dict[str, type[Codec]] = {}  # name -> codec class, in registration order


def register_codec(name: str, factory: type[Codec], *, replace: bool = False) -> type[Codec]:
    """Make ``parse_codec`` turn ``name`` and ``name:<arg>`` into ``factory.parse(arg)``.

    ``factory`` is a :class:`Codec` subclass whose ``name`` is ``name``: lower-case letters,
    digits and ``_``, optionally dotted (``pkg.mod.name``: then ``pkg.mod`` is the module that
    registers it, see the module docstring).  Registering the same class twice is a no-op;
    another class under a taken name is a ``ValueError`` unless ``replace``.  Returns
    ``factory`` (so it can be used from a decorator).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"codec name must be lower-case letters, digits and '_', optionally dotted "
            f"(pkg.module.name), got {name!r}"
        )
    if not (isinstance(factory, type) and issubclass(factory, Codec)):
        raise TypeError(f"codec factory must be a Codec subclass, got {factory!r}")
    if getattr(factory, "name", None) != name:
        raise ValueError(
            f"codec class {factory.__qualname__} has name {getattr(factory, 'name', None)!r}, "
            f"not {name!r} (its labels must start with the registered name)"
        )
    known = _REGISTRY.get(name)
    if known is not None and known is not factory and not replace:
        raise ValueError(f"codec name {name!r} is already registered ({known.__qualname__})")
    _REGISTRY[name] = factory
    return factory


def registered_codecs() -> tuple[str, ...]:
    """Names of the registered codecs, built-ins first, in registration order."""
    return tuple(_REGISTRY)


def valid_forms() -> str:
    """The text forms every registered codec parses, for error messages."""
    return ", ".join(cls.forms for cls in _REGISTRY.values())


def _lookup(name: str) -> type[Codec] | str:
    """The class registered as ``name`` (importing the module of a dotted name first), or the
    reason why there is none."""
    cls = _REGISTRY.get(name)
    if cls is not None:
        return cls
    if "." not in name or not _NAME.fullmatch(name):
        return f"unknown codec name {name!r} (registered: {', '.join(_REGISTRY)})"
    module = name.rpartition(".")[0]
    try:
        importlib.import_module(module)
    except ImportError as err:
        return f"codec {name!r}: cannot import module {module!r} ({err})"
    cls = _REGISTRY.get(name)
    if cls is None:
        return f"module {module!r} does not register codec {name!r}"
    return cls


def parse_codec(text: str) -> Codec:
    """Parse ``<name>`` or ``<name>:<parameter>`` (case-insensitive) into its codec.

    Built in: ``none | fp16 | int8 | int8:channel | topk:<f> | stc:<f> | stcb:<b> | qsgd:<s>``;
    also ``int8:tensor`` (= ``int8``), bare ``topk`` / ``stc`` / ``stcb`` (0.01) and bare
    ``qsgd`` (16 levels).  Raises ``ValueError`` naming the problem and the valid forms.
    """
    if not isinstance(text, str):
        raise ValueError(
            f"codec must be a string, got {type(text).__name__}; valid forms: {valid_forms()}"
        )
    raw = text.strip().lower()
    name, sep, arg = raw.partition(":")
    name, arg = name.strip(), arg.strip()

    def bad(reason: str) -> ValueError:
        return ValueError(f"invalid codec {text!r}: {reason}; valid forms: {valid_forms()}")

    found = _lookup(name)
    if isinstance(found, str):
        raise bad(found)
    try:
        codec = found.parse(arg if sep else None)
    except ValueError as err:
        raise bad(str(err)) from None
    if not isinstance(codec, found):
        raise TypeError(f"{found.__qualname__}.parse returned {type(codec).__name__}")
    return codec


BUILTIN_CODECS: tuple[type[Codec], ...] = (Uncompressed, Fp16, Int8, TopK, Stc, StcB, Qsgd)
for _cls in BUILTIN_CODECS:
    register_codec(_cls.name, _cls)

CODEC_NAMES: tuple[str, ...] = tuple(c.name for c in BUILTIN_CODECS)
EF_CODECS: tuple[str, ...] = tuple(c.name for c in BUILTIN_CODECS if c.error_feedback)
STC_CODECS: tuple[str, ...] = tuple(c.name for c in BUILTIN_CODECS if issubclass(c, SparseTernary))
GLOBAL_CODECS: tuple[str, ...] = tuple(c.name for c in BUILTIN_CODECS if c.downlink)
