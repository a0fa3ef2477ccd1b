"""Per-step cost of ``gradwell.locate`` while armed, side by side with torch's anomaly mode.

    python benchmarks/locate_overhead.py                 # digits MLP + a GPT-2-shaped fixture
    python benchmarks/locate_overhead.py --gpt2-small    # the real GPT-2 small shape (slow on CPU)
    python benchmarks/locate_overhead.py --quick         # a short run to check it works
    python benchmarks/locate_overhead.py --floor         # plus the floor of any Python arming

Each training step (forward, loss, backward, ``torch.optim.Adam`` step) runs in three ways,
alternating step by step so machine drift hits all alike, in a new random order each round
(seeded): a short step run straight after an anomaly-mode step is ~4 % slower, so a fixed
order would tax whichever variant follows it:

* ``bare``                                   - nothing armed;
* ``gradwell.locate(model)``                 - armed around forward + backward (target <= 1.10x);
* ``detect_anomaly(check_nan=True)``         - torch's anomaly mode around the same.

Models: the digits MLP of the examples (64-64-64-10, ReLU, batch 64) and a Hugging Face
``GPT2LMHeadModel`` built from a config (random init, no download): 4 layers, width 256, 4 heads,
vocabulary 2000, 8 sequences of 128 tokens (``--gpt2-small``: 12 layers, 768, 12 heads, 50257,
4 x 128). Prints the median milliseconds per step and the ratio to ``bare``, by wall clock and
by process CPU time. Results belong in docs/benchmarks.md.

``--floor`` adds two variants built from torch's public API only, the least that any armed
locator written in Python does on every step: ``two no-op hooks`` (a forward pre-hook and a
forward hook on the model, registered and removed around the step, doing nothing) and ``+ end
check`` (the same, then one fused non-finite check of the output and the gradients, GradScaler's
``torch._amp_foreach_non_finite_check_and_unscale_``, and one host read; the parameters are
listed once, outside the step, which no locator handed an arbitrary model can do).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

import gradwell


def digits_mlp() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    x, y = torch.rand(64, 64), torch.randint(0, 10, (64,))
    return model, lambda m: nn.functional.cross_entropy(m(x), y)


def gpt2(small: bool) -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    if small:
        cfg, shape = GPT2Config(), (4, 128)
    else:
        cfg = GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=2000, n_positions=128,
                         bos_token_id=0, eos_token_id=0)
        shape = (8, 128)
    model = GPT2LMHeadModel(cfg)
    ids = torch.randint(0, cfg.vocab_size, shape)
    return model, lambda m: m(ids, labels=ids).loss


class Floor:
    """Two no-op hooks on ``model`` while armed and, with ``check``, one fused non-finite check of
    the loss and the gradients at exit: a lower bound for any armed locator in Python."""

    def __init__(self, model: nn.Module, params: list[nn.Parameter], check: bool) -> None:
        self.model, self.params, self.check, self.out = model, params, check, None

    def __enter__(self) -> "Floor":
        self.handles = [
            self.model.register_forward_pre_hook(lambda m, a, k: None, with_kwargs=True),
            self.model.register_forward_hook(lambda m, a, o: self._keep(o), always_call=True)]
        return self

    def _keep(self, out: Any) -> None:
        self.out = out

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        if self.check:
            out = next(t for t in tree_leaves(self.out)
                       if isinstance(t, torch.Tensor) and t.is_floating_point())
            ts = [out.detach().clone()] + [p.grad for p in self.params if p.grad is not None]
            found = torch.zeros(1)
            torch._amp_foreach_non_finite_check_and_unscale_(ts, found, torch.ones(1))
            found.item()
        self.out = None


def variants(model: nn.Module, floor: bool = False) -> dict[str, Callable[[], Any]]:
    out = {"bare": contextlib.nullcontext,
           "gradwell.locate(model)": lambda: gradwell.locate(model),
           "detect_anomaly(check_nan=True)": lambda: torch.autograd.detect_anomaly(check_nan=True)}
    if floor:
        params = list(model.parameters())
        out["floor: two no-op hooks"] = lambda: Floor(model, params, check=False)
        out["floor: + end check"] = lambda: Floor(model, params, check=True)
    return out


def one_step(model: nn.Module, loss_of: Callable, opt: torch.optim.Optimizer,
             arm: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    opt.zero_grad(set_to_none=True)
    with arm():
        loss_of(model).backward()
    opt.step()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(name: str, model: nn.Module, loss_of: Callable, steps: int, rounds: int,
          floor: bool = False) -> dict:
    """Alternate the variants step by step, in a new seeded random order each round, so that
    machine drift, the slow phases of a shared VM and the after-effects of one variant's step on
    the next hit all of them alike; the median step of each variant is robust to the odd step a
    garbage collection or another process lengthens."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    arms = variants(model, floor)
    for _ in range(max(2, steps // 5)):          # warm-up
        for arm in arms.values():
            one_step(model, loss_of, opt, arm)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in arms}
    order, rng = list(arms), random.Random(0)
    for _ in range(rounds * steps):
        rng.shuffle(order)
        for k in order:
            times[k].append(one_step(model, loss_of, opt, arms[k]))
    med = {k: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
           for k, t in times.items()}
    base = med["bare"]
    print(f"\n{name}: {rounds * steps} alternating steps per variant, median step")
    print(f"  {'variant':34s} {'wall ms':>9s} {'ratio':>7s} {'cpu ms':>9s} {'ratio':>7s}")
    for k, (w, c) in med.items():
        print(f"  {k:34s} {w * 1e3:9.3f} {w / base[0]:7.3f} {c * 1e3:9.3f} {c / base[1]:7.3f}")
    return {k: v[0] / base[0] for k, v in med.items()}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--gpt2-small", action="store_true", help="the real GPT-2 small shape")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--floor", action="store_true", help="add the floor of any Python arming")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rounds = 1 if a.quick else a.rounds
    out = {"digits MLP": bench("digits MLP (64-64-64-10, batch 64)", *digits_mlp(),
                               steps=20 if a.quick else 400, rounds=rounds, floor=a.floor)}
    if not a.quick:
        out["GPT-2"] = bench("GPT-2 (HF GPT2LMHeadModel from a config)", *gpt2(a.gpt2_small),
                             steps=2 if a.gpt2_small else 6, rounds=rounds, floor=a.floor)
    return out


if __name__ == "__main__":
    main()
