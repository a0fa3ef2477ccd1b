"""Planted pathologies and healthy runs, each judged by torch-only evidence, for the diagnosis.

Every pathology (thirteen: the classic ones and the instabilities of transformers) trains a model with a known failure and measures, with plain torch in the same
loop, the step at which the failure shows (``evidence``); the diagnosis must name the right kind
(and layer, where there is one) **at or before** that step. Every healthy run (the
``tests/models_zoo.py`` architectures) is healthy by torch-only evidence (the loss falls) and
must get no warning or error. Run as a script for the precision/recall table of
docs/diagnosis.md::

    PYTHONPATH=src python tests/diagnose/planted.py
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path[:0] = [str(Path(__file__).parents[1]), str(Path(__file__).parents[1] / "watch")]

import gradwell  # noqa: E402
from models_zoo import VOCAB, ZOO, Arch, ids_batch, train  # noqa: E402
from watch_helpers import batches, mlp  # noqa: E402

ALARM = ("warning", "error")


@dataclass
class Outcome:
    name: str
    expected: tuple[str, ...]          # any of these kinds is right
    evidence_step: int                 # torch-only: the step at which the problem shows
    findings: list
    layer: str | None = None           # the layer the finding must name, where there is one

    def hit(self) -> bool:
        for f in self.findings:
            if (f.kind in self.expected and f.severity in ALARM and f.step <= self.evidence_step
                    and (self.layer is None or f.layer == self.layer)):
                return True
        return False


def _digits_run(model: nn.Module, steps: int, lr: float, opt: str = "sgd",
                on_batch: Callable | None = None, probe: Callable | None = None,
                dtype: torch.dtype = torch.float32):
    """Train on digits with the monitor; ``probe(step, model, loss)`` gathers torch evidence."""
    make = torch.optim.SGD if opt == "sgd" else torch.optim.Adam
    o = make(model.parameters(), lr=lr)
    with gradwell.watch(model) as mon:
        for step, (xb, yb) in enumerate(batches(steps)):
            if on_batch is not None:
                on_batch(step, xb, model)
            loss = nn.functional.cross_entropy(model(xb.to(dtype)).float(), yb)
            o.zero_grad()
            loss.backward()
            if probe is not None:
                probe(step, model, loss)
            mon.step(loss)
            o.step()
    return mon


def _first(cond: list[bool]) -> int:
    return cond.index(True) if True in cond else 10 ** 9


def deep_sigmoid() -> Outcome:
    """Glorot & Bengio 2010: 20 sigmoid layers; torch: ||g_first|| / ||g_last|| < 1e-3."""
    ratios: list[bool] = []
    model = mlp(20, 64, nn.Sigmoid)
    mon = _digits_run(model, 10, 0.1, probe=lambda s, m, loss: ratios.append(
        bool(m[0].weight.grad.norm() / m[0].weight.norm()
             < 1e-3 * m[38].weight.grad.norm() / m[38].weight.norm())))
    return Outcome("deep sigmoid MLP", ("vanishing",), _first(ratios), mon.findings())


def _loss_blowup(losses: list[float]) -> int:
    """torch: the first step whose loss is non-finite or above twice the first loss."""
    return _first([not math.isfinite(x) or x > 2 * losses[0] for x in losses])


def _gpt2_lr(opt: str, lr: float, steps: int) -> Outcome:
    arch = ZOO["gpt2"]
    model = arch.build()
    mon = gradwell.watch(model)
    make = torch.optim.SGD if opt == "sgd" else torch.optim.Adam
    _, losses = train(arch, steps, model=model, optimizer=lambda ps: make(ps, lr=lr),
                      after_backward=lambda s, m, loss: mon.step(loss))
    mon.close()
    return Outcome(f"GPT-2, {opt} lr={lr:g}", ("divergence", "exploding", "nonfinite"),
                   _loss_blowup(losses), mon.findings())


def huge_lr_sgd() -> Outcome:
    return _gpt2_lr("sgd", 10.0, 12)


def huge_lr_adam() -> Outcome:
    return _gpt2_lr("adam", 0.5, 12)


def exploding_rnn() -> Outcome:
    """Pascanu et al. 2013: a ReLU RNN with recurrent gain 1.5 over 30 steps; torch:
    ||dL/dW_hh|| / ||W_hh|| > 10."""
    torch.manual_seed(0)
    rnn, head = nn.RNN(8, 32, nonlinearity="relu", batch_first=True), nn.Linear(32, 2)
    with torch.no_grad():
        nn.init.orthogonal_(rnn.weight_hh_l0, gain=1.5)
    model = nn.ModuleDict({"rnn": rnn, "head": head})
    x = torch.randn(16, 30, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(2))
    opt = torch.optim.SGD(model.parameters(), lr=1e-7)   # small enough to keep the explosion
    big: list[bool] = []
    with gradwell.watch(model) as mon:
        for _ in range(8):
            loss = nn.functional.cross_entropy(head(rnn(x)[0][:, -1]), y)
            opt.zero_grad()
            loss.backward()
            w = rnn.weight_hh_l0
            big.append(bool(w.grad.norm() / w.norm() > 10))
            mon.step(loss)
            opt.step()
    return Outcome("exploding ReLU RNN", ("exploding",), _first(big), mon.findings())


def dead_relu() -> Outcome:
    """Lu et al. 2019: biases at -3 kill most ReLU units; torch: > 50 % zero on the batch."""
    model = mlp(3, 64, nn.ReLU, bias=-3.0)
    dead: list[bool] = []

    def probe(step, m, loss):
        with torch.no_grad():
            h = m[1](m[0](next(batches(1))[0]))
        dead.append(bool((h.amax(0) <= 0).float().mean() > 0.5))
    mon = _digits_run(model, 10, 0.05, probe=probe)
    return Outcome("dead-ReLU init", ("dead_units",), _first(dead), mon.findings())


def saturated_sigmoid() -> Outcome:
    """Glorot & Bengio 2010: weights 8x the default scale; torch: > 50 % of sigmoid outputs
    within 0.015 of 0 or 1."""
    model = mlp(3, 64, nn.Sigmoid, weight_std=8.0)
    sat: list[bool] = []

    def probe(step, m, loss):
        with torch.no_grad():
            h = m[1](m[0](next(batches(1))[0]))
        sat.append(bool(((h - 0.5).abs() > 0.485).float().mean() > 0.5))
    mon = _digits_run(model, 10, 0.05, probe=probe)
    return Outcome("saturated sigmoid", ("saturation", "vanishing"), _first(sat),
                   mon.findings())


class LogLayer(nn.Module):
    """A bad op: ``log`` of a pre-activation that can be negative (a layer of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(10, 64) / 8)

    def forward(self, x):
        return (x @ self.weight.T).log()


