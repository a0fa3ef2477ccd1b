"""Planted NaN/Inf faults: a small model, a batch, a loss, and where the fault was planted.

Each :class:`Fault` builds its model twice from the same seed: healthy and with the fault
planted. The expected origin is where the test put the fault (the module and op it wrote),
never what gradwell reports; torch itself confirms that the faulty step is non-finite and the
healthy one finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import gradwell


class Lambda(nn.Module):
    """A module that applies ``fn`` (the place a fault is planted)."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class BadGrad(torch.autograd.Function):
    """Identity forward; backward divides by a zero: a broken custom autograd function."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        return g / torch.zeros_like(g)


def mlp(mid: nn.Module | None = None, width: int = 32, out: int = 10) -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), mid or nn.Identity(),
                         nn.Linear(width, out))


def cnn(mid: nn.Module | None = None) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), mid or nn.Identity(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 10))


class Recurrent(nn.Module):
    def __init__(self, cell: str = "gru", head: nn.Module | None = None) -> None:
        super().__init__()
        self.rnn = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[cell](8, 16, batch_first=True)
        self.head = head or nn.Identity()
        self.fc = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.head(self.rnn(x)[0][:, -1]))


class Encoder(nn.Module):
    """``nn.TransformerEncoder`` with a causal ``-inf`` mask (healthy masks must not be blamed)."""

    def __init__(self, pre: nn.Module | None = None) -> None:
        super().__init__()
        self.pre = pre or nn.Identity()
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        return self.fc(self.encoder(self.pre(x), mask=mask, is_causal=True)[:, -1])


def gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16,
                     bos_token_id=0, eos_token_id=0, attn_pdrop=0.0, resid_pdrop=0.0,
                     embd_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


@dataclass
class Fault:
    """One planted fault and the origin it must produce (module/op as planted)."""

    name: str
    family: str
    dtype: torch.dtype
    build: Callable[[bool], nn.Module]           # build(faulty) -> model (seeded)
    batch: Callable[[bool], tuple[Any, Tensor]]  # batch(faulty) -> (inputs, target)
    loss: Callable[[Any, Tensor], Tensor]
    phase: str
    module: str | None
    op: str
    autocast: torch.dtype | None = None
    forward: Callable[[nn.Module, Any], Any] | None = None
    healthy_loss: Callable[[Any, Tensor], Tensor] | None = None

    def run(self, faulty: bool) -> tuple[Any, Tensor, nn.Module]:
        """One step under ``gradwell.locate``: (origin, loss, model)."""
        torch.manual_seed(0)
        model = self.build(faulty)
        x, y = self.batch(faulty)
        with gradwell.locate(model) as loc:
            with torch.autocast("cpu", dtype=self.autocast, enabled=self.autocast is not None):
                out = self.forward(model, x) if self.forward else model(x)
                loss = (self.loss if faulty or not self.healthy_loss else self.healthy_loss)(out, y)
            loss.backward()
        return loc.origin, loss, model

    def hit(self, origin: Any) -> bool:
        """Top-1 right: the planted phase, module and op."""
        if origin is None or origin.phase != self.phase or origin.module != self.module:
            return False
        names = " ".join(str(v) for v in (origin.op, origin.node, origin.tensor) if v)
        return self.op.lower() in names.lower()


def _digits(faulty: bool, poison: Callable[[Tensor], None] | None = None,
            dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(32, 64, generator=g), torch.randint(0, 10, (32,), generator=g)
    if faulty and poison is not None:
        poison(x)
    return x.to(dtype), y


def _images(faulty: bool) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.rand(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)


def _seqs(faulty: bool, poison: Callable[[Tensor], None] | None = None) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(8, 6, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
    if faulty and poison is not None:
        poison(x)
    return x, y


def _seqs16(faulty: bool) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(4, 6, 16, generator=g), torch.randint(0, 10, (4,), generator=g)


def _tokens(faulty: bool) -> tuple[Tensor, Tensor]:
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(4))
    return ids, ids


def _scaled(model: nn.Module, factor: float, index: int = 0, bias: bool = False) -> nn.Module:
    """Multiply parameter ``index`` (and with ``bias``, the next one) by ``factor``."""
    with torch.no_grad():
        params = list(model.parameters())
        for p in params[index:index + (2 if bias else 1)]:
            p.mul_(factor)
    return model


def _set(t: Tensor, value: float, *index: Any) -> None:
    with torch.no_grad():
        t[index] = value


def _nan(x: Tensor) -> None:
    x[3, 5] = float("nan")


def _gpt_loss(out: Any, y: Tensor) -> Tensor:
    return out.loss


def _gpt_forward(model: nn.Module, x: Tensor) -> Any:
    return model(x, labels=x)


def _weighted(out: Tensor, y: Tensor) -> Tensor:
    """A custom weighted mean: all weights zero -> 0/0."""
    w = torch.zeros_like(y, dtype=out.dtype)
    per = F.cross_entropy(out, y, reduction="none")
    return (w * per).sum() / w.sum()


def _zero_norm(h: Tensor) -> Tensor:
    """A hand-written norm, sqrt(sum x^2): its gradient at a zero vector is 0 * inf = NaN."""
    return h * torch.sqrt((h * h).sum(1, keepdim=True))


def _regression(faulty: bool, poison: float) -> tuple[Tensor, Tensor]:
    x, _ = _digits(False)
    target = torch.rand(32, 1, generator=torch.Generator().manual_seed(5))
    if faulty:
        target[7, 0] = poison
    return x, target


def faults() -> list[Fault]:
    """The planted faults: 24 across MLP, CNN, RNN and transformers, three dtypes."""
    f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16
    ce = F.cross_entropy
    ok = lambda faulty: mlp()  # noqa: E731
    return [
        Fault("log of 0 in the loss", "MLP", f32, ok, _digits,
              lambda o, y: -torch.log(torch.softmax(o, 1).gather(1, y[:, None]) * 0).mean(),
              "loss", None, "log", healthy_loss=ce),
        Fault("0/0 in a custom loss", "MLP", f32, ok, _digits, _weighted, "loss", None, "div",
              healthy_loss=ce),
        Fault("sqrt of a negative", "MLP", f32,
              lambda bad: mlp(Lambda(lambda h: torch.sqrt(h - (1.0 if bad else -1.0)))),
              _digits, ce, "forward", "2", "sqrt"),
        Fault("exp overflow in float16", "MLP", f16,
              lambda bad: _scaled(mlp(Lambda(torch.exp)), 40.0 if bad else 1.0).half(),
              lambda bad: _digits(bad, dtype=f16), lambda o, y: ce(o.float(), y),
              "forward", "2", "exp"),
        Fault("NaN input features", "MLP", f32, ok, lambda bad: _digits(bad, _nan), ce,
              "input", None, "input[0]"),
        Fault("bad init (weights x1e20)", "MLP", f32,
              lambda bad: _scaled(_scaled(mlp(), 1e20 if bad else 1.0), 1e20 if bad else 1.0, 2),
              _digits, ce, "forward", "3", "addmm"),
        Fault("division by a near-zero norm", "MLP", f32,
              lambda bad: _scaled(mlp(Lambda(lambda h: h / h.norm(dim=1, keepdim=True))),
                                  0.0 if bad else 1.0, bias=True),
              _digits, ce, "forward", "2", "div"),
        Fault("masked true class (-inf logit)", "MLP", f32, ok, _digits,
              lambda o, y: ce(o.scatter(1, y[:, None], float("-inf")), y),
              "loss", None, "scatter", healthy_loss=ce),
        Fault("poisoned label (1e20 target)", "MLP", f32, lambda bad: mlp(out=1),
              lambda bad: _regression(bad, 1e20), F.mse_loss, "loss", None, "mse_loss"),
        Fault("poisoned label (NaN target)", "MLP", f32, lambda bad: mlp(out=1),
              lambda bad: _regression(bad, float("nan")), F.mse_loss, "input", None, "target"),
        Fault("gradient of sqrt(sum x^2) at a zero vector", "MLP", f32,
              lambda bad: _scaled(nn.Sequential(nn.Linear(64, 32), Lambda(_zero_norm),
                                                nn.Linear(32, 10)), 0.0 if bad else 1.0, bias=True),
              _digits, ce, "backward", "1", "SqrtBackward0"),
        Fault("custom autograd backward divides by 0", "MLP", f32,
              lambda bad: mlp(Lambda(BadGrad.apply if bad else (lambda h: h.clone()))),
              _digits, ce, "backward", "2", "BadGradBackward"),
        Fault("log of 0 under bfloat16 autocast", "MLP", bf16,
              lambda bad: mlp(Lambda(lambda h: torch.log(h * 0 if bad else h + 1))),
              _digits, ce, "forward", "2", "log", autocast=bf16),
        Fault("float16 loss overflow (sum of squares)", "MLP", f16,
              lambda bad: mlp(out=1).half(), lambda bad: tuple(
                  t.half() * (1e3 if bad and i else 1) for i, t in enumerate(_regression(False, 0))),
              lambda o, y: ((o - y) ** 2).sum(), "loss", None, "pow"),
        Fault("log of ReLU zeros", "CNN", f32,
              lambda bad: cnn(Lambda(lambda h: torch.log(h if bad else h + 1))),
              _images, ce, "forward", "2", "log"),
        Fault("bad init in bfloat16 (conv x1e38)", "CNN", bf16,
              lambda bad: _scaled(cnn(), 1e37 if bad else 1.0).to(bf16),
              lambda bad: tuple(t.to(bf16) * (100 if bad else 1) if t.is_floating_point() else t
                                for t in _images(bad)),
              lambda o, y: ce(o.float(), y), "forward", "0", "convolution"),
        Fault("division by a zero channel norm", "CNN", f32,
              lambda bad: _scaled(cnn(Lambda(lambda h: h / h.sum((2, 3), keepdim=True))),
                                  0.0 if bad else 1.0, bias=True),
              _images, ce, "forward", "2", "div"),
        Fault("Inf input in a sequence", "RNN", f32, lambda bad: Recurrent("lstm"),
              lambda bad: _seqs(bad, lambda x: _set(x, float("inf"), 2, 3, 1)), ce,
              "input", None, "input[0]"),
        Fault("NaN recurrent weight", "RNN", f32,
              lambda bad: _weight(Recurrent("rnn"), "rnn.weight_hh_l0", bad), _seqs, ce,
              "input", "rnn", "rnn.weight_hh_l0"),
        Fault("exp overflow in the head", "RNN", f32,
              lambda bad: Recurrent("gru", Lambda(lambda h: torch.exp(h * (200 if bad else 1)))),
              _seqs, ce, "forward", "head", "exp"),
        # x1e20: q.k (~1e40) overflows float32 inside attention while q, k and v stay finite.
        # Not x1e38: with q, k and v near the float32 limit, torch's CPU flash attention
        # returns zeros on some CPUs (AMD EPYC, torch 2.13) and NaN on others, so the first
        # non-finite value is born in the next layer norm there.
        Fault("activations x1e20 into attention", "Transformer", f32,
              lambda bad: Encoder(Lambda(lambda x: x * (1e20 if bad else 1.0))),
              _seqs16, ce, "forward", "encoder.layers.0.self_attn", "scaled_dot_product"),
        Fault("Inf embedding row", "GPT-2 (HF)", f32,
              lambda bad: _weight(gpt2(), "transformer.wte.weight", bad, row=5, value="inf"),
              _tokens, _gpt_loss, "input", "transformer.wte", "transformer.wte.weight",
              forward=_gpt_forward),
        Fault("NaN layer-norm gain", "GPT-2 (HF)", f32,
              lambda bad: _weight(gpt2(), "transformer.h.1.ln_2.weight", bad),
              _tokens, _gpt_loss, "input", "transformer.h.1.ln_2",
              "transformer.h.1.ln_2.weight", forward=_gpt_forward),
        Fault("final layer-norm gain x1e38 under bfloat16 autocast", "GPT-2 (HF)", bf16,
              lambda bad: _scaled_head(gpt2(), 1e38 if bad else 1.0),
              _tokens, lambda o, y: ce(o.logits.float().flatten(0, 1), y.flatten()),
              "forward", "transformer.ln_f", "layer_norm", autocast=bf16),
    ]


def _weight(model: nn.Module, name: str, bad: bool, row: int = 0, value: str = "nan") -> nn.Module:
    if bad:
        _set(model.get_parameter(name), float(value), row)
    return model


def _scaled_head(model: nn.Module, factor: float) -> nn.Module:
    """Scale the final layer norm's gain: its output overflows (the LM head is tied)."""
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(factor)
    return model
