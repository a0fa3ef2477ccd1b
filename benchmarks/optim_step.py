"""Per-step time and peak memory of gradwell's optimizers against torch.optim, same run.

    python benchmarks/optim_step.py                 # 20M float32 parameters in 200 tensors
    python benchmarks/optim_step.py --numel 2e6     # a quicker run

Time: each comparison runs in one process holding both optimizers, on separate but identical
parameters, and alternates their steps (gradwell, torch, gradwell, ...) so that the slow phases
of a shared machine hit both alike; after ``--warmup`` steps each, ``--steps`` steps each are
timed and the ratio of the medians is reported (> 1: gradwell is faster). Memory: each variant
also runs alone in a fresh process, whose peak resident memory is reported. Gradients are fixed
random tensors: only the optimizer step is measured.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

VARIANTS: dict[str, str] = {
    # name: python expression building the optimizer from `params` (and a step prelude)
    "torch Adam for-loop": "torch.optim.Adam(params, lr=1e-3, foreach=False)",
    "torch Adam foreach": "torch.optim.Adam(params, lr=1e-3, foreach=True)",
    "torch Adam fused": "torch.optim.Adam(params, lr=1e-3, fused=True)",
    "clip_grad_norm_ + torch Adam fused": "torch.optim.Adam(params, lr=1e-3, fused=True)",
    "gradwell Adam": "gradwell.optim.Adam(params, lr=1e-3)",
    "gradwell Adam(clip=GlobalNorm(1.0), skip_nonfinite=True)":
        "gradwell.optim.Adam(params, lr=1e-3, clip=gradwell.clip.GlobalNorm(1.0), "
        "skip_nonfinite=True)",
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
    ("gradwell Adam(clip=GlobalNorm(1.0), skip_nonfinite=True)",
     "clip_grad_norm_ + torch Adam fused", 1.3),
    ("gradwell RMSprop", "torch RMSprop foreach", 1.0),
    ("gradwell Adadelta", "torch Adadelta foreach", 1.0),
    ("gradwell SGD(momentum)", "torch SGD(momentum) fused", 0.95),
    ("gradwell Adagrad", "torch Adagrad fused", 0.95),
]


def build(name: str, numel: int, tensors: int) -> tuple[list, object, bool]:
    """Parameters with fixed random gradients and the optimizer of variant ``name``."""
    import gradwell  # noqa: F401 - used by the expressions
    import gradwell.clip  # noqa: F401
    import gradwell.optim  # noqa: F401

    torch.manual_seed(0)
    size = numel // tensors
    params = [torch.nn.Parameter(torch.randn(size)) for _ in range(tensors)]
    for p in params:
        p.grad = torch.randn(size)
    opt = eval(VARIANTS[name])  # noqa: S307 - fixed table above
    return params, opt, name.startswith("clip_grad_norm_")


def step(params: list, opt: object, clip: bool) -> float:
    t0 = time.perf_counter()
    if clip:
        torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return time.perf_counter() - t0


def time_pair(a: str, b: str, numel: int, tensors: int, warmup: int, steps: int) -> dict:
    """Alternate the steps of variants ``a`` and ``b``; median milliseconds of each."""
    runs = [build(a, numel, tensors), build(b, numel, tensors)]
    times: list[list[float]] = [[], []]
    for i in range(warmup + steps):
        for k, (params, opt, clip) in enumerate(runs if i % 2 == 0 else runs[::-1]):
            t = step(params, opt, clip)
            if i >= warmup:
                times[k if i % 2 == 0 else 1 - k].append(t)
    return {"a_ms": 1e3 * statistics.median(times[0]), "b_ms": 1e3 * statistics.median(times[1])}


def peak_memory(name: str, numel: int, tensors: int) -> dict:
    """Peak resident memory of a process that builds ``name`` and takes three steps."""
    params, opt, clip = build(name, numel, tensors)
    for _ in range(3):
        step(params, opt, clip)
    return {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(args: argparse.Namespace) -> dict:
    n = int(args.numel)
    if args.pair:
        return time_pair(*args.pair, n, args.tensors, args.warmup, args.steps)
    return peak_memory(args.child, n, args.tensors)


def run_child(args: argparse.Namespace, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--numel", str(args.numel), "--tensors", str(args.tensors),
           "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--threads", str(args.threads), *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--numel", type=float, default=20e6, help="total parameters (default 20M)")
    ap.add_argument("--tensors", type=int, default=200, help="number of tensors (default 200)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="200k parameters, 2 steps: a smoke run")
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
    memory = {name: run_child(args, ["--child", name])["peak_mb"] for name in VARIANTS}
    print(f"{int(args.numel):,} float32 parameters in {args.tensors} tensors, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} alternating steps\n")
    print(f"{'gradwell':58s} {'ms':>7s}  {'vs torch':38s} {'ms':>7s} {'speed-up':>8s} "
          f"{'target':>7s} {'peak MB gw/torch':>17s}")
    for gw, th, target in COMPARISONS:
        r = run_child(args, ["--pair", gw, th])
        tgt = "" if target is None else (">=%.2f" % target)
        mem = f"{memory[gw]:.0f}/{memory[th]:.0f}"
        print(f"{gw:58s} {r['a_ms']:7.2f}  {th:38s} {r['b_ms']:7.2f} "
              f"{r['b_ms'] / r['a_ms']:8.2f} {tgt:>7s} {mem:>17s}", flush=True)


if __name__ == "__main__":
    main()
