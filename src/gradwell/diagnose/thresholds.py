"""The thresholds of the diagnosis rules, each with where it comes from (docs/diagnosis.md)."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["Thresholds"]


@dataclass(frozen=True)
class Thresholds:
    """Rule thresholds; override any of them: ``Thresholds(vanishing_ratio=1e-4)``.

    Attributes:
        vanishing_ratio: a weight layer whose relative gradient ``||dL/dW|| / ||W||`` is below
            this fraction of the largest layer's is *vanishing*: three orders of magnitude
            (Glorot & Bengio 2010, Fig. 7: back-propagated gradients shrink by orders of
            magnitude toward the input of deep sigmoid/tanh nets). At Karpathy's healthy
            update/weight ratio of 1e-3 for the top layers such a layer moves by ~1e-6 per
            step: it is frozen in practice.
        vanishing_error: below this fraction the finding is an error.
        vanishing_update: a layer below ``vanishing_ratio`` is still learning, and not
            reported, when its measured update/weight ratio is at least this fraction of the
            reference layers' median (and at most ``update_ratio_high``: more is thrashing,
            not learning): the optimizer moves it anyway. Adam divides each
            coordinate by ``sqrt(v)``, so its step is invariant to the gradient's scale
            (Kingma & Ba 2015, section 2.1): Mamba's ``dt_proj`` (large weights, small
            gradient) moves at ~1e-3 per step under Adam. Under SGD the update is ``lr x
            gradient``, so a vanishing layer's update ratio is as small as its gradient.
        exploding_relative_grad: a weight layer with ``||dL/dW|| / ||W||`` above this is
            *exploding*: with learning rates of 1e-3..1e-1 the step would change the layer by
            1e-2..1 of its size, 10 to 1000 times Karpathy's healthy 1e-3 (Pascanu et al. 2013).
        depth_trend: the back-propagated gradient at a layer's output (Glorot & Bengio's
            quantity, RMS per element) changing by more than this factor between the first and
            the last hidden layer is vanishing (shrinking) or exploding (growing) with depth.
        spike_factor: a total gradient norm this many times the median of the previous
            ``spike_history`` recorded steps (at least ``spike_min_history``, so a spike is
            seen from the third step on) is an exploding spike (Pascanu et al. 2013, the
            "cliff"; ZClip's z-score and AutoClip's percentile track the same history).
        growth_factor: the total gradient norm at the end of the record this many times its
            value at the start is an exploding trend.
        saturation_share: share of sigmoid/tanh outputs in the flat tails (tanh |a| > 0.97,
            Karpathy; sigmoid band with the same slope) above which a layer is *saturated*
            (Glorot & Bengio 2010, saturated top hidden layer); ``saturation_error``: error.
        dead_share: share of ReLU units that are zero over the whole batch above which the
            layer has *dead units* (Maas et al. 2013; Lu et al. 2019); ``dead_error``: error.
        divergence_factor: a loss this many times its running minimum, and above its first
            value, is *divergence* (the learning rate is too high; Wortsman et al. 2023).
        divergence_steps: the loss must still be that high on the last this many recorded
            steps (or the record turns non-finite right after): it did not recover.
        update_ratio_high: the model's update/weight ratio above this on most measured
            steps is *divergence* too: 100x Karpathy's healthy ~1e-3 per step.
        output_log_z: the RMS of ``log Z = logsumexp(logits)`` at the logits module above this
            is *output-logit divergence* (Wortsman et al. 2023; PaLM's z-loss keeps log Z near
            0): at |log Z| = 50 bfloat16 resolves a logit only to 0.25 (8 significant bits),
            and a z-loss of 1e-4 log^2 Z would weigh 0.25 nats.
        attention_logit: ``max |q.k| * scale`` (the softmax's logit; ``scale`` = ``1/sqrt(d)``
            unless the module sets its own) of an attention module above this is
            *attention-logit growth* (Dehghani et al. 2023): two logits 20 apart already give
            softmax weights e^-20 = 2e-9 apart; 100 is the cap of Kimi K2's QK-Clip (Kimi
            Team 2025).
        adam_eps_share: more than this share of the weight-matrix coordinates with
            ``sqrt(v_hat) < eps`` is *adam_epsilon*: updates damped by Adam's epsilon
            (Wortsman et al. 2023, "AdamW epsilon").
        persist_share: a condition must hold in at least this share of the recorded steps
            (all of them, or the latest ``window``) to be reported, so single noisy batches
            raise no alarm.
    """

    vanishing_ratio: float = 1e-3
    vanishing_error: float = 1e-6
    vanishing_update: float = 1e-2
    exploding_relative_grad: float = 10.0
    depth_trend: float = 1e3
    spike_factor: float = 100.0
    spike_history: int = 20
    spike_min_history: int = 2
    growth_factor: float = 1e3
    saturation_share: float = 0.2
    saturation_error: float = 0.5
    dead_share: float = 0.25
    dead_error: float = 0.5
    divergence_factor: float = 3.0
    divergence_steps: int = 3
    update_ratio_high: float = 0.1
    output_log_z: float = 50.0
    attention_logit: float = 100.0
    adam_eps_share: float = 0.5
    persist_share: float = 0.5
    window: int = 50

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"Thresholds.{f.name} must be a positive number, got {value!r}")
        for name in ("saturation_share", "saturation_error", "dead_share", "dead_error",
                     "persist_share", "vanishing_ratio", "vanishing_error", "vanishing_update",
                     "adam_eps_share"):
            if getattr(self, name) > 1:
                raise ValueError(f"Thresholds.{name} is a share/ratio and must be <= 1, got "
                                 f"{getattr(self, name)!r}")
