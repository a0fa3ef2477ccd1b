"""Remedies, chosen by the evidence and by what the model is made of (``history.meta``)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["for_vanishing", "for_exploding", "for_nonfinite", "for_saturation", "for_dead",
           "for_divergence", "for_unobserved", "for_output_logits", "for_attention_logits",
           "for_adam_epsilon", "clip_threshold"]

HE_INIT = ("ReLU-family activation (nn.ReLU, nn.LeakyReLU, nn.GELU) with He initialisation, "
           "nn.init.kaiming_normal_(w, nonlinearity='relu') (He et al. 2015)")
NORMALISE = ("add normalisation before each non-linearity: nn.BatchNorm1d/2d or nn.LayerNorm "
             "(Ioffe & Szegedy 2015)")
RESIDUAL = ("add residual (skip) connections, x + f(x), so the gradient reaches early layers "
            "directly (He et al. 2016)")
POST_LN = ("this post-LN transformer (it normalises after each residual sum, as "
           "nn.TransformerEncoderLayer(norm_first=False), BERT and BART do) needs learning-rate "
           "warm-up: the gradients of its parameters near the output are large at "
           "initialisation (Xiong et al. 2020; Liu et al. 2020); or switch to pre-LN, "
           "nn.TransformerEncoderLayer(..., norm_first=True)")
Z_LOSS = ("add a z-loss to the training loss, loss = loss + 1e-4 * torch.logsumexp(logits, "
          "-1).pow(2).mean(), which keeps log Z near 0 (PaLM, Chowdhery et al. 2022; Wortsman "
          "et al. 2023)")
QK_NORM = ("add QK-layernorm: normalise queries and keys per head before the dot product, "
           "q, k = nn.LayerNorm(head_dim)(q), nn.LayerNorm(head_dim)(k) (Dehghani et al. 2023; "
           "Wortsman et al. 2023)")
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
    out = [POST_LN] if meta.get("post_ln") else []
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
    if ev.get("weight_layers", 0) >= 4 and not meta.get("residual"):
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
    if meta.get("post_ln"):
        out.append(POST_LN)
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
    elif where == "overflow":
        first = (f"the outputs of {ev.get('layer')} are far too large: check the scale of its "
                 "weights and inputs (initialisation, learning rate) and normalise before it "
                 "(nn.LayerNorm)")
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


_ADAM = ("Adam", "AdamW", "NAdam", "RAdam", "Adamax")


def for_divergence(ev: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """Learning rate too high: lower it, warm it up, clip; Adam: lower beta2, larger eps
    (Wortsman et al. 2023; Molybog et al. 2023 trace Adam's instabilities to beta2 and eps)."""
    upd = ev.get("update_ratio_median")
    lower = "lower the learning rate (e.g. 10x)"
    if upd is not None and upd > 0 and math.isfinite(upd):
        lower = (f"lower the learning rate about {max(10.0, upd / 1e-3):.3g}x: layers move "
                 f"{upd:.3g} of their norm per step, healthy is about 1e-3 (Karpathy)")
    out = [lower,
           "warm the learning rate up over the first few hundred steps "
           "(torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=500))",
           "clip by global norm so that one large step cannot throw the weights off: "
           "gradwell.clip.GlobalNorm(1.0) (Pascanu et al. 2013)"]
    if meta.get("post_ln"):
        out.insert(1, POST_LN)
    opt = meta.get("optimizer")
    adam = "for Adam-family optimizers: lower beta2 (0.95) and/or raise eps (1e-6)"
    if opt in _ADAM:
        out.append(adam + f" ({opt}: a stale second moment lets an update grow far beyond the "
                   "learning rate; Molybog et al. 2023)")
    elif opt is None:
        out.append(adam + " (Molybog et al. 2023)")
    if meta.get("attention"):
        out.append("for transformers: QK-layernorm and a z-loss keep attention and output "
                   "logits from growing (Wortsman et al. 2023; Dehghani et al. 2023)")
    return out


def for_unobserved(ev: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    out = []
    if ev.get("no_grad"):
        out.append("a block run through torch.utils.checkpoint(..., use_reentrant=True) gives "
                   "its parameters no gradient when none of its inputs requires grad (torch "
                   "warns: 'None of the inputs have requires_grad=True'): pass "
                   "use_reentrant=False, or make the input require grad "
                   "(x.requires_grad_(); Hugging Face: model.enable_input_require_grads()); a "
                   "module run under torch.no_grad on purpose (a frozen teacher) is fine")
    if meta.get("compiled"):
        out.append("the model is torch.compile'd: attach gradwell.watch before the first "
                   "compiled call, or watch it without hooks (activations=False, the default "
                   "for compiled models)")
    if set(ev.get("modules", [])) - set(ev.get("no_grad", [])):
        out.append("if these modules never run (unused heads, a branch not taken), nothing is "
                   "wrong; otherwise attach the monitor before the first forward pass")
    return out


def for_output_logits(ev: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """Output-logit divergence: z-loss, weight decay, a lower learning rate (Wortsman et al.
    2023 find weight decay and z-loss both prevent it)."""
    return [Z_LOSS,
            "use (decoupled) weight decay on the output layer, torch.optim.AdamW(..., "
            "weight_decay=0.1): without it the output logits drift (Wortsman et al. 2023)",
            "lower the learning rate or warm it up (torch.optim.lr_scheduler.LinearLR)"]


def for_attention_logits(ev: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """Attention-logit growth: QK-layernorm (unless the model has it), a lower learning rate
    and warm-up, capping the logits."""
    out = [] if ev.get("qk_norm") else [QK_NORM]
    out += ["lower the learning rate and warm it up: attention-logit growth appears at high "
            "learning rates and goes away below them (Wortsman et al. 2023)",
            "or cap the logits: rescale W_q and W_k when the largest logit passes 100 "
            "(QK-Clip, Kimi Team 2025), or reparametrise the weights by their spectral norm "
            "(sigma-Reparam against attention entropy collapse, Zhai et al. 2023)"]
    return out


def for_adam_epsilon(ev: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """Updates damped by eps: a smaller eps (Wortsman et al. 2023 use 1e-15)."""
    opt = ev.get("optimizer") or "Adam"
    return [f"lower {opt}'s eps to 1e-15 (e.g. torch.optim.AdamW(..., eps=1e-15)): where "
            "sqrt(v_hat) < eps the update is m_hat / eps instead of m_hat / sqrt(v_hat), too "
            "small to learn (Wortsman et al. 2023, 'AdamW epsilon')",
            "gradients this small can also mean the layer receives almost no signal: check the "
            "vanishing finding and the relative gradients (||g||/||w||) of those layers"]
