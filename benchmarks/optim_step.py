"""Per-step time and peak memory of gradwell's optimizers against torch.optim, same run.

    python benchmarks/optim_step.py                 # 20M float32 parameters in 200 tensors
    python benchmarks/optim_step.py --numel 2e6     # a quicker run
    python benchmarks/optim_step.py --components    # the passes a clipped Adam step is made of

Time: each comparison runs in one process holding both optimizers, on separate but identical
parameters, and alternates their steps (gradwell, torch, gradwell, ...) so that the slow phases
of a shared machine hit both alike; after ``--warmup`` steps each, ``--steps`` steps each are
timed and the ratio of the medians is reported (> 1: gradwell is faster). Memory: each variant
also runs alone in a fresh process, whose peak resident memory is reported; the C allocator gets
a fixed mmap threshold (``MALLOC_MMAP_THRESHOLD_``), so that a freed tensor goes back to the
system at once and the peak measures live memory, not the allocator's timing. Gradients are fixed
random tensors: only the optimizer step is measured.

Clipping is timed in two regimes: ``[clip fires]``, gradients with a norm of about 4,500
restored (untimed) before every step, so that ``GlobalNorm(1.0)`` scales them every time; and
``[norm < max_norm]``, gradients with a norm of about 0.045, where clipping checks but never
scales (``clip_grad_norm_`` still multiplies every gradient by 1).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from gradwell.clip.base import grad_norms

FIRES, BELOW = " [clip fires]", " [norm < max_norm]"
GW_CLIP = "gradwell Adam(clip=GlobalNorm(1.0), skip_nonfinite=True)"
TORCH_CLIP = "clip_grad_norm_ + torch Adam fused"
_GW_CLIP = ("gradwell.optim.Adam(params, lr=1e-3, clip=gradwell.clip.GlobalNorm(1.0), "
            "skip_nonfinite=True)")
_FUSED = "torch.optim.Adam(params, lr=1e-3, fused=True)"

VARIANTS: dict[str, str] = {
    # name: python expression building the optimizer from `params`
    "torch Adam for-loop": "torch.optim.Adam(params, lr=1e-3, foreach=False)",
    "torch Adam foreach": "torch.optim.Adam(params, lr=1e-3, foreach=True)",
    "torch Adam fused": _FUSED,
    TORCH_CLIP + FIRES: _FUSED,
    TORCH_CLIP + BELOW: _FUSED,
    "gradwell Adam": "gradwell.optim.Adam(params, lr=1e-3)",
    GW_CLIP + FIRES: _GW_CLIP,
    GW_CLIP + BELOW: _GW_CLIP,
    "torch RMSprop foreach": "torch.optim.RMSprop(params, lr=1e-3, foreach=True)",
    "gradwell RMSprop": "gradwell.optim.RMSprop(params, lr=1e-3)",
    "torch Adadelta foreach": "torch.optim.Adadelta(params, foreach=True)",
    "gradwell Adadelta": "gradwell.optim.Adadelta(params)",
    "torch SGD(momentum) fused": "torch.optim.SGD(params, lr=1e-3, momentum=0.9, fused=True)",
    "gradwell SGD(momentum)": "gradwell.optim.SGD(params, lr=1e-3, momentum=0.9)",
    "torch Adagrad fused": "torch.optim.Adagrad(params, lr=1e-3, fused=True)",
    "gradwell Adagrad": "gradwell.optim.Adagrad(params, lr=1e-3)",
}

COMPARISONS = [  # (gradwell variant, torch variant, target ratio or None)
    ("gradwell Adam", "torch Adam fused", 0.95),
    ("gradwell Adam", "torch Adam foreach", None),
    ("gradwell Adam", "torch Adam for-loop", None),
    (GW_CLIP + FIRES, TORCH_CLIP + FIRES, 1.3),
    (GW_CLIP + BELOW, TORCH_CLIP + BELOW, 1.3),
    ("gradwell RMSprop", "torch RMSprop foreach", 1.0),
    ("gradwell Adadelta", "torch Adadelta foreach", 1.0),
    ("gradwell SGD(momentum)", "torch SGD(momentum) fused", 0.95),
    ("gradwell Adagrad", "torch Adagrad fused", 0.95),
]


class Run:
    """One variant's parameters, optimizer, and how its step is taken."""

    def __init__(self, name: str, numel: int, tensors: int) -> None:
        import gradwell  # noqa: F401 - used by the expressions
        import gradwell.clip  # noqa: F401
        import gradwell.optim  # noqa: F401

        torch.manual_seed(0)
        size = numel // tensors
        params = [torch.nn.Parameter(torch.randn(size)) for _ in range(tensors)]
        scale = 1e-5 if name.endswith(BELOW) else 1.0  # BELOW: a total norm of about 0.045
        for p in params:
            p.grad = torch.randn(size) * scale
        self.params = params
        self.opt = eval(VARIANTS[name])  # noqa: S307 - fixed table above
        self.clip = name.startswith("clip_grad_norm_")
        # FIRES: the gradients, which clipping shrinks in place, are restored before each step
        # (untimed), so that every timed step clips a norm of about 4,500 down to 1.
        self.saved = [p.grad.clone() for p in params] if name.endswith(FIRES) else None

    def step(self) -> float:
        if self.saved is not None:
            torch._foreach_copy_([p.grad for p in self.params], self.saved)
        t0 = time.perf_counter()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        return time.perf_counter() - t0


