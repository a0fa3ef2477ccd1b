"""`Guard`: skip bad steps, roll back after repeated ones, and never lose a run to a NaN.

Per call of :meth:`Guard.step` (after ``loss.backward()``):

1. with a GradScaler, ``scaler.unscale_(optimizer)``: everything below sees true gradients;
2. the loss and the global gradient norm are read to the host (one synchronisation);
3. the step is *bad* if either is NaN/Inf, or if either is a spike: a robust z-score
   (median/MAD, see :mod:`gradwell.guard.spike`) above ``spike_z`` against recent healthy steps;
   Under DDP and FSDP2 the loss is averaged over ranks and the norm is the full gradient's, in
   one all-reduce: every rank sees the same numbers and takes the same decision below;
4. a good step: ``clip`` (if any), then ``optimizer.step()`` (``scaler.step`` + ``update``),
   then ``scheduler.step()``; status ``"ok"``;
5. a bad step: nothing is applied and the gradients are dropped: parameters, optimizer state and
   scheduler are bit-for-bit what they were (status ``"skipped"``). A GradScaler overflow with a
   finite loss is the scaler's normal business: skipped, but not counted as bad;
6. after ``max_bad_steps`` bad steps in a row, everything is restored from the last *trusted*
   snapshot and every learning rate is multiplied by ``lr_factor`` (status ``"rolled_back"``).

Snapshots: every ``snapshot_every`` good steps a *candidate* is taken. It becomes the rollback
target only after ``trust_after`` further good steps in a row; a bad step before then discards
it. So an update whose harm shows one step later (a learning-rate burst) is never in the
snapshot a rollback returns to.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .._distributed import agree, local, world
from ..clip.base import Clipper, check_clipper, clip_, grad_norms, total_norm
from .._checks import check_bool, check_int, check_number
from .checks import check_has_grads, check_models, check_monitor, with_grads
from .events import GuardEvent, to_finding, to_record
from .flagged import Flagged
from .sharded import snapshot_store
from .snapshot import SnapshotError, capture, restore, state_bytes
from .spike import LOG_NORM_FLOOR, LOSS_FLOOR, RobustZ

__all__ = ["Guard"]


def _paused(monitor: Any) -> Any:
    """``monitor.paused()`` (its hooks record nothing), or a no-op without a monitor."""
    pause = getattr(monitor, "paused", None)
    return pause() if callable(pause) else contextlib.nullcontext()


class Guard:
    """Skip non-finite and spiking steps; roll back and cut the learning rate when they persist.

    Args:
        model: the module being trained.
        optimizer: any ``torch.optim.Optimizer`` (torch's or gradwell's) over ``model``'s
            parameters.
        scheduler: an LR scheduler; the guard calls ``scheduler.step()`` after each good step
            (set ``step_scheduler=False`` for per-epoch schedulers) and restores it on rollback.
        scaler: a ``torch.amp.GradScaler``; the guard unscales, clips, steps and updates it.
        clip: a :mod:`gradwell.clip` clipper applied after unscaling and before the step (for
            optimizers without ``clip=``).
        snapshot_every: good steps between candidate snapshots.
        trust_after: good steps in a row after which a candidate becomes the rollback target.
        max_bad_steps: consecutive bad steps that trigger a rollback.
        lr_factor: in (0, 1]: each rollback multiplies every learning rate by it.
        spike_z: robust z-score above which loss or gradient norm is a spike; ``None``: only
            non-finite values are bad.
        spike_window: how many recent good steps the spike statistics use.
        spike_warmup: good steps before spike detection starts.
        snapshot_dir: keep snapshots as files there (atomic, checksummed writes) instead of in
            memory; for an FSDP2 model, as ``torch.distributed.checkpoint`` directories (each
            rank writes its own shards). A plain directory is locked for this Guard until
            :meth:`close` (or the end of the process); a second Guard on it raises
            ``SnapshotError``.
        resume: with ``snapshot_dir``: continue from the ``trusted.pt`` an earlier run left
            there (model, optimizer, scheduler, scaler, clipper and the guard's counters are
            restored). Without it, a directory holding a trusted snapshot is refused, so a
            restart never overwrites the state a crashed run left behind.
        max_rollbacks: consecutive rollbacks without a newly trusted snapshot in between after
            which the guard gives up with a RuntimeError (``None``: never).
        on_event: called with every :class:`~gradwell.guard.events.GuardEvent`.
        monitor: a ``gradwell.watch`` monitor: skips and rollbacks are added to its event log
            (``mon.history.events``, saved with it) as ``{"kind": "guard", ...}`` records.
            With ``scaler=`` it becomes the monitor's too (if it has none), so the monitor
            divides the loss scale out (``gradwell.watch(model, scaler=...)``).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                 scheduler: Any = None, scaler: Any = None, clip: Clipper | None = None,
                 snapshot_every: int = 100, trust_after: int = 10, max_bad_steps: int = 3,
                 lr_factor: float = 0.5, spike_z: float | None = 6.0, spike_window: int = 100,
                 spike_warmup: int = 20, snapshot_dir: str | os.PathLike[str] | None = None,
                 step_scheduler: bool = True, max_rollbacks: int | None = 10,
                 on_event: Callable[[GuardEvent], Any] | None = None,
                 monitor: Any = None, resume: bool = False) -> None:
        self._names = check_models(model, optimizer, scheduler, scaler)
        self.model, self.optimizer = model, optimizer
        self.scheduler, self.scaler = scheduler, scaler
        self.clip = check_clipper(clip)
        self.snapshot_every = check_int("snapshot_every", snapshot_every)
        self.trust_after = check_int("trust_after", trust_after)
        self.max_bad_steps = check_int("max_bad_steps", max_bad_steps)
        self.lr_factor = check_number("lr_factor", lr_factor, 0, 1, low_open=True)
        self.spike_z = check_number("spike_z", spike_z, 0, low_open=True, optional="off")
        check_int("spike_window", spike_window, minimum=3)
        check_int("spike_warmup", spike_warmup, minimum=3)
        self.max_rollbacks = None if max_rollbacks is None else check_int("max_rollbacks",
                                                                           max_rollbacks)
        self.step_scheduler = bool(step_scheduler)
        if on_event is not None and not callable(on_event):
            raise TypeError("on_event must be a function taking a GuardEvent, or None; got "
                            f"{on_event!r}")
        self.on_event = on_event
        self.monitor = check_monitor(monitor, scaler)
        self._loss_z = RobustZ(spike_window, spike_warmup, rel_floor=LOSS_FLOOR)
        self._norm_z = RobustZ(spike_window, spike_warmup, rel_floor=LOG_NORM_FLOOR, log=True)
        self.events: list[GuardEvent] = []
        self.steps = 0          #: calls of :meth:`step`
        self.good_steps = 0     #: steps applied since the start (rolled-back ones included)
        self.lr_scale = 1.0     #: product of the learning-rate cuts so far
        self.bad_in_a_row = 0
        self._pending_good = 0  # good steps in a row since the candidate was taken
        self._rollbacks_in_a_row = 0
        self._capture_due = False   # check(): take the candidate at the next call
        self._open_store(snapshot_dir, resume)
        self._flagged = Flagged(model, snapshot_dir)

    def _open_store(self, snapshot_dir: str | os.PathLike[str] | None, resume: bool) -> None:
        check_bool("resume", resume)
        if resume and snapshot_dir is None:
            raise ValueError("resume=True needs snapshot_dir (the directory an earlier run "
                             "wrote its trusted.pt to)")
        self._store = snapshot_store(snapshot_dir, self.model)  # FSDP2: sharded (DCP)
        try:
            if not getattr(self._store, "survivor", False):
                self._store.put("trusted", self._capture())
            elif not resume:
                raise SnapshotError(
                    f"snapshot_dir {snapshot_dir} holds trusted.pt from an earlier run; pass "
                    "resume=True to continue from it, or remove it (or choose another "
                    "snapshot_dir) to start fresh")
            else:
                extra = self._restore_trusted()
                self.lr_scale, self.steps = extra["lr_scale"], extra.get("steps", 0)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release ``snapshot_dir`` for another Guard (its files stay, for ``resume=True``)
        and remove the guard's forward pre-hook from the model."""
        if hasattr(self, "_flagged"):
            self._flagged.close()
        if hasattr(self._store, "close"):
            self._store.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------ the step
    def step(self, loss: Tensor | float, replay: Any = None, samples: Any = None) -> str:
        """Check this step's loss and gradients, then step, skip or roll back.

        Call after ``loss.backward()`` (``scaler.scale(loss).backward()`` with AMP), passing
        the unscaled ``loss``. Returns ``"ok"``, ``"skipped"`` or ``"rolled_back"``.

        Args:
            replay: opt-in triage of a non-finite step: a zero-argument callable recomputing
                the loss (``lambda: loss_fn(model(x), y)``) or a
                :class:`~gradwell.guard.triage.Batch`, which also names culprit samples by
                their per-sample gradient norms. The step is re-run once under
                ``gradwell.locate``; ``detail["triage"]`` is ``"data"``, ``"reproducible"``
                or ``"transient"`` and ``detail["origin"]`` where the NaN was born.
            samples: the ids of this batch's samples (a sequence, a tensor, or a
                :class:`~gradwell.guard.samples.SampleTracker`, passed every step): a refused
                step writes them to the skip list (``snapshot_dir/skipped.jsonl``).
        """
        params = check_has_grads(self.optimizer)
        self.steps += 1
        ids = self._flagged.ids(samples, replay)
        loss_v, norm_v, norms = self._measure(loss, params)
        reason, detail = self._judge(loss_v, norm_v, params, norms)
        if reason is None:
            self._reserve_snapshot()
            self._apply(params)
            self._after_good(loss_v, norm_v)
            self._flagged.good(replay)
            return "ok"
        with _paused(self.monitor):   # a replay's forwards belong to no step
            detail = {**detail, **self._flagged.inspect(reason, replay, ids, self.spike_z)}
        status = self._after_bad(reason, loss_v, norm_v, detail)
        self._flagged.record(self.steps - 1, status, reason, ids, detail)
        return status

    def check(self, loss: Tensor | float | None = None) -> str:
        """Judge this step like :meth:`step` but leave applying it to the caller.

        For training loops that own the optimizer step (Lightning, the Hugging Face
        ``Trainer``; see :mod:`gradwell.integrations`). On ``"ok"`` nothing was changed: the
        caller clips and steps the optimizer and the scheduler itself. On ``"skipped"`` or
        ``"rolled_back"`` the gradients were dropped (set to ``None``, so torch optimizers
        leave every parameter and its state alone) and the caller must not step the
        scheduler. ``loss=None``: judge the gradients only. A candidate snapshot due on an
        ``"ok"`` step is taken at the next call, once the caller has applied that step: the
        same state :meth:`step` would capture.
        """
        if self._capture_due:
            self._capture_due = False
            self._store.put("candidate", self._capture())
            self._pending_good = 0
        self.steps += 1
        params = with_grads(self.optimizer)
        given, loss = loss is not None, 0.0 if loss is None else loss
        loss_v, norm_v, norms = self._measure(loss, params)
        loss_v = loss_v if given else None
        reason, detail = self._judge(loss_v, norm_v, params, norms)
        loss_v = math.nan if loss_v is None else loss_v
        if reason is None:
            self._after_good(loss_v, norm_v, defer=True)
            return "ok"
        return self._after_bad(reason, loss_v, norm_v, detail)

    def _measure(self, loss: Tensor | float, params: list[Tensor]
                 ) -> tuple[float, float, list[Tensor]]:
        """Unscale (AMP), then the loss and the gradient norms every rank agrees on, read
        once: ``(loss, total norm, per-tensor norms)``."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norms = grad_norms([local(p.grad) for p in params], wide_half=True)  # float16: exact
        loss, norms = self._agree(loss, params, norms)
        loss_v, norm_v = self._read(loss, total_norm(norms) if norms else None)
        return loss_v, norm_v, norms

    def _agree(self, loss: Tensor | float, params: list[Tensor], norms: list[Tensor]
               ) -> tuple[Tensor, list[Tensor]]:
        """The loss averaged over ranks and full-tensor gradient norms (FSDP2), in one
        all-reduce: every rank judges the same numbers, so every rank decides the same."""
        if not isinstance(loss, Tensor):
            if not isinstance(loss, (int, float)) or isinstance(loss, bool):
                raise TypeError(f"loss must be a tensor or a number, got {type(loss).__qualname__}")
            loss = torch.tensor(float(loss))
        if loss.numel() != 1:
            raise ValueError(f"loss must hold one value, got shape {tuple(loss.shape)}; reduce "
                             "it (e.g. loss.mean()) before guard.step")
        _, size = world()
        if size == 1:
            return loss, norms
        summed = loss.detach().reshape(1).to(torch.float64)
        norms, summed = agree(params, norms, summed)
        return summed.reshape(()) / size, norms

    def _read(self, loss: Tensor, total: Tensor | None) -> tuple[float, float]:
        """Loss and gradient norm as floats, with one host synchronisation."""
        values = [loss.detach().reshape(()).float()]
        if total is not None:
            values.append(total.detach().float().to(values[0].device))
        out = torch.stack(values).tolist()
        return out[0], out[1] if total is not None else 0.0

    def _judge(self, loss_v: float | None, norm_v: float, params: list[Tensor],
               norms: list[Tensor]) -> tuple[str | None, dict[str, Any]]:
        if loss_v is not None and not math.isfinite(loss_v):
            return "nonfinite_loss", {}
        if not math.isfinite(norm_v):
            reason = "amp_overflow" if self._scaling() else "nonfinite_grad"
            return reason, {"nonfinite_layers": self._nonfinite_layers(params, norms)}
        if self.spike_z is not None:
            for name, det, value in (("loss_spike", self._loss_z, loss_v),
                                     ("grad_spike", self._norm_z, norm_v)):
                z = None if value is None else det.score(value)
                if z is not None and z > self.spike_z:
                    return name, {"z": round(z, 2), "spike_z": self.spike_z}
        return None, {}

    def _reserve_snapshot(self) -> None:
        """When this step will be followed by a candidate snapshot, make sure it fits on disk
        before the step is applied (a full disk then changes nothing)."""
        if not self._store.has("candidate") and (self.good_steps + 1) % self.snapshot_every == 0:
            need = max(getattr(self._store, "last_size", 0), state_bytes(self.model, self.optimizer))
            if hasattr(self._store, "reserve"):
                self._store.reserve("candidate", need + 2**16)

    def _apply(self, params: list[Tensor]) -> None:
        if self.clip is not None and params:
            clip_(params, self.clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None and self.step_scheduler:
            self.scheduler.step()

    def _after_good(self, loss_v: float, norm_v: float, defer: bool = False) -> None:
        self.good_steps += 1
        self.bad_in_a_row = 0
        self._loss_z.add(loss_v)
        self._norm_z.add(norm_v)
        if self._store.has("candidate"):
            self._pending_good += 1
            if self._pending_good >= self.trust_after:
                self._store.promote()
                self._rollbacks_in_a_row = 0
                self._event("trusted", "healthy", loss_v, norm_v,
                            {"snapshot_good_step": self.good_steps - self._pending_good})
        elif self.good_steps % self.snapshot_every == 0:
            if defer:                 # check(): the caller has not applied this step yet
                self._capture_due = True
                return
            self._store.put("candidate", self._capture())
            self._pending_good = 0

    def _after_bad(self, reason: str, loss_v: float, norm_v: float,
                   detail: dict[str, Any]) -> str:
        if self.scaler is not None:
            self.scaler.update()  # backs the scale off after an overflow; resets unscale_
        self.optimizer.zero_grad(set_to_none=True)
        self._event("skipped", reason, loss_v, norm_v, detail)
        if reason == "amp_overflow":
            return "skipped"
        self.bad_in_a_row += 1
        if self._store.has("candidate"):
            self._store.drop("candidate")
        if self.bad_in_a_row < self.max_bad_steps:
            return "skipped"
        self.rollback(loss_v, norm_v)
        return "rolled_back"

    # ------------------------------------------------------------------ snapshots and rollback
    def _capture(self) -> dict[str, Any]:
        extra = {"lr_scale": self.lr_scale, "good_steps": self.good_steps, "steps": self.steps,
                 "loss_z": self._loss_z.state_dict(), "norm_z": self._norm_z.state_dict(),
                 "clip": self.clip.state_dict() if self.clip is not None else {}}
        return capture(self.model, self.optimizer, self.scheduler, self.scaler, extra)

    def rollback(self, loss_v: float = math.nan, norm_v: float = math.nan) -> None:
        """Restore the last trusted snapshot and cut every learning rate by ``lr_factor``."""
        self._rollbacks_in_a_row += 1
        if self.max_rollbacks is not None and self._rollbacks_in_a_row > self.max_rollbacks:
            raise RuntimeError(
                f"gradwell.guard: {self.max_rollbacks} rollbacks in a row did not make training "
                f"stable (learning rates now x{self.lr_scale:.3g}); last events:\n"
                + "\n".join(map(str, self.events[-5:])))
        extra = self._restore_trusted()
        self.lr_scale *= self.lr_factor
        self._scale_lrs(self.lr_scale / extra["lr_scale"])
        self.bad_in_a_row = 0
        self.optimizer.zero_grad(set_to_none=True)
        self._event("rolled_back", "max_bad_steps", loss_v, norm_v,
                    {"lr_scale": self.lr_scale, "to_good_step": self.good_steps})

    def _restore_trusted(self) -> dict[str, Any]:
        """Load the trusted snapshot into the live objects and the guard; return its extra."""
        extra = restore(self._store.get("trusted"), self.model, self.optimizer,
                        self.scheduler, self.scaler)
        self._store.drop("candidate")
        self._capture_due = False
        self.good_steps = extra["good_steps"]
        self._loss_z.load_state_dict(extra["loss_z"])
        self._norm_z.load_state_dict(extra["norm_z"])
        if self.clip is not None:
            self.clip.load_state_dict(extra["clip"])
        return extra

    def _scale_lrs(self, factor: float) -> None:
        """Multiply the learning rates of the optimizer (and the scheduler's bases) by factor."""
        for group in self.optimizer.param_groups:
            for key in ("lr", "initial_lr"):
                if key in group:
                    if isinstance(group[key], Tensor):
                        group[key].mul_(factor)
                    else:
                        group[key] = group[key] * factor
        sched = self.scheduler
        if sched is not None:
            for attr in ("base_lrs", "_last_lr"):
                if isinstance(getattr(sched, attr, None), list):
                    setattr(sched, attr, [v * factor for v in getattr(sched, attr)])

    # ------------------------------------------------------------------------------ reporting
    def _event(self, action: str, reason: str, loss_v: float, norm_v: float,
               detail: dict[str, Any]) -> None:
        event = GuardEvent(self.steps - 1, action, reason, loss_v, norm_v, detail)
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)
        if self.monitor is not None and action != "trusted":
            self.monitor.history.add_event(to_record(event))
            if action == "skipped" and callable(getattr(self.monitor, "discard", None)):
                self.monitor.discard()        # its statistics belong to no applied step

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """The skip list: one record per refused step (and rollback) with its sample ids."""
        return self._flagged.skips.lines

    def findings(self) -> list[Any]:
        """Skips and rollbacks as ``gradwell.diagnose.Finding`` objects (see ``events``)."""
        return [f for f in map(to_finding, self.events) if f is not None]

    def _nonfinite_layers(self, params: list[Tensor], norms: list[Tensor]) -> list[str]:
        """Names of the modules whose gradients hold NaN/Inf (a bad step only: reads norms)."""
        if not norms:
            return []
        bad = (~torch.isfinite(torch.stack([n.float().cpu() for n in norms]))).tolist()
        layers = []
        for p, b in zip(params, bad):
            name = self._names.get(id(p), "?").rpartition(".")[0] or self._names.get(id(p), "?")
            if b and name not in layers:
                layers.append(name)
        return layers

    def _scaling(self) -> bool:
        return self.scaler is not None and bool(getattr(self.scaler, "is_enabled", lambda: True)())

    @property
    def snapshot_dir(self) -> str | None:
        """Where snapshots are written, or ``None`` when they live in memory."""
        return None if self._store.directory is None else str(self._store.directory)

    def __repr__(self) -> str:
        return (f"Guard(steps={self.steps}, good_steps={self.good_steps}, "
                f"events={len(self.events)}, lr_scale={self.lr_scale:.3g})")
