"""`GradwellCallback` for PyTorch Lightning (``pip install gradwell[lightning]``).

>>> trainer = lightning.pytorch.Trainer(callbacks=[GradwellCallback(guard=True)])
>>> trainer.fit(model); callback.findings()

Where it reads the gradients: Lightning 2.x runs the training closure (forward, backward, the
DDP all-reduce) inside ``optimizer.step(closure)``, then - in ``Precision._after_closure`` -
calls ``on_before_optimizer_step`` and only *then* clips (``gradient_clip_val``); with
``precision="16-mixed"`` the GradScaler unscales before that hook. So the callback sees final,
unscaled and not yet clipped gradients there, once per optimizer step (after the last of
``accumulate_grad_batches`` micro-batches). An optimizer's own step pre-hooks would be too
early: they fire before the closure runs.

A skip (``guard=True``) sets every gradient to ``None``: Lightning's clipping and the torch
optimizer then leave every parameter and its state alone, and the next ``step()`` of each
per-step LR scheduler is dropped. ``trainer.global_step`` still counts the batch.
"""

from __future__ import annotations

from typing import Any

import torch

try:
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import (DDPStrategy, DeepSpeedStrategy, FSDPStrategy,
                                              SingleDeviceStrategy, SingleDeviceXLAStrategy,
                                              XLAStrategy)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("gradwell.integrations.lightning needs Lightning: "
                      "pip install 'gradwell[lightning]'") from exc

from ..watch.handover import loss_scale
from ._core import (CallbackBase, Session, finding_metrics, format_findings,
                    restore_scheduler_step, skip_scheduler_step)

__all__ = ["GradwellCallback"]

_GUARD_STRATEGIES = (SingleDeviceStrategy, DDPStrategy)
#: strategies whose gradients are not the parameters' own (DeepSpeed's and FSDP1's flat
#: shards, XLA's device tensors): the monitor's per-layer norms would be of shards, unreduced
_NO_STRATEGIES = (DeepSpeedStrategy, FSDPStrategy, XLAStrategy, SingleDeviceXLAStrategy)


