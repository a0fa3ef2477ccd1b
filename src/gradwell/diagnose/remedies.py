"""Remedies, chosen by the evidence and by what the model is made of (``history.meta``)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["for_vanishing", "for_exploding", "for_nonfinite", "for_saturation", "for_dead",
           "clip_threshold"]

HE_INIT = ("ReLU-family activation (nn.ReLU, nn.LeakyReLU, nn.GELU) with He initialisation, "
           "nn.init.kaiming_normal_(w, nonlinearity='relu') (He et al. 2015)")
NORMALISE = ("add normalisation before each non-linearity: nn.BatchNorm1d/2d or nn.LayerNorm "
             "(Ioffe & Szegedy 2015)")
RESIDUAL = ("add residual (skip) connections, x + f(x), so the gradient reaches early layers "
            "directly (He et al. 2016)")
GATED = ("replace the plain tanh nn.RNN by nn.GRU or nn.LSTM, whose gated paths carry the "
         "gradient across time (Hochreiter & Schmidhuber 1997; Pascanu et al. 2013)")


def _activations(meta: dict[str, Any]) -> set[str]:
    return {a.get("activation") for a in meta.get("activations", [])}


def _recurrent_rnn(meta: dict[str, Any]) -> bool:
    return any(x.get("type") in ("RNN", "RNNCell") for x in meta.get("layers", []))


def clip_threshold(p10: float) -> float:
    """A global-norm threshold from the observed norms: their 10th percentile, 2 digits
    (AutoClip, Seetharaman et al. 2020; Pascanu et al. 2013 clip near the typical norm)."""
    if not math.isfinite(p10) or p10 <= 0:
        return 1.0
    digits = 1 - int(math.floor(math.log10(p10)))
    return float(round(p10, digits))


def for_vanishing(ev: dict[str, Any], meta: dict[str, Any], saturation: float) -> list[str]:
    acts = _activations(meta)
    out = []
    if acts & {"sigmoid", "tanh"}:
        saturated = ev.get("saturated_share_max", 0.0) > saturation
        out.append(f"replace {'/'.join(sorted(acts & {'sigmoid', 'tanh'}))} by a {HE_INIT}; a "
                   "sigmoid passes at most 1/4 of the gradient per layer"
                   + (" and a saturated unit almost none" if saturated else "")
                   + " (Glorot & Bengio 2010)")
    else:
        out.append("initialise with He (Kaiming) scale for ReLU-family layers, "
                   "nn.init.kaiming_normal_(w, nonlinearity='relu') (He et al. 2015)")
    if not meta.get("norm_layers"):
        out.append(NORMALISE)
    if ev.get("weight_layers", 0) >= 4:
        out.append(RESIDUAL)
    if _recurrent_rnn(meta):
        out.append(GATED)
    return out


def for_exploding(ev: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    if "healthy_norm_p10" in ev:
        c = clip_threshold(ev["healthy_norm_p10"])
        out = [f"clip by global norm at {c:g}, the 10th percentile of the gradient norms before "
               f"step {ev['first_step']}: gradwell.optim.Adam(..., "
               f"clip=gradwell.clip.GlobalNorm({c:g})) or torch.nn.utils.clip_grad_norm_("
               f"model.parameters(), {c:g}) (Pascanu et al. 2013; AutoClip, Seetharaman et al. "
               "2020)"]
    else:
        out = ["clip relative to the weights, which needs no threshold from healthy norms (none "
               "were observed): gradwell.optim.Adam(..., clip=gradwell.clip.AGC(0.01)) "
               "(Brock et al. 2021), or by global norm, gradwell.clip.GlobalNorm(1.0)"]
    upd = ev.get("log10_update_ratio_median")
    lr = "lower the learning rate (e.g. 10x)"
    if upd is not None and math.isfinite(upd):
        lr += f": the update/weight ratio is 10^{upd:.1f}, healthy is about 10^-3 (Karpathy)"
    out.append(lr)
    if "persistent" in ev.get("criteria", []):
        out.append("use a smaller initialisation: He (Kaiming) scale for ReLU-family layers, "
                   "Xavier/Glorot (nn.init.xavier_uniform_) for tanh/sigmoid; a gain above 1 "
                   "per layer multiplies the gradient at every layer (He et al. 2015)")
    if not meta.get("norm_layers"):
        out.append(NORMALISE)
    if _recurrent_rnn(meta):
        out.append(GATED)
    return out


def for_nonfinite(ev: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    step_skip = ("skip non-finite steps instead of applying them: gradwell.optim.Adam(..., "
                 "skip_nonfinite=True), or gradwell.guard to roll back")
    where = ev.get("where")
    if where == "weights":
        first = (f"the weights of {ev.get('layer')} became non-finite in the previous update: "
                 "lower the learning rate and clip by global norm")
    elif where in ("forward", "loss"):
        place = ev.get("layer") or "the loss"
        first = (f"the forward pass produced NaN/Inf at {place}: check that batch for NaN/Inf "
                 "inputs or labels and use numerically stable ops (nn.CrossEntropyLoss on "
                 "logits instead of log(softmax), log1p/clamp before log, eps in divisions)")
    elif ev.get("preceded_by_exploding"):
        first = (f"the gradient of {ev.get('parameter') or ev.get('layer')} overflowed after "
                 "exploding (see the exploding finding): fix the explosion first")
    else:
        first = (f"the gradient of {ev.get('parameter') or ev.get('layer')} became non-finite: "
                 "look for ops with unbounded derivatives there (sqrt or log at 0, division)")
    locate = ("name the op and module where it was born: run that batch under `with "
              "gradwell.locate(model) as loc:` (loc.origin), or guard.step(loss, replay=...)")
    origin = ev.get("origin")
    out = [origin["remedy"], first] if origin else [first, locate]
    out.append(step_skip)
    median = ev.get("preceding_median_grad_norm", float("nan"))
    if ev.get("preceded_by_exploding"):
        out.append("clip the gradients (see the exploding finding) and lower the learning rate")
    elif math.isfinite(median) and median > 0:
        c = clip_threshold(median)
        out.append(f"clip by global norm (gradwell.clip.GlobalNorm({c:g}), the typical norm "
                   "before the failure) so that a large gradient cannot blow up the weights")
    return out


def for_saturation(ev: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    kind = ev.get("activation") or "sigmoid/tanh"
    out = [f"shrink the initial weights feeding the {kind} units: Xavier/Glorot init "
           "(nn.init.xavier_uniform_, gain 5/3 for tanh); large pre-activations sit in the flat "
           "tails where the derivative is < 6% of its peak (Glorot & Bengio 2010)"]
    if not meta.get("norm_layers"):
        out.append(NORMALISE)
    out.append(f"or use a {HE_INIT}")
    out.append("if saturation grows during training, lower the learning rate")
    return out


def for_dead(ev: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    out = ["use nn.LeakyReLU(0.01) or nn.PReLU so units keep a gradient for negative inputs "
           "(Maas et al. 2013; He et al. 2015)",
           "lower the learning rate: one large update can push a unit's bias so far negative "
           "that it never fires again",
           "initialise biases at zero (or slightly positive) and weights with He scale; large "
           "negative biases start units dead (Lu et al. 2019)"]
    if not meta.get("norm_layers"):
        out.append("add BatchNorm before the ReLU so pre-activations stay centred "
                   "(Ioffe & Szegedy 2015)")
    return out
