"""What both framework callbacks share: the monitor and guard of one run, the logged scalars,
the findings report, and the exact skip of a scheduler step. Imports no framework.

The callbacks call :meth:`Session.before_step` at the one point of the framework's step where
the gradients are final (after backward, the DDP all-reduce and AMP unscaling) and not yet
clipped, and :meth:`Session.after_step` once the optimizer (and scheduler) stepped.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor, nn

from .._checks import check_bool, check_int

__all__ = ["Session", "CallbackBase", "check_options", "skip_scheduler_step",
           "restore_scheduler_step", "finding_metrics", "format_findings", "PREFIX"]

#: Every key the callbacks log starts with this.
PREFIX = "gradwell/"


def check_options(watch: Any, guard: Any, every: Any, verbose: Any) -> tuple[dict | None,
                                                                            dict | None]:
    """Validate a callback's arguments; returns the watch and guard keyword dicts (None: off)."""
    check_int("every", every, 1, " (record one step in `every`)")
    check_bool("verbose", verbose)
    out = []
    for name, value, target in (("watch", watch, "gradwell.watch"),
                                ("guard", guard, "gradwell.guard.Guard")):
        if isinstance(value, bool):
            out.append({} if value else None)
        elif isinstance(value, dict) and all(isinstance(k, str) for k in value):
            out.append(dict(value))
        else:
            raise TypeError(f"{name} must be True, False or a dict of keyword arguments for "
                            f"{target}, got {type(value).__qualname__}")
    if out[0] is not None and ("every" in out[0] or "optimizer" in out[0]):
        raise ValueError("watch= must not set 'every' or 'optimizer': pass every= to the "
                         "callback; the callback drives the monitor itself")
    if out[1] is not None and any(k in out[1] for k in ("scheduler", "scaler", "monitor")):
        raise ValueError("guard= must not set 'scheduler', 'scaler' or 'monitor': the callback "
                         "takes them from the trainer")
    if out[0] is None and out[1] is None:
        raise ValueError("watch=False and guard=False: the callback would do nothing")
    return out[0], out[1]


class CallbackBase:
    """The arguments and ``findings()`` both framework callbacks share (a mixin)."""

    def __init__(self, watch: bool | dict = True, guard: bool | dict = False, every: int = 1,
                 thresholds: Any = None, verbose: bool = True) -> None:
        self._watch, self._guard = check_options(watch, guard, every, verbose)
        self.every, self.thresholds, self.verbose = every, thresholds, verbose
        self.session: Session | None = None
        self._findings: list[Any] | None = None

    def findings(self) -> list[Any]:
        """The findings of the last run (during it: so far), worst first; then the guard's
        skips and rollbacks (:class:`gradwell.diagnose.Finding`)."""
        if self._findings is not None:
            return list(self._findings)
        return [] if self.session is None else self.session.findings(self.thresholds)


