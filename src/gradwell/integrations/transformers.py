"""`GradwellCallback` for the Hugging Face ``Trainer`` (``pip install gradwell[transformers]``).

>>> trainer = transformers.Trainer(model, args, train_dataset=ds, callbacks=[GradwellCallback()])
>>> trainer.train(); callback.findings()

Where it reads the gradients: in ``Trainer._inner_training_loop`` (transformers 5.x) the last
micro-batch's backward is followed by ``_clip_grad_norm`` (accelerate unscales fp16 gradients,
then ``clip_grad_norm_``) and only then by ``on_pre_optimizer_step``, ``optimizer.step()``,
``on_optimizer_step`` and ``lr_scheduler.step()``. No event lies between backward and
clipping, so the callback takes the clipping over: from ``on_step_begin`` to
``on_pre_optimizer_step`` it holds ``args.max_grad_norm`` at 0, the Trainer then only measures
the norm (``clip_grad_norm_(..., inf)``, which unscales and changes nothing), and in
``on_pre_optimizer_step`` the callback records the final, unclipped gradients, lets the guard
judge them, and clips with ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm)`` - what
accelerate does for one process and DDP. The Trainer's logged ``grad_norm`` stays the
pre-clip norm. ``args.max_grad_norm`` holds its own value again at every log, save and after
``train``.

A skip (``guard=True``) sets every gradient to ``None`` (the optimizer then leaves every
parameter and its state alone) and drops that step's ``lr_scheduler.step()``;
``state.global_step`` still counts it.
"""

from __future__ import annotations

from typing import Any

import torch

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("gradwell.integrations.transformers needs transformers: "
                      "pip install 'gradwell[transformers]'") from exc

from ._core import (CallbackBase, PREFIX, Session, finding_metrics, format_findings,
                    restore_scheduler_step, skip_scheduler_step)

__all__ = ["GradwellCallback"]

#: accelerate's distributed types the callback supports (gradients are plain, full tensors).
SUPPORTED = ("NO", "MULTI_CPU", "MULTI_GPU", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU",
             "MULTI_SDAA", "MULTI_MUSA", "MULTI_HPU")
_ACTIVE: dict[int, "GradwellCallback"] = {}   # id(model) -> the callback watching it


