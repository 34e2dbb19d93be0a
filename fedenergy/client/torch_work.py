"""The torch work of a call, counted with no code in the handler.

While the handler runs, :class:`TorchCalls` holds three global torch hooks: a module forward
pre-hook and post-hook that record the calling thread's OUTERMOST module calls (the module, a
shape-only description of its arguments, its training mode and the grad mode; nested calls are
part of their parent's count), gradient hooks on each such call's outputs that note the backward
passes reaching them, and an optimizer step hook. No tensor is read and no value changed:
training runs exactly as without them. After the call, :meth:`TorchCalls.counted` turns the
records into FLOPs: each distinct record is counted once per process on a meta copy of its
module (:mod:`fedenergy.physics.flops`; the backward from the outputs it reached), times its
calls and backward passes, plus 2 FLOPs per trainable parameter per optimizer step. The same
records give the call's steps (optimizer steps; backward passes or forward calls where there
are none) and its batch (the largest leading dimension of a recorded call's first tensor).

Not seen: work outside ``nn.Module`` calls (bare tensor arithmetic, ``module.forward(x)``
called directly), work in other threads or processes, and modules whose arguments are not
tensors, sequences, dicts or plain values (such calls are reported as not counted).

This module imports torch: the energy mod loads it only when torch is already loaded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.optim.optimizer import register_optimizer_step_post_hook

from fedenergy.physics.flops import (
    Backward,
    MetaArgument,
    PassCache,
    PassFlops,
    TensorSpec,
    Undescribable,
    describe,
    grad_outputs,
)

# The FLOP counts of distinct module calls, for the life of this process.
PASSES = PassCache()


@dataclass(frozen=True)
class Counted:
    """FLOPs counted from a call's torch work."""

    flops: int
    calls: int  # outermost module calls seen
    steps: int  # optimizer steps seen
    uncounted: int  # module calls seen whose FLOPs could not be counted
    reason: str = ""  # why they could not
    backwards: int = 0  # backward passes that reached a recorded call
    batch: int = 0  # the largest leading dimension of a recorded call's first tensor argument


class _Reached:
    """Which outputs of one module call the backward passes reached, and how often (gradient
    hooks that observe and change nothing)."""

    __slots__ = ("fired",)

    def __init__(self, outputs: int) -> None:
        self.fired = [0] * outputs

    def hook(self, i: int) -> Callable[[torch.Tensor], None]:
        return partial(self._fire, i)

    def _fire(self, i: int, grad: torch.Tensor) -> None:
        self.fired[i] += 1


class _Tally:
    """The forward calls of one distinct module call and what their backward passes reached."""

    __slots__ = ("forwards", "reached")

    def __init__(self) -> None:
        self.forwards = 0
        self.reached: list[_Reached] = []

    def backwards(self) -> dict[tuple[int, ...], int]:
        """Backward passes by the outputs (``grad_outputs`` indices) they started from."""
        out: dict[tuple[int, ...], int] = {}
        for r in self.reached:
            passes = max(r.fired)
            if passes:
                outputs = tuple(i for i, n in enumerate(r.fired) if n)
                out[outputs] = out.get(outputs, 0) + passes
        return out


class TorchCalls:
    """A context manager recording the torch work of the thread that enters it."""

    def __init__(self, passes: PassCache | None = None) -> None:
        self._passes = PASSES if passes is None else passes  # the process-wide memo by default
        self._owner = threading.get_ident()
        self._depth = 0
        self._tallies: dict[tuple, _Tally] = {}
        self._modules: dict[int, torch.nn.Module] = {}  # keeps recorded modules (and ids) alive
        self._optimizers: dict[int, list] = {}  # id -> [optimizer, steps]
        self._undescribed = 0
        self._undescribed_reason = ""
        self._handles: list = []

    def __enter__(self) -> TorchCalls:
        self._owner = threading.get_ident()
        self._handles = [
            register_module_forward_pre_hook(self._enter_module),
            register_module_forward_hook(self._leave_module, with_kwargs=True, always_call=True),
            register_optimizer_step_post_hook(self._step),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _enter_module(self, module: torch.nn.Module, args: tuple) -> None:
        if threading.get_ident() == self._owner:
            self._depth += 1

    def _leave_module(self, module: torch.nn.Module, args: tuple, *rest: Any) -> None:
        if threading.get_ident() != self._owner:
            return
        self._depth -= 1
        # rest is (kwargs, output); a forward that raised passes (output,) only: not recorded
        if self._depth or len(rest) != 2:
            return
        kwargs, out = rest
        try:
            if kwargs or len(args) != 1 or type(args[0]) is not torch.Tensor or args[0].is_meta:
                spec = (describe(args), describe(kwargs) if kwargs else None)
            else:  # the common call, model(x), described without the general walk
                x = args[0]
                spec = ((TensorSpec(tuple(x.shape), x.dtype, x.requires_grad),), None)
        except MetaArgument:
            return  # a shape-only run (a count in progress): no real work
        except Undescribable as err:
            self._undescribed += 1
            self._undescribed_reason = f"{type(module).__name__} argument {err}"
            return
        key = (id(module), module.training, torch.is_grad_enabled(), spec)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally()
            self._modules[id(module)] = module
        tally.forwards += 1
        outputs = grad_outputs(out)
        if outputs:
            reached = _Reached(len(outputs))
            for i, t in enumerate(outputs):
                t.register_hook(reached.hook(i))
            tally.reached.append(reached)

    def _step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if threading.get_ident() != self._owner:
            return
        entry = self._optimizers.setdefault(id(optimizer), [optimizer, 0])
        entry[1] += 1

    def _module_flops(self, key: tuple, tally: _Tally) -> int:
        mid, training, grad, (args, kwargs) = key

        def count(backward: Backward) -> PassFlops:
            return self._passes.count(
                self._modules[mid], args, kwargs, backward=backward, training=training, grad=grad
            )

        backwards = tally.backwards()
        if not backwards:
            return tally.forwards * count(False).forward
        work = 0
        for outputs, passes in backwards.items():
            p = count(outputs)  # one counted run gives the forward and this backward
            work += passes * p.backward
        return work + tally.forwards * p.forward

    def counted(self) -> Counted:
        """The FLOPs of the work recorded so far (each distinct call counted once per process)."""
        flops, calls, uncounted = 0, self._undescribed, self._undescribed
        reason = self._undescribed_reason
        backwards, batch = 0, 0
        for key, tally in self._tallies.items():
            calls += tally.forwards
            backwards += sum(tally.backwards().values())
            batch = max(batch, _leading_dim(key[3][0]))
            try:
                flops += self._module_flops(key, tally)
            except Exception as err:  # noqa: BLE001 - a count must never fail the call
                uncounted += tally.forwards
                reason = f"{type(self._modules[key[0]]).__name__}: {type(err).__name__}"
        steps = 0
        for optimizer, n in self._optimizers.values():
            trainable = sum(
                p.numel() for g in optimizer.param_groups for p in g["params"] if p.requires_grad
            )
            flops += 2 * n * trainable
            steps += n
        return Counted(flops, calls, steps, uncounted, reason, backwards, batch)


def _leading_dim(args: tuple) -> int:
    """The leading dimension of the first tensor in a call's described arguments (0: none)."""
    for a in args:
        if isinstance(a, TensorSpec):
            return int(a.shape[0]) if a.shape else 0
    return 0
