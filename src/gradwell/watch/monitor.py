"""`Monitor`: per-layer gradient, weight, update and activation statistics, recorded cheaply.

Two ways to drive it:

* ``loss.backward(); mon.step(); opt.step()`` - one recorded step per ``mon.step()`` call;
  the update of step ``s`` (the change ``opt.step()`` makes) is measured at the next call.
* ``watch(model, optimizer=opt)`` - step hooks on the optimizer record once per optimizer
  step (so gradient accumulation over micro-batches is one step) and measure the update
  exactly; ``mon.step()`` is then optional.

Which gradients are recorded (pre- or post-clip). Without ``optimizer=`` they are the
gradients at ``mon.step()``: call it before your own ``clip_grad_norm_`` to see them
unclipped. With ``optimizer=``, in order of preference:

1. the gradients at ``mon.step(loss)`` if you call it (after ``loss.backward()``, before your
   own clipping): pre-clip;
2. the *hand-over* of an optimizer that computes every gradient norm itself before clipping
   (gradwell's optimizers with ``clip=`` or ``skip_nonfinite=True``): after its ``step()``
   it holds ``optimizer.last_grad_norms = (params, per_tensor_norms, total)``, the L2 norms
   of the gradients it was given, pre-clip; the monitor re-uses them, so monitoring costs no
   second pass (:func:`handed_over_norms`);
3. otherwise the gradients when ``opt.step()`` starts: **post-clip** if you clipped with
   ``torch.nn.utils.clip_grad_norm_`` in between, so a spike that your clipping removed is
   not seen.

float16 with a ``torch.amp.GradScaler``: pass ``scaler=`` (:mod:`gradwell.watch.handover`);
gradients read before ``scaler.unscale_`` are divided by the loss scale, and overflow steps
are ``amp_overflow`` events. With ``optimizer=`` too, call ``mon.step(loss)`` once per step
after the last backward: the activations it hands over belong to that step, so a step the
scaler skips (no ``opt.step()``) leaves nothing in the next.

Cost per recorded step: a norm pass over the gradients and one over the weights (every ratio
uses the weights of its own step), a few reductions per watched activation (on about 2**20
evenly spaced values of a larger output, ``collect.sample``; logits and attention: on a
subsample, transformer.py), one device-to-host transfer. On one recorded step
in ``update_every`` (default ``max(1, 10 // every)``: about one training step in 10) a copy
and a subtraction of the parameters for the update ratio (and Adam's statistics, adam.py).

``torch.compile``: the compiled module is unwrapped (names without ``_orig_mod.``); by default
a compiled model is watched without forward hooks (``activations=False``: gradients, weights,
updates and the loss need none, so nothing recompiles or breaks the graph). Pass
``activations=True`` to add them (dynamo traces the hooks, with graph breaks); modules whose
hooks never fire are reported by the ``unobserved`` finding, never as silent NaN columns.

Distributed runs: every rank records the same rows (one all-reduce per recorded step); sinks,
printing, ``save`` and ``plot`` act on rank 0 only (:attr:`Monitor.lead`).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from .. import _distributed
from .._checks import check_bool, check_int
from . import row as rows
from .row import Pending
from .adam import adam_parts, is_adam
from .alive import AliveLayout
from .collect import ActivationStats, first_tensor, norms
from .handover import (check_optimizer, check_scaler, handed_over_norms, loss_scale,
                       overflow_event, reuses_norms, still_scaled)
from .nonfinite import Screen, nonfinite_event
from .history import History
from .layers import LayerIndex
from .sinks import JsonlSink, Sink
from .transformer import register_hooks as register_logit_hooks

__all__ = ["Monitor", "UPDATE_PERIOD", "handed_over_norms"]

#: By default weights and updates are measured about once per this many training steps.
UPDATE_PERIOD = 10


class Monitor:
    """Watch ``model``'s gradients; see :func:`gradwell.watch.watch` for the arguments."""

    def __init__(self, model: nn.Module, *, optimizer: torch.optim.Optimizer | None = None,
                 every: int = 1, activations: bool | None = None, updates: bool = True,
                 update_every: int | None = None, max_records: int = 1024,
                 log: str | Path | None = None, sinks: Iterable[Sink] = (),
                 logits: str | bool | None = None, scaler: Any = None) -> None:
        if update_every is None and isinstance(every, int) and not isinstance(every, bool):
            update_every = max(1, UPDATE_PERIOD // max(every, 1))
        for name, value in (("every", every), ("update_every", update_every)):
            check_int(name, value, 1, f" (one step in `{name}`)")
        self.index = LayerIndex(model, logits=logits)
        if activations is None:
            activations = not self.index.compiled
        for flag, value in (("activations", activations), ("updates", updates)):
            check_bool(flag, value, " (or None for activations: True unless the model is "
                                    "torch.compile'd)")
        self.every, self.activations, self.updates = every, activations, updates
        self.update_every = update_every
        self.optimizer = check_optimizer(optimizer, self.index)
        #: the ``torch.amp.GradScaler`` of a float16 run (handover.py); settable
        self.scaler = check_scaler(scaler)
        self.adam = self.optimizer is not None and is_adam(self.optimizer)   # adam.py stats
        self._device = self.index.params[0].device
        rank, self._world = _distributed.world()
        self._shards = _distributed.reducer_for(self.index.params)   # FSDP2, else None
        self._alive = AliveLayout()                # ReLU units' slots agreed over ranks
        #: True on the process that writes sinks, prints and saves (rank 0, or no distributed)
        self.lead = rank == 0
        self._history = History(self.index.columns(activations, self.adam), self._meta(),
                                max_records)
        self._screen = Screen(self._history)
        self._sinks: list[Any] = list(sinks) + ([JsonlSink(log)] if log is not None else [])
        if not self.lead:
            self._sinks = []                 # rank handling: sinks exist on the lead only
        self._handles: list[Any] = []
        self._closed = False
        self._step = 0                      # index of the step being observed now
        self._last_finite: int | None = None
        self._recorded = 0                  # recorded steps so far (sets the update cadence)
        self._early: Tensor | None = None   # gradient norms taken at mon.step() (pre-clip)
        self._pending: Pending | None = None
        self._snap: list[Tensor] | None = None
        self._loss: Tensor | None = None
        self._acts = ActivationStats()
        self._frozen: ActivationStats | None = None   # acts handed over by mon.step(loss)
        self._armed = True
        self._paused = False
        self._register_hooks()
        for s in self._sinks:
            s.start(self._history.header())

    def _meta(self) -> dict[str, Any]:
        opt = type(self.optimizer).__name__ if self.optimizer is not None else None
        return {**self.index.meta(), "every": self.every, "watch_activations": self.activations,
                "world_size": self._world, "optimizer": opt, "adam_stats": self.adam}

    def _register_hooks(self) -> None:
        if self.activations:
            layer_names = {x.name for x in self.index.layers}
            kinds = {a.name: a.activation for a in self.index.activations}
            for name in self.index.tracked:
                hook = self._forward_hook(name, kinds.get(name), name in layer_names)
                self._handles.append(self.index.modules[name].register_forward_hook(hook))
            self._handles += register_logit_hooks(self.index, lambda: self._acts.logits,
                                                  self._hooks_on, set(self.index.tracked))
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_pre_hook(self._pre_step))
            self._handles.append(self.optimizer.register_step_post_hook(self._post_step))

    def _forward_hook(self, name: str, kind: str | None, is_layer: bool) -> Any:
        logits = name in self.index.logits

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self._hooks_on():
                if self._armed and not self._paused and not self._closed:
                    self._acts.saw(name)   # no grad: only its place in the forward order
                return
            t = first_tensor(output)
            if t is None:
                return
            acts = self._acts
            acts.on_output(name, kind, t)
            if logits:
                acts.logits.on_logits(name, t)
            if is_layer and t.requires_grad:
                t.register_hook(lambda g: None if self._closed else acts.on_out_grad(name, g))
        return hook

    def _hooks_on(self) -> bool:
        return (self._armed and not self._paused and not self._closed
                and torch.is_grad_enabled())

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Forwards inside record nothing (the guard's replays and per-sample norms: they
        belong to no step, and ``torch.func.vmap`` must not leave its tensors in the stats)."""
        before, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = before

    # ------------------------------------------------------------------------ recording
    def step(self, loss: Tensor | float | None = None) -> None:
        """Record this step's statistics (call after ``loss.backward()``, before ``opt.step()``).

        Args:
            loss: optional; recorded with the step (a tensor is read in the same transfer).
                With ``optimizer=`` given the step is recorded by the optimizer's hooks and
                this call hands over ``loss`` and takes the gradient norms now, before any
                clipping you do next (see the module docstring).
        """
        self._check_open()
        loss_t = None if loss is None else torch.as_tensor(loss).detach()
        if loss_t is not None and loss_t.numel() != 1:
            raise ValueError(f"loss must hold one value, got shape {tuple(loss_t.shape)}; "
                             "reduce it (e.g. loss.mean()) before mon.step(loss)")
        if self.optimizer is not None:
            self._loss = loss_t
            if self._step % self.every == 0 and any(p.grad is not None
                                                    for p in self.index.params):
                self._early = self._grad_norms()
            if self.scaler is not None:   # a step the scaler skips never reaches _pre_step:
                self._frozen, self._acts = self._acts, ActivationStats()   # drop it next call
            return
        if all(p.grad is None for p in self.index.params):
            raise RuntimeError("mon.step() found no gradients: call loss.backward() before "
                               "mon.step() (and mon.step() before optimizer.zero_grad())")
        self._flush()
        if self._step % self.every == 0:
            self._begin(loss_t, self._grad_norms())
        self._advance()

    def discard(self) -> None:
        """Forget a step that is not applied (``gradwell.guard`` calls it on a refused step).

        With ``optimizer=`` the step would otherwise be recorded with the next optimizer step:
        its outputs' sums added to that step's, its loss and norms handed over. Its index is
        used up, so the steps keep the guard's numbers. Without ``optimizer=``, ``mon.step()``
        has recorded it already (a non-finite step is worth its record), and a closed monitor
        records nothing more: nothing to forget."""
        if self.optimizer is not None and not self._closed:
            self._acts, self._frozen, self._loss, self._early = ActivationStats(), None, None, None
            self._advance()

    @torch.no_grad()
    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._closed or self._step % self.every:
            return
        grad, self._early = self._early, None
        if grad is None and not reuses_norms(optimizer):
            grad = self._grad_norms()
        self._begin(self._loss, grad)
        self._loss = None

    @torch.no_grad()
    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._closed:
            return
        if self._pending is not None and self._pending.grad is None:
            self._pending.grad = handed_over_norms(optimizer, self.index.params, self._device)
            self._pending.grad_full = self._pending.grad is not None   # reduced by optimizer
            if self._pending.grad is None:
                self._pending.grad = self._grad_norms()
        self._flush()
        self._loss = None
        self._advance()

    def _advance(self) -> None:
        self._step += 1
        self._armed = self.activations and self._step % self.every == 0

    @torch.no_grad()
    def _grad_norms(self) -> Tensor:
        params = self.index.params
        present = [i for i, p in enumerate(params) if p.grad is not None]
        if len(present) == len(params):
            out = norms([p.grad for p in params], self._device)
        else:
            out = torch.zeros(len(params), device=self._device)
            if present:
                idx = torch.tensor(present, device=self._device)
                out[idx] = norms([params[i].grad for i in present], self._device)
        scale = loss_scale(self.scaler, self._device)
        if scale is not None and still_scaled(self.scaler, self.optimizer):
            out = (out / scale).float()         # the true gradients' norms (handover.py)
        return out

    @torch.no_grad()
    def _begin(self, loss: Tensor | None, grad: Tensor | None) -> None:
        params = self.index.params           # under no_grad: no detach needed
        snapped = self.updates and self._recorded % self.update_every == 0
        self._recorded += 1
        if snapped:
            shards = [_distributed.local(p) for p in params]   # FSDP2: this rank's part
            if self._snap is None:
                self._snap = [p.detach().clone() for p in shards]
            else:
                torch._foreach_copy_(self._snap, shards)
        acts = (self._frozen or self._acts) if self.activations else None
        self._frozen = None
        self._pending = Pending(self._step, grad, norms(params, self._device), loss, acts)
        self._pending.snapped = snapped
        self._pending.scale = loss_scale(self.scaler, self._device)
        self._acts = ActivationStats()

    @torch.no_grad()
    def _flush(self) -> None:
        """Measure the update of the pending step, read it back once and store it."""
        p, self._pending = self._pending, None
        if p is None:
            return
        if p.grad is None:
            p.grad = self._grad_norms()
        update = None
        if p.snapped and self._snap is not None:
            torch._foreach_sub_(self._snap, [_distributed.local(q) for q in self.index.params])
            update = norms(self._snap, self._device)              # old - new, in place
            if self.adam:
                p.adam = adam_parts(self.optimizer, self.index.params, self._snap, self._device)
        row, extra = rows.finalize(p, self.index, update, self._device, self._world,
                                   self._shards, adam=self.adam, layout=self._alive)
        extra["loss_given"] = p.loss is not None
        self._store(p.step, row, extra)

    def _store(self, step: int, row: np.ndarray, extra: dict[str, Any]) -> None:
        self._history.append(step, row)
        if extra.get("no_grad") and not self._history.events_of("no_grad_forward"):
            quiet = {"kind": "no_grad_forward", "step": int(step), "modules": extra["no_grad"]}
            self._history.add_event(quiet)               # read by the unobserved finding
            for s in self._sinks:
                s.event(quiet)
        event = overflow_event(self._history, step, row, extra)
        if event is not None:
            return self._write(step, row, event)
        if (self._screen.suspect(row, extra.get("loss_given", False))
                and self._history.first_nonfinite() is None):
            event = nonfinite_event(self._history, step, row, extra)
            if event is not None:
                event["last_finite_step"] = self._last_finite
                self._history.add_event(event)
        if event is None and self._history.first_nonfinite() is None:
            self._last_finite = step
        self._write(step, row, event)

    def _write(self, step: int, row: np.ndarray, event: dict[str, Any] | None) -> None:
        if self._sinks:
            record = self._history.as_record(step, row)
            for s in self._sinks:
                s.write(record)
                if event is not None:
                    s.event(event)

    # --------------------------------------------------------------------- results
    def _results(self) -> History:
        if not self._closed:
            self._flush()
        return self._history

    @property
    def history(self) -> History:
        """The record so far (read after ``opt.step()``: the last step's update is measured
        when the record is read)."""
        return self._results()

    def findings(self, thresholds: Any = None) -> list[Any]:
        """Diagnose the record: a list of :class:`gradwell.diagnose.Finding`, worst first."""
        from ..diagnose import diagnose
        return diagnose(self._results(), thresholds)

    def summary(self, show: bool = False) -> Any:
        """A table of layers with their latest statistics and the findings (``rich``).

        ``str(summary)`` is plain text; ``rich.print(summary)`` renders colours. With
        ``show=True`` it is also printed, on rank 0 only.
        """
        from .display import Summary
        s = Summary(self._results(), self.findings())
        if show and self.lead:
            s.print()
        return s

    def save(self, path: str | Path) -> Path | None:
        """Write the history as JSON lines (rank 0 only; other ranks return None)."""
        hist = self._results()
        return hist.save(path) if self.lead else None

    def plot(self, path: str | Path) -> Path | None:
        """Save the gradient-flow figure (rank 0 only; other ranks return None)."""
        from .display import plot
        hist = self._results()
        return plot(hist, path, self.findings()) if self.lead else None

    @property
    def layers(self) -> list[str]:
        """Names of the watched layers (modules with parameters), in registration order."""
        return [x.name for x in self.index.layers]

    # ------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Record the pending step, remove every hook and close the sinks (idempotent)."""
        if self._closed:
            return
        self._flush()
        self._closed = True
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._snap = None
        for s in self._sinks:
            s.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this monitor was closed (close() or the end of its with-block) "
                               "and records nothing more; create a new one with "
                               "gradwell.watch(model)")

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"step {self._step}"
        return (f"Monitor({len(self.index.layers)} layers, every={self.every}, "
                f"activations={self.activations}, {state})")