class GradwellCallback(CallbackBase, TrainerCallback):
    """Watch (and optionally guard) the gradients of a ``transformers.Trainer`` run.

    Args:
        watch: attach :func:`gradwell.watch` (``True``, or a dict of its keyword arguments).
        guard: skip non-finite or spiking steps exactly, roll back as
            :class:`gradwell.guard.Guard` does (``True``, or a dict of its keyword arguments).
            Not with ``fp16=True`` (its GradScaler already skips overflowing steps: use
            ``bf16=True``). The loss it judges is the model output's ``loss`` over the
            micro-batches (the step's loss, also with ``num_items_in_batch``; mean over ranks);
            without one only the gradients are judged.
        every: record one optimizer step in ``every``.
        thresholds: :class:`gradwell.diagnose` thresholds for the findings.
        verbose: print the findings at the end of ``train`` (main process).

    At every Trainer log the latest recorded step's ``gradwell/grad_norm`` (pre-clip total),
    ``gradwell/rel_grad_min``, ``gradwell/rel_grad_max``, ``gradwell/update_ratio_max`` and
    (guard) ``gradwell/skipped_steps`` join that log's entry in ``trainer.state.log_history``
    and the ``logs`` later callbacks see (the printed logs among them). At the end of
    ``train`` one more entry holds ``gradwell/findings`` (the findings as dicts) and the
    ``gradwell/findings/<kind>`` counts.
    """

    def __init__(self, watch: bool | dict = True, guard: bool | dict = False, every: int = 1,
                 thresholds: Any = None, verbose: bool = True) -> None:
        super().__init__(watch, guard, every, thresholds, verbose)
        self._reset()

    def _reset(self) -> None:
        self._args: Any = None
        self._max_norm = 0.0
        self._losses: list[torch.Tensor] = []
        self._summed = False      # the model divided each micro-batch by the step's items
        self._scalars: dict[str, float] = {}
        self._hook: Any = None
        self._model_id: int | None = None
        self._state: Any = None

    # ------------------------------------------------------------------------ start and end
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any) -> None:
        self._check(args, state, model)
        inner = getattr(optimizer, "optimizer", optimizer)   # accelerate's wrapper -> torch's
        if getattr(lr_scheduler, "optimizer", None) is optimizer:
            inner = optimizer             # the Trainer built the scheduler on the wrapper
        self._findings = None
        try:
            self.session = Session(model, inner, lr_scheduler, self._watch, self._guard,
                                   self.every, scaler=getattr(optimizer, "scaler", None))
        except BaseException:
            _ACTIVE.pop(id(model), None)
            raise
        self._args, self._max_norm = args, float(args.max_grad_norm or 0.0)
        self._hook = model.register_forward_hook(self._capture_loss, with_kwargs=True)

    def _check(self, args: Any, state: Any, model: Any) -> None:
        other = _ACTIVE.get(id(model))
        if other is not None and other is not self:
            same_run = other._state is state    # the Trainer makes a new state per train()
            other._stop()                       # (else: left over from a run that failed)
            other.session = None
            if same_run:
                raise ValueError("two GradwellCallback objects watch this model (in one Trainer's "
                                 "callbacks); use one (it can watch and guard at once)")
        kind = _distributed_type()
        if kind not in SUPPORTED:
            raise ValueError(f"GradwellCallback supports one process and DDP, got accelerate's "
                             f"distributed type {kind} (DeepSpeed, FSDP and XLA keep gradients "
                             "sharded or out of reach)")
        if self._guard is not None and getattr(args, "fp16", False):
            raise ValueError("GradwellCallback(guard=True) does not support fp16=True: its "
                             "GradScaler already skips overflowing steps; use bf16=True or "
                             "guard=False")
        _ACTIVE[id(model)] = self
        self._model_id, self._state = id(model), state

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.session is None:
            return
        self._findings = self.session.findings(self.thresholds)
        entry = {**finding_metrics(self._findings),
                 PREFIX + "findings": [f.to_dict() for f in self._findings],
                 "step": state.global_step}
        state.log_history.append(entry)
        if self.verbose and state.is_world_process_zero:
            print(format_findings(self._findings))
        self._stop()

    def _stop(self) -> None:
        """Give ``max_grad_norm`` back, remove the hooks; idempotent."""
        if self._args is not None:
            self._args.max_grad_norm = self._max_norm
        if self._hook is not None:
            self._hook.remove()
        if self.session is not None:
            self.session.close()
        if self._model_id is not None and _ACTIVE.get(self._model_id) is self:
            del _ACTIVE[self._model_id]
        self._reset()

    # ------------------------------------------------------------------------------- steps
    def _capture_loss(self, module: Any, inputs: Any, kwargs: dict, output: Any) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self._losses.append(loss.detach().float().reshape(()))
            self._summed = kwargs.get("num_items_in_batch") is not None

    def _step_loss(self) -> torch.Tensor | None:
        """The step's loss: the micro-batches' mean, or their sum where the Trainer had the
        model divide each by the whole step's item count (``num_items_in_batch``, models that
        take loss kwargs: every Hugging Face LM); then, with ``average_tokens_across_devices``,
        that count is over all ranks, and times the world size the guard's mean over ranks is
        the step's mean."""
        losses, self._losses = self._losses, []
        if not losses:
            return None
        if not self._summed:
            return torch.stack(losses).mean()
        args = self._args
        world = args.world_size if getattr(args, "average_tokens_across_devices", False) else 1
        return torch.stack(losses).sum() * world

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.session is not None:
            self._losses = []
            args.max_grad_norm = 0.0      # the Trainer only measures; we clip (see above)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None,
                              lr_scheduler: Any = None, **kwargs: Any) -> None:
        if self.session is None:
            return
        args.max_grad_norm = self._max_norm
        if self.session.before_step(self._step_loss()) != "ok":
            if lr_scheduler is not None:
                skip_scheduler_step(lr_scheduler)
        elif self._max_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self._max_norm)

    def on_step_end(self, args: Any, state: Any, control: Any, lr_scheduler: Any = None,
                    **kwargs: Any) -> None:
        if self.session is None:
            return
        if lr_scheduler is not None:
            restore_scheduler_step(lr_scheduler)
        scalars = self.session.after_step()
        if PREFIX + "grad_norm" in scalars:     # a recorded step: its scalars replace the last
            self._scalars = scalars
        else:
            self._scalars.update(scalars)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
               **kwargs: Any) -> None:
        if self.session is None or logs is None or "loss" not in logs or not self._scalars:
            return
        logs.update(self._scalars)
        last = state.log_history[-1] if state.log_history else None
        if last is not None and last.get("step") == state.global_step and "loss" in last:
            last.update(self._scalars)


def _distributed_type() -> str:
    """accelerate's distributed type of this process (``"NO"`` without accelerate state)."""
    try:
        from accelerate.state import PartialState
    except ImportError:  # pragma: no cover - transformers' Trainer needs accelerate
        return "NO"
    state = PartialState()
    return str(getattr(state.distributed_type, "name", state.distributed_type))
