"""Hardware-independent work: FLOPs of a module call, counted once per shape on a shadow copy.

A pass is counted with ``torch.utils.flop_counter.FlopCounterMode`` on a copy of the module whose
parameters and buffers live on the ``meta`` device (shapes only, no data, no kernels): counting
never touches the live model's weights, BatchNorm statistics, gradients or the random number
generators. A module whose forward cannot run on ``meta`` (it mixes in real tensors, or needs
data-dependent shapes) is counted on a real deep copy instead, on zeros, with the random number
generators forked and restored.

Conventions: FlopCounterMode counts matrix products and convolutions (2 FLOPs per
multiply-add; bias additions, activations, normalisation and pooling count 0). The backward pass
is what autograd actually runs: for a convolution or linear layer the input gradient and the
weight gradient each cost as much as the forward, except where no input gradient is needed (the
first layer). One optimizer step costs 2 FLOPs per trainable parameter (the SGD update).
A grouped (e.g. depthwise) convolution's weight gradient costs 1/groups of a dense one's: torch's
own formula (2.13) counts it as dense, 96x too much for a 96-channel depthwise layer, so the
backward of a convolution is counted with :func:`conv_backward_flops` instead.

Counts are memoized per (module signature, argument shapes, modes) in a :class:`PassCache`, so
a training call costs one dictionary lookup per distinct batch shape, not a counted pass per step.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

_ATOMS = (type(None), bool, int, float, complex, str, torch.dtype, torch.device)


class TensorSpec(NamedTuple):
    """What a count needs of a tensor argument: its shape, dtype and whether it wants a grad."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    requires_grad: bool


class ListSpec(NamedTuple):
    items: tuple


class DictSpec(NamedTuple):
    items: tuple  # ((key, spec), ...)


class Undescribable(TypeError):
    """An argument that a shape-only description cannot stand for (e.g. an arbitrary object)."""


class MetaArgument(ValueError):
    """An argument on the ``meta`` device: no real work (a count in progress, for instance)."""


@dataclass(frozen=True)
class PassFlops:
    """FLOPs of one call of a module: its forward, and the backward through its output."""

    forward: int
    backward: int = 0


def describe(obj: Any) -> Any:
    """A hashable, shape-only description of call arguments (tensors, sequences, dicts, plain
    values; descriptions pass through). Raises :class:`Undescribable` for anything else and
    :class:`MetaArgument` for a tensor on the meta device."""
    if isinstance(obj, torch.Tensor):
        if obj.is_meta:
            raise MetaArgument("meta tensor")
        return TensorSpec(tuple(obj.shape), obj.dtype, obj.requires_grad)
    if isinstance(obj, (TensorSpec, ListSpec, DictSpec)) or isinstance(obj, _ATOMS):
        return obj
    if type(obj) is tuple:
        return tuple(describe(o) for o in obj)
    if type(obj) is list:
        return ListSpec(tuple(describe(o) for o in obj))
    if type(obj) is dict:
        return DictSpec(tuple((k, describe(v)) for k, v in obj.items()))
    raise Undescribable(type(obj).__name__)


def _describe_call(args: Any, kwargs: Any) -> tuple[tuple, DictSpec]:
    """Positional and keyword arguments (or their descriptions) described."""
    return describe(tuple(args)), DictSpec(()) if kwargs is None else describe(kwargs)


def materialize(spec: Any, device: torch.device) -> Any:
    """Arguments built from a description: zero tensors of the described shapes on ``device``."""
    if isinstance(spec, TensorSpec):
        t = torch.zeros(spec.shape, dtype=spec.dtype, device=device)
        return t.requires_grad_() if spec.requires_grad else t
    if isinstance(spec, ListSpec):
        return [materialize(s, device) for s in spec.items]
    if isinstance(spec, DictSpec):
        return {k: materialize(s, device) for k, s in spec.items}
    if type(spec) is tuple:
        return tuple(materialize(s, device) for s in spec)
    return spec


