"""`Origin`: where a NaN/Inf was born, what its inputs held, and the fix most likely to help.

An origin separates birth from propagation: in the forward pass it is the first op (and the
module running it) whose inputs were all finite and whose output was not; in the backward pass
the first autograd node whose incoming gradients were finite and whose outputs were not. The
finite input magnitudes recorded with it explain the birth: ``exp`` of 95 overflows float16
(largest finite value 65504 = e^11.09), ``log`` of 0 is -inf, ``0/0`` and ``sqrt(-1)`` are NaN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["Origin", "PHASES", "input_stats", "remedy_for"]

#: Where a non-finite value can be born, in the order a training step runs.
PHASES = ("input", "forward", "loss", "backward")

_EXP = ("exp", "exp2", "expm1", "pow", "sinh", "cosh", "square", "_softmax", "softplus")
_LOG = ("log", "log2", "log10", "log1p", "xlogy", "special_xlog1py", "log_sigmoid_forward")
_DIV = ("div", "reciprocal", "rsqrt", "remainder", "fmod", "true_divide")
_DOMAIN = ("sqrt", "acos", "asin", "atanh", "acosh", "erfinv", "lgamma", "digamma")
_MATMUL = ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "convolution", "conv2d",
           "_convolution", "cudnn_convolution", "mkldnn_convolution", "einsum", "lstm", "gru",
           "rnn_tanh", "rnn_relu", "_scaled_dot_product_flash_attention",
           "_scaled_dot_product_efficient_attention", "scaled_dot_product_attention")
_SUMS = ("sum", "mean", "var", "std", "var_mean", "norm", "linalg_vector_norm", "cumsum",
         "native_layer_norm", "native_batch_norm", "_native_batch_norm_legit", "prod")
#: losses (torch functions and their aten ops) that give Inf of finite inputs only when the
#: inputs are so large that the loss's sum (or square) overflows
_LOSSES = ("cross_entropy", "nll_loss", "nll_loss_forward", "nll_loss2d_forward",
           "nll_loss_nd", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div",
           "binary_cross_entropy", "binary_cross_entropy_with_logits", "soft_margin_loss",
           "multilabel_soft_margin_loss", "poisson_nll_loss", "gaussian_nll_loss")


def _base(op: str | None) -> str:
    """``aten.exp.default`` -> ``exp``; ``ExpBackward0`` -> ``exp``; ``__truediv__`` -> ``div``."""
    if not op:
        return ""
    name = op.split(".")[1] if op.startswith("aten.") and op.count(".") >= 1 else op
    name = name.strip("_") if name.startswith("__") else name
    name = {"truediv": "div", "rtruediv": "div", "floordiv": "div", "rpow": "pow",
            "mul": "mul", "matmul": "matmul"}.get(name, name)
    if name.endswith("Backward0") or name.endswith("Backward1"):
        stem = name[:-len("Backward0")]
        name = "".join("_" + c.lower() if c.isupper() else c for c in stem).lstrip("_")
    return name.rstrip("_") if name not in ("_softmax",) else name


def _largest(dtype: str) -> float:
    try:
        return float(torch.finfo(getattr(torch, dtype.replace("torch.", ""))).max)
    except (AttributeError, TypeError):
        return float(torch.finfo(torch.float32).max)


def remedy_for(origin: "Origin") -> str:
    """The one change most likely to help, from the phase, the op and the inputs."""
    op, dt = _base(origin.op if origin.node is None else origin.node), origin.dtype
    low = dt in ("torch.float16", "float16")
    if origin.op == "all_reduce":
        return ("find the rank it came from: arm gradwell.locate on every rank (that rank's "
                "origin names the op); gradwell.guard skips the step on all ranks alike")
    if origin.phase == "input":
        if origin.op in ("parameter", "buffer"):
            return ("the weight was already non-finite before this step: an earlier update "
                    "wrote it; guard the optimizer (gradwell.guard.Guard, or skip_nonfinite=True) "
                    "and check the initialisation")
        return ("the batch itself holds NaN/Inf: clean or filter the data; gradwell.guard's "
                "skip list (snapshot_dir/skipped.jsonl) names the samples")
    if op in _EXP or op.startswith("exp"):
        limit = "11 in float16" if low else "88 in float32"
        return (f"clamp the input before {op} (e^x overflows above ~{limit}): "
                "x.clamp(max=...), or use a log-sum-exp / logsigmoid formulation")
    if op in _LOG:
        return f"add an epsilon: {op}(x.clamp_min(eps)) - its input reached 0 or below"
    if op in _DIV:
        return ("add an epsilon in the division: x / (y + eps) or y.clamp_min(eps) - the "
                "denominator reached 0 (a near-zero norm or count)")
    if op in _DOMAIN:
        return (f"clamp the input into {op}'s domain: {op}(x.clamp_min(eps)) - it received "
                "a value outside it" + (" (and the gradient of sqrt at 0 is infinite)"
                                        if op == "sqrt" else ""))
    if op in _LOSSES and origin.kind == "inf" and origin.inputs:
        big = max(float(i.get("absmax", 0.0)) for i in origin.inputs)
        return (f"{op} of finite inputs overflowed {dt}: its inputs reach |x| = {big:.3g}; look "
                "for poisoned targets (labels far out of range) and for outputs grown out of "
                "scale (a norm before the head, a z-loss, a lower learning rate), and compute "
                "the loss in float32")
    if origin.phase == "backward" and low:
        return ("scale the loss: torch.amp.GradScaler (float16 gradients overflow at 65504), "
                "or train in bfloat16")
    if low or dt in ("torch.bfloat16", "bfloat16"):
        return (f"values overflow {dt} (largest finite {_largest(dt):.4g}): compute this op in "
                "float32 (autocast keeps matmuls low), normalise its inputs, or lower the "
                "learning rate")
    if op in _MATMUL or op in _SUMS:
        return ("the activations grew too large: lower the learning rate, clip gradients "
                "(gradwell.clip.GlobalNorm(1.0)), or add normalisation; check the init scale")
    return "lower the learning rate, clip gradients, and check this op's inputs"


@dataclass(frozen=True)
class Origin:
    """Where a NaN/Inf was born.

    Attributes:
        phase: ``"input"`` (already in a model input, a target or a parameter), ``"forward"``,
            ``"loss"`` (computed from the model's outputs, outside ``model.forward``) or
            ``"backward"``.
        module: qualified name of the module running the op (``""``: the model's own forward;
            ``None``: outside the model).
        op: the aten op (``"aten.exp.default"``), the torch function of the loss
            (``"cross_entropy"``), for ``phase="input"``: ``"input"``, ``"target"``,
            ``"parameter"`` or ``"buffer"``, and ``"all_reduce"`` under
            DistributedDataParallel when this rank's own step, replayed, stays finite and the
            non-finite gradients came from another rank.
        kind: ``"nan"`` or ``"inf"`` (NaN wins when both appear).
        dtype: the dtype of the non-finite output.
        node: the autograd node name in the backward pass (``"ExpBackward0"``), else ``None``.
        tensor: for ``phase="input"``: which tensor (``"input[0]"``, ``"embed.weight"``).
        inputs: per floating-point input: shape, dtype and the ``min``, ``max``, ``absmin``,
            ``absmax`` of its finite values - the magnitudes that explain the birth.
        nonfinite: how many output values are NaN/Inf, of ``numel``.
        reproduced: ``True`` when a replay of the step found this origin op by op; ``False``
            when the replay stayed finite (then only the phase is known); ``None`` when the
            step was not replayed (``replay=False``, or FSDP2).
    """

    phase: str
    module: str | None
    op: str | None
    kind: str
    dtype: str
    node: str | None = None
    tensor: str | None = None
    inputs: tuple[dict[str, Any], ...] = ()
    nonfinite: int = 0
    numel: int = 0
    reproduced: bool | None = True
    index: int = field(default=0, compare=False, repr=False)

    @property
    def remedy(self) -> str:
        """The change most likely to help (see :func:`remedy_for`)."""
        return remedy_for(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (with the remedy and the sentence)."""
        d = asdict(self)
        d.pop("index")
        d["inputs"] = [dict(i) for i in self.inputs]
        d["remedy"], d["text"] = self.remedy, str(self)
        return d

    def __str__(self) -> str:
        what = "NaN" if self.kind == "nan" else "Inf"
        if self.phase == "input":
            place = {"input": "the model's {}", "parameter": "parameter '{}'",
                     "buffer": "buffer '{}'", "target": "the loss's {}"}.get(self.op, "{}")
            return (f"{what} was already in {place.format(self.tensor or '')} "
                    f"({self.nonfinite} of {self.numel} values) before the step computed "
                    f"anything; fix: {self.remedy}")
        if self.op == "all_reduce":
            return (f"{what} arrived through DDP's gradient all-reduce ({self.dtype}, "
                    f"{self.nonfinite} of {self.numel} gradient values): this rank's own step, "
                    f"replayed, stayed finite, so another rank produced it; fix: {self.remedy}")
        where = {"": " in the model's own forward", None: ""}.get(
            self.module, f" in module '{self.module}'")
        op = f"{self.node} ({self.op})" if self.node and self.node != self.op else f"{self.op}"
        during = {"loss": "while computing the loss"}.get(self.phase, f"in the {self.phase} pass")
        if self.reproduced is None:
            return (f"{what} appeared in the {self.phase} pass ({self.dtype}); the step was not "
                    "replayed op by op (replay=False, or FSDP2, whose replay would gather "
                    f"parameters on one rank alone), so the op is not known; fix: {self.remedy}")
        if not self.reproduced:
            return (f"{what} appeared in the {self.phase} pass, but a replay of the step stayed "
                    f"finite (transient: a race, a hardware fault or changed inputs); fix: "
                    f"{self.remedy}")
        ins = "; ".join(_describe(i) for i in self.inputs) or "no floating-point inputs"
        side = "incoming gradients" if self.phase == "backward" else "inputs"
        return (f"{what} born {during} at {op}{where} ({self.dtype}): its "
                f"{side} were finite ({ins}), {self.nonfinite} of {self.numel} output values "
                f"are {what}; fix: {self.remedy}")


def _describe(stat: dict[str, Any]) -> str:
    if stat.get("absmax") is None:
        return f"{tuple(stat['shape'])} all non-finite"
    return (f"{tuple(stat['shape'])} {stat['dtype'].replace('torch.', '')} in "
            f"[{stat['min']:.4g}, {stat['max']:.4g}], min |x| {stat['absmin']:.3g}")


def input_stats(tensors: list[Tensor]) -> tuple[dict[str, Any], ...]:
    """Shape, dtype and the range of the finite values of each tensor (on the host)."""
    out = []
    for t in tensors[:4]:
        x = t.detach().float()
        x = x[torch.isfinite(x)]
        row: dict[str, Any] = {"shape": list(t.shape), "dtype": str(t.dtype)}
        if x.numel():
            a = x.abs()
            row.update(min=float(x.min()), max=float(x.max()), absmin=float(a.min()),
                       absmax=float(a.max()))
        else:
            row.update(min=None, max=None, absmin=None, absmax=None)
        out.append(row)
    return tuple(out)