class GradwellCallback(CallbackBase, pl.Callback):
    """Watch (and optionally guard) a LightningModule's gradients during ``fit``.

    Args:
        watch: attach :func:`gradwell.watch` (``True``, or a dict of its keyword arguments,
            e.g. ``{"activations": False}``).
        guard: skip non-finite or spiking steps exactly and roll back as
            :class:`gradwell.guard.Guard` does (``True``, or a dict of its keyword arguments,
            e.g. ``{"spike_z": None}``). Needs automatic optimization, the single-device or
            DDP strategy, and no GradScaler (``precision="16-mixed"``: use ``"bf16-mixed"``).
        every: record one optimizer step in ``every``.
        thresholds: :class:`gradwell.diagnose` thresholds for the findings.
        verbose: print the findings at the end of ``fit`` (rank 0).

    Logged every recorded step, at its own step, to every logger (``trainer.loggers``;
    ``every`` sets how often, Lightning's ``log_every_n_steps`` does not apply):
    ``gradwell/grad_norm`` (total, before Lightning's clipping), ``gradwell/rel_grad_min`` and
    ``gradwell/rel_grad_max`` (``||g|| / ||w||`` over layers), ``gradwell/update_ratio_max``
    (when measured) and, with a guard, ``gradwell/skipped_steps``. At the end of ``fit``:
    ``gradwell/findings`` and ``gradwell/findings/<kind>`` counts (TensorBoard also gets the
    text).
    """

    def __init__(self, watch: bool | dict = True, guard: bool | dict = False, every: int = 1,
                 thresholds: Any = None, verbose: bool = True) -> None:
        super().__init__(watch, guard, every, thresholds, verbose)
        self._loss: torch.Tensor | None = None
        self._parts = 0          # backward calls summed into _loss
        self._schedulers: list[Any] = []
        self._logged = -1

    # ------------------------------------------------------------------------ start and end
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._check(trainer, pl_module)
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        self._schedulers = [c.scheduler for c in trainer.lr_scheduler_configs
                            if c.interval == "step"]
        self._findings, self._loss, self._parts, self._logged = None, None, 0, -1
        self.session = Session(pl_module, optimizer,
                               self._schedulers[0] if self._schedulers else None,
                               self._watch, self._guard, self.every,
                               scaler=getattr(trainer.precision_plugin, "scaler", None))

    def _check(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        mine = [c for c in trainer.callbacks if isinstance(c, GradwellCallback)]
        if len(mine) > 1:
            raise ValueError(f"{len(mine)} GradwellCallback objects were given to the Trainer; "
                             "use one (it can watch and guard at once)")
        strategy = trainer.strategy
        if isinstance(strategy, _NO_STRATEGIES):
            raise ValueError(f"GradwellCallback does not support {type(strategy).__name__}: the "
                             "gradients are not the parameters' own there (flat shards or "
                             "device tensors); under FSDP2 (torch.distributed.fsdp.fully_shard) "
                             "use gradwell.watch(model) in your own loop (docs/distributed.md)")
        if self._guard is None:
            return
        where = "GradwellCallback(guard=True)"
        if not isinstance(strategy, _GUARD_STRATEGIES):
            raise ValueError(f"{where} supports the single-device and DDP strategies, got "
                             f"{type(strategy).__name__}; use guard=False (watch only)")
        if not pl_module.automatic_optimization:
            raise ValueError(f"{where} needs automatic optimization (the LightningModule sets "
                             "automatic_optimization = False); call gradwell.guard.Guard.step "
                             "in your training_step instead")
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            raise ValueError(f"{where} does not support a GradScaler (precision='16-mixed'): "
                             "the scaler already skips overflowing steps; use "
                             "precision='bf16-mixed' or guard=False")
        steps = [c for c in trainer.lr_scheduler_configs if c.interval == "step"]
        if len(steps) > 1 or any(c.reduce_on_plateau for c in steps):
            raise ValueError(f"{where} supports at most one per-step LR scheduler and no "
                             "per-step ReduceLROnPlateau")

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.session is None:
            return
        self._findings = self.session.findings(self.thresholds)
        text = format_findings(self._findings)
        for logger in trainer.loggers:
            logger.log_metrics(finding_metrics(self._findings), step=trainer.global_step)
            add_text = getattr(getattr(logger, "experiment", None), "add_text", None)
            if callable(add_text) and trainer.is_global_zero:
                add_text("gradwell/findings", text.replace("\n", "  \n"), trainer.global_step)
        if self.verbose and trainer.is_global_zero:
            print(text)

    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                 stage: str) -> None:
        for s in self._schedulers:
            restore_scheduler_step(s)
        if self.session is not None:
            self.session.close()

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                     exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "fit")

    # ------------------------------------------------------------------------------- steps
    def on_before_backward(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           loss: torch.Tensor) -> None:
        # Lightning divided it by accumulate_grad_batches (automatic optimization), also in
        # an epoch's last, shorter window (see _step_loss), and with a GradScaler
        # ("16-mixed") multiplied it by the scale already.
        loss = loss.detach().float()
        scale = loss_scale(getattr(trainer.precision_plugin, "scaler", None), loss.device)
        if scale is not None:
            loss = (loss / scale).float()
        self._loss = loss if self._loss is None else self._loss + loss
        self._parts += 1

    def _step_loss(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule"
                   ) -> torch.Tensor | None:
        """The step's loss: the mean over its micro-batches (automatic optimization), the sum
        of what was backpropagated (manual), None with several optimizers (each has its own
        objective: together they make no one loss series)."""
        loss, parts, self._loss, self._parts = self._loss, self._parts, None, 0
        if loss is None or len(trainer.optimizers) > 1:
            return None
        if pl_module.automatic_optimization:
            loss = loss * (trainer.accumulate_grad_batches / parts)
        return loss

    def on_before_optimizer_step(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.session is None:
            return
        if self.session.before_step(self._step_loss(trainer, pl_module)) != "ok":
            for s in self._schedulers:
                skip_scheduler_step(s)

    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                             batch: Any, batch_idx: int) -> None:
        for s in self._schedulers:   # a skip belongs to its own batch only
            restore_scheduler_step(s)

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        session = self.session
        if session is None or session.steps == self._logged:
            return
        self._logged = session.steps
        scalars = session.after_step()
        if scalars:   # not pl_module.log: it would repeat a key's last value on later steps
            step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped",
                           trainer.global_step)     # the step Lightning logs this batch at
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=step)
