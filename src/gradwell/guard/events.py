"""What the guard saw: events, and the same events as findings ``gradwell.watch`` can show.

A :class:`GuardEvent` is one decision (a skipped step, a rollback, a newly trusted snapshot).
:func:`to_finding` turns a skip or a rollback into a :class:`gradwell.diagnose.Finding` (the
class ``mon.findings()`` returns): ``kind`` ``"nonfinite"`` or ``"exploding"``, ``layer``,
``step``, ``severity`` (``"info"`` for an AMP overflow, ``"warning"`` for a skip, ``"error"``
for a rollback), ``evidence`` (with ``source = "guard"`` and a one-line ``summary``) and
``remedies``. :func:`to_record` is the JSON-able dict the guard adds to a monitor's history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["GuardEvent", "to_finding", "to_record", "REASONS"]

#: Why a step was not taken, and the finding kind each reason maps to.
REASONS = {
    "nonfinite_loss": "nonfinite",
    "nonfinite_grad": "nonfinite",
    "loss_spike": "exploding",
    "grad_spike": "exploding",
    "amp_overflow": "nonfinite",
}

#: the first remedy of a non-finite skip; a step the guard replayed has had it
_FIND = ("find where the NaN is born: guard.step(loss, replay=lambda: loss_fn(model(x), y)) "
         "or with gradwell.locate(model)")
#: the first remedy of a step whose replay stayed finite
_TRANSIENT = ("the replay of this step was finite: the NaN came from outside the replayed "
              "computation (a race, a hardware fault, or an input or state that changed "
              "between the step and its replay); if it recurs, arm gradwell.locate(model) "
              "around every step to catch it as it happens")

_REMEDIES = {
    "nonfinite_loss": [_FIND,
                       "check the batch for NaN/Inf inputs or labels",
                       "look for log(0), division by zero or overflow in the loss",
                       "lower the learning rate"],
    "nonfinite_grad": [_FIND,
                       "clip gradients: clip=gradwell.clip.GlobalNorm(1.0) or ZClip()",
                       "lower the learning rate",
                       "check custom autograd functions and sqrt/log of zero"],
    "loss_spike": ["lower the learning rate or lengthen warmup",
                   "clip gradients adaptively: clip=gradwell.clip.ZClip() or AutoClip()",
                   "check the batch for outliers or badly scaled inputs"],
    "grad_spike": ["clip gradients adaptively: clip=gradwell.clip.ZClip() or AutoClip()",
                   "lower the learning rate",
                   "check the batch for outliers or badly scaled inputs"],
    "amp_overflow": ["nothing to do if rare: GradScaler lowers its scale after an overflow",
                     "use bfloat16 autocast, which does not overflow like float16"],
    "rollback": ["the learning rate was cut; if rollbacks repeat, lower it for good",
                 "clip gradients: clip=gradwell.clip.ZClip() or GlobalNorm(1.0)",
                 "add normalisation or residual connections to deep stacks"],
}


@dataclass(frozen=True)
class GuardEvent:
    """One guard decision.

    Attributes:
        step: which call of ``guard.step`` it was, counting from 0 (like ``gradwell.watch``):
            the index of the batch in a loop that calls ``guard.step`` once per batch.
        action: ``"skipped"``, ``"rolled_back"`` or ``"trusted"`` (a snapshot became the
            rollback target).
        reason: for a skip, a key of :data:`REASONS`; for a rollback, ``"max_bad_steps"``;
            for ``"trusted"``, ``"healthy"``.
        loss: the loss of the step (``nan`` where not applicable).
        grad_norm: the global gradient 2-norm of the step, after unscaling.
        detail: anything else: z-scores, offending layers, the new learning-rate scale.
    """

    step: int
    action: str
    reason: str
    loss: float = float("nan")
    grad_norm: float = float("nan")
    detail: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.detail.items())
        return (f"step {self.step}: {self.action} ({self.reason}); loss={self.loss:.4g}, "
                f"grad_norm={self.grad_norm:.4g}" + (f"; {extra}" if extra else ""))


_SUMMARIES = {
    "nonfinite_loss": "step skipped: the loss is NaN/Inf",
    "nonfinite_grad": "step skipped: gradients hold NaN/Inf",
    "loss_spike": "step skipped: loss spike",
    "grad_spike": "step skipped: gradient-norm spike",
    "amp_overflow": "step skipped: float16 overflow, GradScaler lowered its scale",
}


def to_finding(event: GuardEvent) -> Any:
    """The ``gradwell.diagnose.Finding`` for a skip or rollback; ``None`` for bookkeeping."""
    from ..diagnose.finding import Finding
    if event.action == "skipped":
        kind = REASONS[event.reason]
        severity = "info" if event.reason == "amp_overflow" else "warning"
        remedies, summary = _REMEDIES[event.reason], _SUMMARIES[event.reason]
    elif event.action == "rolled_back":
        kind, severity, remedies = "exploding", "error", _REMEDIES["rollback"]
        summary = (f"rolled back to good step {event.detail.get('to_good_step')} after repeated "
                   f"bad steps; learning rates now x{event.detail.get('lr_scale', 1.0):.3g}")
    else:
        return None
    layers = event.detail.get("nonfinite_layers") or []
    origin = event.detail.get("origin")
    if "triage" in event.detail:  # the guard replayed the step under gradwell.locate
        summary += f"; replay: {event.detail['triage']}"
        remedies = [r for r in remedies if r != _FIND]
        if origin:
            summary += f" - {origin['text']}"
            remedies = [origin["remedy"], *remedies]
            layers = [origin["module"]] if origin.get("module") else layers
        elif event.detail["triage"] == "transient":
            remedies = [_TRANSIENT, *remedies]
    evidence = {"source": "guard", "summary": summary, "reason": event.reason,
                "loss": event.loss, "grad_norm": event.grad_norm, **event.detail}
    return Finding(kind=kind, layer=layers[0] if layers else None, step=event.step,
                   severity=severity, evidence=evidence, remedies=list(remedies))


def to_record(event: GuardEvent) -> dict[str, Any]:
    """``event`` as a JSON-able dict with ``kind = "guard"`` (for a monitor's event log)."""
    return {"kind": "guard", "step": event.step, "action": event.action, "reason": event.reason,
            "loss": event.loss, "grad_norm": event.grad_norm, **event.detail}
