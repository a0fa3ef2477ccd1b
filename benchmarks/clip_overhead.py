"""Per-step cost of gradwell's adaptive clippers against clip_grad_norm_ and naive loops.

    python benchmarks/clip_overhead.py              # 12 transformer-like blocks, width 256
    python benchmarks/clip_overhead.py --quick      # a small, fast run to check it works

The "model" is the parameter list of ``--layers`` transformer blocks of width ``--width``
(attention and MLP matrices, biases, norm gains), with fixed random gradients. Each step first
restores the gradients (untimed), then times one clipping call. Variants run interleaved in
rounds, so machine drift hits all of them alike; the median over rounds is reported.

Two tables. *Clipping alone*:

* ``clip_grad_norm_``: torch.nn.utils.clip_grad_norm_(params, 1.0), the cost floor of clipping;
* ``gradwell <X>``: ``gradwell.clip.clip_(params, <X>)``;
* ``loop <X>``: a straightforward per-parameter Python loop, the way most public versions are
  written (AGC: per-tensor unit norms and ``torch.where``; AutoClip: per-tensor ``.item()``
  norms, a Python list and ``numpy.percentile``; ZClip: per-tensor squared sums, ``.item()``,
  Python EMAs, per-tensor ``mul_``).

*A whole Adam step with clipping*: ``gradwell.optim.Adam(params, clip=<X>)`` (a global factor
rides in the fused kernel as ``grad_scale``) against the loop followed by
``torch.optim.Adam(fused=True)``, and against ``clip_grad_norm_`` + fused Adam.

Ratios: ``vs clip_grad_norm_`` = time / clip_grad_norm_'s time (> 1: costs more);
``loop / gradwell`` = the loop's time / gradwell's (> 1: gradwell is faster).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable

import numpy as np
import torch

from gradwell.clip import AGC, AutoClip, GlobalNorm, ZClip, clip_


def make_params(layers: int, width: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w = width
    shapes = []
    for _ in range(layers):
        shapes += [(3 * w, w), (3 * w,), (w, w), (w,), (4 * w, w), (4 * w,), (w, 4 * w), (w,),
                   (w,), (w,), (w,), (w,)]
    params = []
    for s in shapes:
        p = torch.nn.Parameter(torch.randn(s, generator=gen) / math.sqrt(s[-1]))
        p.grad = torch.randn(s, generator=gen) * 0.05
        params.append(p)
    return params


# ------------------------------------------------------------------------ naive per-parameter loops
def loop_agc(params: list[torch.Tensor], clipping: float = 0.01, eps: float = 1e-3) -> None:
    for p in params:
        g = p.grad
        if p.ndim <= 1:
            w_norm, g_norm = p.detach().norm(), g.norm()
        else:
            dims = tuple(range(1, p.ndim))
            w_norm = p.detach().norm(dim=dims, keepdim=True)
            g_norm = g.norm(dim=dims, keepdim=True)
        max_norm = w_norm.clamp_min(eps) * clipping
        clipped = g * (max_norm / g_norm.clamp_min(1e-6))
        g.copy_(torch.where(g_norm < max_norm, g, clipped))


class LoopAutoClip:
    def __init__(self, percentile: float = 10.0) -> None:
        self.percentile, self.history = percentile, []

    def __call__(self, params: list[torch.Tensor]) -> None:
        total = math.sqrt(sum(p.grad.norm().item() ** 2 for p in params))
        self.history.append(total)
        torch.nn.utils.clip_grad_norm_(params, float(np.percentile(self.history, self.percentile)))


class LoopZClip:
    def __init__(self, alpha: float = 0.97, z: float = 2.5, warmup: int = 25) -> None:
        self.alpha, self.z, self.warmup = alpha, z, warmup
        self.buffer: list[float] = []
        self.mean = self.var = 0.0

    def __call__(self, params: list[torch.Tensor]) -> None:
        g = torch.stack([p.grad.square().sum() for p in params]).sum().sqrt().item()
        if len(self.buffer) < self.warmup:
            self.buffer.append(g)
            if len(self.buffer) == self.warmup:
                self.mean = float(np.mean(self.buffer))
                self.var = float(np.var(self.buffer))
            return
        std = math.sqrt(self.var)
        zt = (g - self.mean) / (std + 1e-6)
        if zt > self.z:
            g_eff = self.mean + self.z ** 2 / zt * std
            for p in params:
                p.grad.mul_(g_eff / (g + 1e-6))
            g = g_eff
        self.mean = self.alpha * self.mean + (1 - self.alpha) * g
        self.var = self.alpha * self.var + (1 - self.alpha) * (g - self.mean) ** 2


# --------------------------------------------------------------------------------------- timing
Variant = Callable[[list[torch.Tensor]], object]


def clip_variants() -> dict[str, Variant]:
    """Clipping alone: every variant clips the same gradients."""
    agc, auto, zc = AGC(0.01), AutoClip(10, history=1000), ZClip(warmup=25)
    loop_auto, loop_z = LoopAutoClip(10), LoopZClip()
    return {
        "clip_grad_norm_": lambda ps: torch.nn.utils.clip_grad_norm_(ps, 1.0),
        "gradwell GlobalNorm": lambda ps: clip_(ps, GlobalNorm(1.0)),
        "gradwell AGC": lambda ps: clip_(ps, agc),
        "loop AGC": loop_agc,
        "gradwell AutoClip": lambda ps: clip_(ps, auto),
        "loop AutoClip": loop_auto,
        "gradwell ZClip": lambda ps: clip_(ps, zc),
        "loop ZClip": loop_z,
    }


def step_variants(layers: int, width: int) -> dict[str, tuple[list[torch.Tensor], Variant]]:
    """A whole Adam step with clipping: gradwell folds a global factor into the fused kernel."""
    import gradwell.optim

    def torch_adam(clip: Callable[[list[torch.Tensor]], object] | None):
        ps = make_params(layers, width)
        opt = torch.optim.Adam(ps, lr=1e-3, fused=True)

        def step(params: list[torch.Tensor]) -> None:
            if clip is not None:
                clip(params)
            opt.step()
        return ps, step

    def gradwell_adam(clipper: object | None):
        ps = make_params(layers, width)
        opt = gradwell.optim.Adam(ps, lr=1e-3, clip=clipper)
        return ps, lambda params: opt.step()

    return {
        "clip_grad_norm_": torch_adam(lambda ps: torch.nn.utils.clip_grad_norm_(ps, 1.0)),
        "no clipping": torch_adam(None),
        "gradwell GlobalNorm": gradwell_adam(GlobalNorm(1.0)),
        "gradwell AGC": gradwell_adam(AGC(0.01)),
        "loop AGC": torch_adam(loop_agc),
        "gradwell AutoClip": gradwell_adam(AutoClip(10, history=1000)),
        "loop AutoClip": torch_adam(LoopAutoClip(10)),
        "gradwell ZClip": gradwell_adam(ZClip(warmup=25)),
        "loop ZClip": torch_adam(LoopZClip()),
    }


def measure(variants: dict[str, tuple[list[torch.Tensor], Variant]], rounds: int, steps: int,
            warmup: int) -> dict[str, float]:
    """Median seconds per call; gradients are restored (untimed) before every call."""
    saved = {k: [p.grad.clone() for p in ps] for k, (ps, _) in variants.items()}
    per_round: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds + 1):
        for name, (params, fn) in variants.items():
            total = 0.0
            for _ in range(steps if r else warmup):
                for p, g in zip(params, saved[name]):
                    p.grad.copy_(g)
                t0 = time.perf_counter()
                fn(params)
                total += time.perf_counter() - t0
            if r:  # round 0 warms up (and fills ZClip's warmup and AutoClip's history)
                per_round[name].append(total / steps)
    return {k: statistics.median(v) for k, v in per_round.items()}


def report(title: str, times: dict[str, float]) -> None:
    base = times["clip_grad_norm_"]
    print(f"\n{title}")
    print(f"{'variant':<22} {'ms/step':>9} {'vs clip_grad_norm_':>19} {'loop / gradwell':>16}")
    for name, t in times.items():
        loop = times.get(name.replace("gradwell ", "loop ")) if name.startswith("gradwell") else None
        speedup = f"{loop / t:16.2f}" if loop and name != "gradwell GlobalNorm" else " " * 16
        print(f"{name:<22} {t * 1e3:9.3f} {t / base:19.2f} {speedup}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=30, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--clip-only", action="store_true", help="skip the optimizer-step table")
    ap.add_argument("--quick", action="store_true", help="4 layers of width 64, few rounds")
    args = ap.parse_args(argv)
    if args.quick:
        args.layers, args.width, args.rounds, args.steps, args.warmup = 4, 64, 3, 5, 26
    if args.threads:
        torch.set_num_threads(args.threads)
    params = make_params(args.layers, args.width)
    numel = sum(p.numel() for p in params)
    print(f"{len(params)} tensors, {numel / 1e6:.2f}M float32 parameters, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    shared = {k: (params, fn) for k, fn in clip_variants().items()}
    report("clipping alone (gradwell.clip.clip_ vs loops; all clip the same gradients)",
           measure(shared, args.rounds, args.steps, args.warmup))
    if not args.clip_only:
        report("a whole Adam step with clipping (gradwell.optim.Adam(clip=...) vs loop + "
               "torch Adam fused)",
               measure(step_variants(args.layers, args.width), args.rounds, args.steps,
                       args.warmup))


if __name__ == "__main__":
    main()
