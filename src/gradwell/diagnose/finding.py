"""`Finding`: one diagnosed problem, with the evidence that shows it and what to change."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .._modules import ROOT

__all__ = ["Finding", "KINDS", "SEVERITIES"]

KINDS = ("nonfinite", "divergence", "exploding", "vanishing", "attention_logits",
         "output_logits", "saturation", "dead_units", "adam_epsilon", "unobserved")
SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """A diagnosed problem.

    Attributes:
        kind: one of ``"vanishing"``, ``"exploding"``, ``"nonfinite"``, ``"divergence"``
            (learning rate too high), ``"attention_logits"`` (attention-logit growth),
            ``"output_logits"`` (output-logit divergence), ``"saturation"``, ``"dead_units"``,
            ``"adam_epsilon"`` (updates damped by Adam's eps), ``"unobserved"`` (watched
            modules whose hooks never fired).
        layer: the qualified name of the layer (or activation module) most affected, or None
            when the problem is model-wide (e.g. a spike of the total gradient norm).
        step: the first recorded step at which the problem was seen.
        severity: ``"error"`` (training is broken or about to be), ``"warning"``, or
            ``"info"`` (worth knowing, not hurting training now).
        evidence: the numbers behind the verdict (JSON-able).
        remedies: concrete changes, most likely to help first.
    """

    kind: str
    layer: str | None
    step: int
    severity: str
    evidence: dict[str, Any] = field(default_factory=dict)
    remedies: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    @property
    def message(self) -> str:
        """One line: what, where and when."""
        where = (" in the model's own parameters" if self.layer == ROOT   # not a submodule's
                 else f" in {self.layer}" if self.layer else "")
        text = self.evidence.get("summary", "")
        return f"{self.kind}{where} from step {self.step}" + (f": {text}" if text else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"[{self.severity}] {self.message}"]
        lines += [f"  -> {r}" for r in self.remedies]
        return "\n".join(lines)