def nan_from_a_bad_op() -> Outcome:
    torch.manual_seed(0)
    model = nn.Sequential(LogLayer())
    bad: list[bool] = []
    mon = _digits_run(model, 4, 0.05, probe=lambda s, m, loss: bad.append(
        not bool(torch.isfinite(loss))))
    return Outcome("NaN from log of a negative", ("nonfinite",), _first(bad), mon.findings(),
                   layer="0")


def float16_overflow() -> Outcome:
    """A float16 model whose second layer's outputs exceed 65504; torch: an output is inf."""
    model = mlp(2, 64, nn.ReLU, weight_std=200.0).half()
    inf: list[bool] = []

    def probe(step, m, loss):
        with torch.no_grad():
            out = m(next(batches(1))[0].half())
        inf.append(not bool(torch.isfinite(out).all()))
    mon = _digits_run(model, 4, 0.01, probe=probe, dtype=torch.float16)
    return Outcome("float16 overflow", ("nonfinite",), _first(inf), mon.findings())


def poisoned_batch() -> Outcome:
    """One batch of inputs x1000 at step 12; torch: the total gradient norm jumps > 100x."""
    model = mlp(3, 64)
    norms: list[float] = []

    def poison(step, xb, m):
        if step == 12:
            xb.mul_(1000.0)

    def probe(step, m, loss):
        norms.append(float(torch.nn.utils.get_total_norm([p.grad for p in m.parameters()])))
    mon = _digits_run(model, 16, 0.01, on_batch=poison, probe=probe)
    jump = [k > 0 and norms[k] > 100 * sorted(norms[:k])[k // 2] for k in range(len(norms))]
    return Outcome("poisoned batch", ("exploding", "nonfinite", "divergence"), _first(jump),
                   mon.findings())


def too_large_init() -> Outcome:
    """He et al. 2015: 10 ReLU layers at 3x the He scale; torch: ||dL/dW_0|| / ||W_0|| > 10."""
    model = mlp(10, 64, nn.ReLU, weight_std=3 * 2 ** 0.5)
    big: list[bool] = []
    mon = _digits_run(model, 8, 1e-4, probe=lambda s, m, loss: big.append(
        bool(m[0].weight.grad.norm() / m[0].weight.norm() > 10)))
    return Outcome("ReLU MLP, init 3x He", ("exploding",), _first(big), mon.findings())


class CausalLM(nn.Module):
    """Embedding -> causal ``nn.TransformerEncoder`` (``norm_first`` as given) -> Linear."""

    def __init__(self, layers: int, norm_first: bool, d: int = 64) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, d)
        block = nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=4 * d, dropout=0.0,
                                           batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(ids.shape[1])
        return self.head(self.encoder(self.embed(ids), mask=mask, is_causal=True))


def train_causal(model: nn.Module, lr: float, steps: int,
                 after_backward: Callable | None = None) -> float:
    """Next-token training of a :class:`CausalLM` with Adam (no warm-up); the last loss."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        ids = ids_batch(step)["input_ids"]
        loss = nn.functional.cross_entropy(model(ids[:, :-1]).reshape(-1, VOCAB),
                                           ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        if after_backward is not None:
            after_backward(model, loss)
        opt.step()
    return float(loss.detach())


def post_ln_no_warmup() -> Outcome:
    """Xiong et al. 2020: a 12-block post-LN transformer (``norm_first=False``) under Adam at
    lr 0.03 without warm-up; torch: the first block's relative gradient ||g||/||w|| falls below
    1e-3 x the last block's (and the loss stalls at ~3.7, where the same model pre-LN learns:
    tests/diagnose/test_planted.py)."""
    model = CausalLM(12, norm_first=False)
    small: list[bool] = []

    def rel(m: nn.Module) -> float:
        return float(m.weight.grad.norm() / m.weight.detach().norm())

    def probe(m: nn.Module, loss: torch.Tensor) -> None:
        first, last = m.encoder.layers[0].linear1, m.encoder.layers[-1].linear1
        small.append(rel(first) < 1e-3 * rel(last))
        mon.step(loss)
    with gradwell.watch(model) as mon:
        train_causal(model, 0.03, 6, probe)
    return Outcome("post-LN transformer, no warm-up", ("vanishing", "divergence", "exploding"),
                   _first(small), mon.findings())


def _fast_params(arch: Arch, model: nn.Module, fast: Callable[[str], bool], lr: float,
                 steps: int, shows: Callable[[int, nn.Module], bool]) -> tuple[list, list]:
    """Train with Adam at ``lr`` on the parameters whose name ``fast`` picks (``arch.lr`` on the
    rest) under the monitor; ``shows(step, model)`` is the torch evidence at each step.
    Returns the evidence flags and the findings."""
    flags: list[bool] = []
    groups = [{"params": [p for n, p in model.named_parameters() if fast(n)], "lr": lr},
              {"params": [p for n, p in model.named_parameters() if not fast(n)],
               "lr": arch.lr}]

    def probe(step: int, m: nn.Module, loss: torch.Tensor) -> None:
        with torch.no_grad():
            flags.append(bool(shows(step, m)))
        mon.step(loss)
    mon = gradwell.watch(model)
    train(arch, steps, model=model, after_backward=probe,
          optimizer=lambda ps: torch.optim.Adam(groups))
    mon.close()
    return flags, mon.findings()


def attention_logit_growth() -> Outcome:
    """Wortsman et al. 2023: GPT-2 with Adam at lr 0.3 on its attention projections (c_attn);
    torch: attention entropy collapse (Zhai et al. 2023): some head's mean entropy of the
    attention weights that Hugging Face's eager attention returns falls below 0.1 nats."""
    arch = ZOO["gpt2"]
    model = arch.build()
    model.set_attn_implementation("eager")

    def collapsed(step: int, m: nn.Module) -> bool:
        probs = m(input_ids=arch.batch(step)["input_ids"], output_attentions=True).attentions
        ent = [-(a * a.clamp_min(1e-30).log()).sum(-1)[:, :, 1:].mean((0, 2)) for a in probs]
        return bool(torch.cat(ent).min() < 0.1)
    flags, found = _fast_params(arch, model, lambda n: "c_attn" in n, 0.3, 8, collapsed)
    return Outcome("GPT-2, attention-logit growth", ("attention_logits",), _first(flags), found)