def time_pair(a: str, b: str, numel: int, tensors: int, warmup: int, steps: int) -> dict:
    """Alternate the steps of variants ``a`` and ``b``; median milliseconds of each."""
    runs = [Run(a, numel, tensors), Run(b, numel, tensors)]
    times: list[list[float]] = [[], []]
    for i in range(warmup + steps):
        for k, run in enumerate(runs if i % 2 == 0 else runs[::-1]):
            t = run.step()
            if i >= warmup:
                times[k if i % 2 == 0 else 1 - k].append(t)
    return {"a_ms": 1e3 * statistics.median(times[0]), "b_ms": 1e3 * statistics.median(times[1])}


def peak_memory(name: str, numel: int, tensors: int) -> dict:
    """Peak resident memory of a process that builds ``name`` and takes three steps."""
    run = Run(name, numel, tensors)
    for _ in range(3):
        run.step()
    return {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def components(numel: int, tensors: int, warmup: int, steps: int) -> None:
    """Median time of each pass a clipped Adam step is made of, round-robin in one process."""
    torch.manual_seed(0)
    size = numel // tensors
    p, g, m, v = ([torch.randn(size) for _ in range(tensors)] for _ in range(4))
    st = [torch.tensor(1.0) for _ in range(tensors)]
    scale, no_inf = torch.tensor(1.0), torch.tensor(0.0)
    params = [torch.nn.Parameter(x) for x in p]
    for x, y in zip(params, g):
        x.grad = y
    kw = dict(lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False,
              maximize=False)
    flat = torch.cat(g)
    ops = {
        "norm: torch._foreach_norm(grads)": lambda: torch._foreach_norm(g),
        "gwnorm: gradwell.clip.base.grad_norms(grads)": lambda: grad_norms(g),
        "read: torch.sum of the same bytes in one buffer": lambda: flat.sum(),
        "scale: torch._foreach_mul_(grads, c)": lambda: torch._foreach_mul_(g, 1.0),
        "adam: torch._fused_adam_": lambda: torch._fused_adam_(p, g, m, v, [], st, **kw),
        "adam_s: torch._fused_adam_(grad_scale, found_inf)": lambda: torch._fused_adam_(
            p, g, m, v, [], st, grad_scale=scale, found_inf=no_inf, **kw),
        "torch.nn.utils.clip_grad_norm_": lambda: torch.nn.utils.clip_grad_norm_(params, 1e9),
    }
    times: dict[str, list[float]] = {k: [] for k in ops}
    for i in range(warmup + steps):
        for k, op in ops.items():
            t0 = time.perf_counter()
            op()
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    ms = {k.split(":")[0]: 1e3 * statistics.median(t) for k, t in times.items()}
    for k, t in times.items():
        print(f"{k:52s} {1e3 * statistics.median(t):7.2f} ms")
    torch_fires = ms["norm"] + ms["scale"] + ms["adam"]
    print(f"\nclip_grad_norm_ + fused Adam ~ norm + scale + adam = {torch_fires:.2f} ms; "
          f"gradwell ~ gwnorm + adam_s = {ms['gwnorm'] + ms['adam_s']:.2f} ms when clipping "
          f"fires ({torch_fires / (ms['gwnorm'] + ms['adam_s']):.2f}x), gwnorm + adam = "
          f"{ms['gwnorm'] + ms['adam']:.2f} ms when it does not "
          f"({torch_fires / (ms['gwnorm'] + ms['adam']):.2f}x)")


def child(args: argparse.Namespace) -> dict:
    n = int(args.numel)
    if args.pair:
        return time_pair(*args.pair, n, args.tensors, args.warmup, args.steps)
    return peak_memory(args.child, n, args.tensors)


def run_child(args: argparse.Namespace, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--numel", str(args.numel), "--tensors", str(args.tensors),
           "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--threads", str(args.threads), *extra]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # glibc: no dynamic threshold
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--numel", type=float, default=20e6, help="total parameters (default 20M)")
    ap.add_argument("--tensors", type=int, default=200, help="number of tensors (default 200)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="200k parameters, 2 steps: a smoke run")
    ap.add_argument("--components", action="store_true",
                    help="time the passes a clipped Adam step is made of, and stop")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--pair", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.numel, args.warmup, args.steps = 2e5, 1, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child or args.pair:
        print(json.dumps(child(args)))
        return
    if args.components:
        components(int(args.numel), args.tensors, args.warmup, args.steps)
        return
    memory = {name: run_child(args, ["--child", name])["peak_mb"] for name in VARIANTS}
    print(f"{int(args.numel):,} float32 parameters in {args.tensors} tensors, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} alternating steps\n")
    print(f"{'gradwell':75s} {'ms':>7s}  {'vs torch':52s} {'ms':>7s} {'speed-up':>8s} "
          f"{'target':>7s} {'peak MB gw/torch':>17s}")
    for gw, th, target in COMPARISONS:
        r = run_child(args, ["--pair", gw, th])
        tgt = "" if target is None else (">=%.2f" % target)
        mem = f"{memory[gw]:.0f}/{memory[th]:.0f}"
        print(f"{gw:75s} {r['a_ms']:7.2f}  {th:52s} {r['b_ms']:7.2f} "
              f"{r['b_ms'] / r['a_ms']:8.2f} {tgt:>7s} {mem:>17s}", flush=True)


if __name__ == "__main__":
    main()