def model_signature(model: torch.nn.Module) -> tuple:
    """A hashable description of a model's architecture: each submodule's class and settings
    (``extra_repr``: strides, paddings, rates) and each parameter's and buffer's shape."""
    mods = tuple(
        (type(m).__module__, type(m).__qualname__, m.extra_repr()) for m in model.modules()
    )
    params = tuple((n, tuple(p.shape), p.requires_grad) for n, p in model.named_parameters())
    buffers = tuple((n, tuple(b.shape)) for n, b in model.named_buffers())
    return mods, params, buffers


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are empty ``meta`` tensors (tied
    parameters stay tied; ``requires_grad`` and training modes are kept). The live model's
    data is never copied."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(
            torch.empty_like(p, device="meta"), requires_grad=p.requires_grad
        )
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def grad_outputs(out: Any) -> list[torch.Tensor]:
    """The tensors of a module's output that require grad, in a fixed order (tensors, sequences
    and dict values, depth first)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.requires_grad else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in grad_outputs(o)]
    return []


Backward = bool | tuple[int, ...]  # no / all outputs / the grad_outputs indices it reaches


def conv_backward_flops(
    grad_out_shape,
    x_shape,
    w_shape,
    _bias,
    _stride,
    _padding,
    _dilation,
    transposed,
    _output_padding,
    groups,
    output_mask,
    out_shape=None,
    **_: Any,
) -> int:
    """FLOPs of ``aten.convolution_backward`` (shapes in, as FlopCounterMode hands them): the
    input gradient is a transposed convolution with the layer's own weight (its shape already
    holds C_in / groups); the weight gradient correlates the input with the output gradient
    within each group, ``1/groups`` of the dense product."""
    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:
        a, b = (grad_out_shape, x_shape) if transposed else (x_shape, grad_out_shape)
        g = max(int(groups), 1)
        flops += conv_flop_count(_swap01(a), _swap01(b), _swap01(out_shape[1]), False) // g
    return flops


def _swap01(shape) -> list[int]:
    """A shape with its first two dimensions swapped (batch <-> channels)."""
    return [shape[1], shape[0], *shape[2:]]


def _counter() -> FlopCounterMode:
    return FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops}
    )


def _run(
    model: torch.nn.Module, args: Any, kwargs: Any, backward: Backward, grad: bool
) -> PassFlops:
    with torch.set_grad_enabled(grad), _counter() as fwd:
        out = model(*args, **kwargs)
    need = grad_outputs(out) if backward and grad else []
    if isinstance(backward, tuple):
        need = [t for i, t in enumerate(need) if i in backward]
    if not need:
        return PassFlops(int(fwd.get_total_flops()))
    with _counter() as bwd:
        torch.stack([t.float().sum() for t in need]).sum().backward()
    return PassFlops(int(fwd.get_total_flops()), int(bwd.get_total_flops()))


def _device_of(model: torch.nn.Module) -> torch.device:
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


def count_pass(
    model: torch.nn.Module,
    args: Any,
    kwargs: Any = None,
    *,
    backward: Backward,
    training: bool | None = None,
    grad: bool = True,
) -> PassFlops:
    """FLOPs of one call ``model(*args, **kwargs)`` (tensors or their descriptions; only shapes
    and dtypes matter), with the backward from the sum of its outputs that require grad when
    ``backward`` (True: all of them; a tuple: those :func:`grad_outputs` indices). Counted on a
    meta copy, else on a real deep copy with the random number generators restored: the live
    model is never run. ``training`` sets the copy's mode (None: as the model is); ``grad`` is
    the grad mode the call ran under."""
    args, kwargs = _describe_call(args, kwargs)
    try:
        shadow = meta_copy(model)
        if training is not None:
            shadow.train(training)
        meta = torch.device("meta")
        return _run(shadow, materialize(args, meta), materialize(kwargs, meta), backward, grad)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        pass  # this forward cannot run on meta: count on a real copy
    device = _device_of(model)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        shadow = copy.deepcopy(model)
        if training is not None:
            shadow.train(training)
        return _run(shadow, materialize(args, device), materialize(kwargs, device), backward, grad)


@dataclass
class PassCache:
    """Memoized :func:`count_pass` per (model signature, argument description, modes)."""

    counts: dict[tuple, PassFlops] = field(default_factory=dict)
    counted: int = 0  # how many real counting passes ran (for tests and diagnostics)

    def count(
        self,
        model: torch.nn.Module,
        args: Any,
        kwargs: Any = None,
        *,
        backward: Backward,
        training: bool | None = None,
        grad: bool = True,
    ) -> PassFlops:
        """:func:`count_pass`, once per distinct key."""
        args, kwargs = _describe_call(args, kwargs)
        key = (model_signature(model), args, kwargs, backward, training, grad)
        if key not in self.counts:
            self.counts[key] = count_pass(
                model, args, kwargs, backward=backward, training=training, grad=grad
            )
            self.counted += 1
        return self.counts[key]


@dataclass
class FlopCache:
    """FLOPs of minibatch training and evaluation of a model on inputs shaped like a sample,
    from counted passes (a :class:`PassCache`)."""

    passes: PassCache = field(default_factory=PassCache)

    @property
    def counted(self) -> int:
        """How many real counting passes ran."""
        return self.passes.counted

    def _count(self, model: torch.nn.Module, x: torch.Tensor, backward: bool) -> int:
        spec = TensorSpec(tuple(x.shape), x.dtype, False)
        p = self.passes.count(model, (spec,), backward=backward)
        return p.forward + p.backward

    def train_step(self, model: torch.nn.Module, x: torch.Tensor) -> int:
        """FLOPs of one forward+backward pass plus the SGD update (2 FLOPs per parameter)."""
        return self._count(model, x, backward=True) + 2 * num_parameters(model)

    def forward(self, model: torch.nn.Module, x: torch.Tensor) -> int:
        """FLOPs of one forward pass."""
        return self._count(model, x, backward=False)

    def training(
        self, model: torch.nn.Module, sample: torch.Tensor, n: int, batch_size: int, epochs: int
    ) -> int:
        """FLOPs of ``epochs`` passes of minibatch SGD over ``n`` samples shaped like ``sample``."""
        if n == 0 or epochs == 0:
            return 0
        full, rest = divmod(n, batch_size)
        row = sample[:1]
        per_epoch = full * self.train_step(model, row.expand(batch_size, *row.shape[1:]))
        if rest:
            per_epoch += self.train_step(model, row.expand(rest, *row.shape[1:]))
        return epochs * per_epoch

    def evaluation(self, model: torch.nn.Module, sample: torch.Tensor, n: int) -> int:
        """FLOPs of one forward pass over ``n`` samples."""
        if n == 0:
            return 0
        row = sample[:1]
        return self.forward(model, row.expand(n, *row.shape[1:]))