def output_logit_divergence() -> Outcome:
    """Wortsman et al. 2023: Llama with Adam at lr 1.0 on its (untied) lm_head; torch: the
    RMS of logsumexp(logits) over the whole batch passes 50 (PaLM's z-loss would weigh 0.25)."""
    arch = ZOO["llama"]

    def drifted(step: int, m: nn.Module) -> bool:
        logits = m(input_ids=arch.batch(step)["input_ids"]).logits
        return bool(torch.logsumexp(logits, -1).square().mean().sqrt() > 50)
    flags, found = _fast_params(arch, arch.build(), lambda n: n.startswith("lm_head"), 1.0, 10,
                                drifted)
    return Outcome("Llama, output-logit divergence", ("output_logits",), _first(flags), found,
                   layer="lm_head")


PATHOLOGIES: dict[str, Callable[[], Outcome]] = {f.__name__: f for f in (
    deep_sigmoid, huge_lr_sgd, huge_lr_adam, exploding_rnn, dead_relu, saturated_sigmoid,
    nan_from_a_bad_op, float16_overflow, poisoned_batch, too_large_init, post_ln_no_warmup,
    attention_logit_growth, output_logit_divergence)}


def healthy(arch: Arch, steps: int = 25) -> tuple[list, list[float]]:
    """Train a zoo architecture with Adam at its healthy lr, watched with ``optimizer=`` (so
    Adam's eps share and update cosine are recorded too); findings and losses."""
    model = arch.build()
    box: dict = {}

    def make(params):
        box["opt"] = torch.optim.Adam(params, lr=arch.lr)
        box["mon"] = gradwell.watch(model, optimizer=box["opt"])
        return box["opt"]
    _, losses = train(arch, steps, model=model, optimizer=make,
                      after_backward=lambda s, m, loss: box["mon"].step(loss))
    box["mon"].close()
    return box["mon"].findings(), losses