class Session:
    """The monitor and the guard of one ``fit`` / ``train`` run.

    Args:
        model: the module being trained (not a DDP wrapper).
        optimizer: the torch optimizer that steps it (needed with a guard).
        scheduler: the per-step LR scheduler the guard restores on rollback, or None.
        watch, guard: keyword arguments for :func:`gradwell.watch` / :class:`Guard`, or None.
        every: record one optimizer step in ``every``.
        scaler: the framework's ``torch.amp.GradScaler`` (float16 mixed precision), for the
            monitor: its overflow steps are events, not findings.
    """

    def __init__(self, model: nn.Module, optimizer: Any, scheduler: Any,
                 watch: dict | None, guard: dict | None, every: int, scaler: Any = None) -> None:
        from ..watch import watch as start_watch
        self.every = every
        self.monitor = (None if watch is None
                        else start_watch(model, every=every, **{"scaler": scaler, **watch}))
        self.guard = None
        if guard is not None:
            from ..guard import Guard
            try:
                self.guard = Guard(model, optimizer, scheduler=scheduler, step_scheduler=False,
                                   monitor=self.monitor, **guard)
            except BaseException:
                self.close()
                raise
        self.steps = 0          # optimizer steps seen
        self.skipped = 0        # of them skipped or rolled back by the guard
        self.last_status = "ok"

    def before_step(self, loss: Tensor | None) -> str:
        """Record the final, unclipped gradients and judge the step: ``"ok"``, ``"skipped"``
        or ``"rolled_back"`` (then the gradients are gone and nothing may step)."""
        loss = None if loss is None else loss.detach().reshape(()).float()
        if self.monitor is not None:
            self.monitor.step(loss)
        status = "ok"
        if self.guard is not None:
            status = self.guard.check(loss)      # averaged over DDP ranks by the guard
            self.skipped += status != "ok"
        self.steps += 1
        self.last_status = status
        return status

    def after_step(self) -> dict[str, float]:
        """The scalars of the step just taken (empty when it was not recorded)."""
        out: dict[str, float] = {}
        if self.guard is not None:
            out[PREFIX + "skipped_steps"] = float(self.skipped)
        if self.monitor is None or (self.steps - 1) % self.every:
            return out
        rec = self.monitor.history.latest()   # measures the update of the step just taken
        if rec is not None:
            out.update(step_scalars(rec))
        return out

    def findings(self, thresholds: Any = None) -> list[Any]:
        """The monitor's findings (worst first), then the guard's skips and rollbacks."""
        found = [] if self.monitor is None else self.monitor.findings(thresholds)
        return found + ([] if self.guard is None else self.guard.findings())

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()


def step_scalars(rec: dict[str, Any]) -> dict[str, float]:
    """Per-step scalars from a monitor record: the total gradient norm, the smallest and largest
    relative gradient ``||g_l|| / ||w_l||`` over layers, the largest update ratio (if measured)."""
    out = {PREFIX + "grad_norm": float(rec["total_grad_norm"]["total"])}
    grad = np.array(list(rec["grad_norm"].values()), dtype=np.float64)
    weight = np.array(list(rec["weight_norm"].values()), dtype=np.float64)
    live = weight > 0
    if live.any():
        rel = grad[live] / weight[live]
        bad = not np.isfinite(rel).all()
        out[PREFIX + "rel_grad_min"] = math.nan if bad else float(rel.min())
        out[PREFIX + "rel_grad_max"] = math.nan if bad else float(rel.max())
    update = np.array(list(rec["update_ratio"].values()), dtype=np.float64)
    if np.isfinite(update).any():
        out[PREFIX + "update_ratio_max"] = float(np.nanmax(update))
    return out


def finding_metrics(findings: list[Any]) -> dict[str, float]:
    """``gradwell/findings`` (how many) and ``gradwell/findings/<kind>`` for every kind."""
    from ..diagnose.finding import KINDS
    out = {PREFIX + "findings": float(len(findings))}
    for kind in KINDS:
        out[f"{PREFIX}findings/{kind}"] = float(sum(f.kind == kind for f in findings))
    return out


def format_findings(findings: list[Any]) -> str:
    """The findings as plain text, one block each (or a line saying there are none)."""
    if not findings:
        return "gradwell: no findings (gradients looked healthy)"
    return "gradwell findings:\n" + "\n".join(str(f) for f in findings)


def skip_scheduler_step(scheduler: Any) -> None:
    """Make the next ``scheduler.step()`` do nothing (once): a skipped batch must not advance
    the learning-rate schedule. Undone by that call itself or :func:`restore_scheduler_step`."""
    if getattr(scheduler.step, "_gradwell_skip", False):
        return
    previous = vars(scheduler).get("step")      # None: the class's own method

    def skipped_step(*args: Any, **kwargs: Any) -> None:
        restore_scheduler_step(scheduler)

    skipped_step._gradwell_skip = True          # type: ignore[attr-defined]
    skipped_step._gradwell_previous = previous  # type: ignore[attr-defined]
    scheduler.step = skipped_step


def restore_scheduler_step(scheduler: Any) -> None:
    """Remove a pending :func:`skip_scheduler_step` (no-op if none is pending)."""
    step = vars(scheduler).get("step")
    if getattr(step, "_gradwell_skip", False):
        previous = step._gradwell_previous
        if previous is None:
            del scheduler.step
        else:
            scheduler.step = previous