def table() -> str:
    """The precision/recall table (markdown) over every planted pathology and healthy run."""
    kinds: dict[str, dict[str, int]] = {}
    rows = []
    for name, fn in PATHOLOGIES.items():
        out = fn()
        k = out.expected[0]
        kinds.setdefault(k, {"planted": 0, "found": 0, "false": 0})
        kinds[k]["planted"] += 1
        kinds[k]["found"] += out.hit()
        got = sorted({f"{f.kind}@{f.step}" for f in out.findings if f.severity in ALARM})
        rows.append(f"| {out.name} | {'/'.join(out.expected)} | {out.evidence_step} | "
                    f"{', '.join(got) or '-'} | {'yes' if out.hit() else 'NO'} |")
    alarms = 0
    for name, arch in ZOO.items():
        found, _ = healthy(arch)
        for f in found:
            if f.severity in ALARM:
                alarms += 1
                kinds.setdefault(f.kind, {"planted": 0, "found": 0, "false": 0})
                kinds[f.kind]["false"] += 1
    lines = ["| planted pathology | right kinds | torch evidence at step | findings (kind@step) "
             "| detected in time |", "| --- | --- | --- | --- | --- |", *rows, "",
             f"Healthy runs: {len(ZOO)} zoo architectures, {alarms} warning/error findings.", "",
             "| kind | planted | detected | recall | false alarms | precision |",
             "| --- | --- | --- | --- | --- | --- |"]
    for k, c in sorted(kinds.items()):
        rec = c["found"] / c["planted"] if c["planted"] else float("nan")
        prec = c["found"] / (c["found"] + c["false"]) if c["found"] + c["false"] else float("nan")
        lines.append(f"| {k} | {c['planted']} | {c['found']} | {rec:.0%} | {c['false']} | "
                     f"{prec:.0%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    print(table())
