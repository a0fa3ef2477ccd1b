"""Per-step time and peak memory of gradwell's optimizers against torch.optim, same run.

    python benchmarks/optim_step.py                 # 20M float32 parameters in 200 tensors
    python benchmarks/optim_step.py --numel 2e6     # a quicker run

Each variant runs in its own process (so its peak resident memory is its own), takes
``--warmup`` steps, then times ``--steps`` steps; the median is reported. Gradients are fixed
random tensors: only the optimizer step is timed. Ratios are against the torch variant named in
the "vs" column (> 1 means gradwell is faster).
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


def child(name: str, numel: int, tensors: int, warmup: int, steps: int) -> dict:
    """Run one variant in this process and return its timings and peak memory."""
    import gradwell  # noqa: F401 - used by the expressions
    import gradwell.clip  # noqa: F401
    import gradwell.optim  # noqa: F401

    torch.manual_seed(0)
    size = numel // tensors
    params = [torch.nn.Parameter(torch.randn(size)) for _ in range(tensors)]
    for p in params:
        p.grad = torch.randn(size)
    opt = eval(VARIANTS[name])  # noqa: S307 - fixed table above
    clip = name.startswith("clip_grad_norm_")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"median_ms": 1e3 * statistics.median(times), "peak_mb": peak / 1024,
            "setup_mb": rss_before / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--numel", type=float, default=20e6, help="total parameters (default 20M)")
    ap.add_argument("--tensors", type=int, default=200, help="number of tensors (default 200)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="200k parameters, 2 steps: a smoke run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.numel, args.warmup, args.steps = 2e5, 1, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, int(args.numel), args.tensors, args.warmup,
                               args.steps)))
        return
    results = {}
    for name in VARIANTS:
        cmd = [sys.executable, __file__, "--child", name, "--numel", str(args.numel),
               "--tensors", str(args.tensors), "--warmup", str(args.warmup),
               "--steps", str(args.steps), "--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
        r = results[name]
        print(f"{name:60s} {r['median_ms']:9.2f} ms/step   peak RSS {r['peak_mb']:8.1f} MB",
              flush=True)
    print(f"\n{int(args.numel):,} float32 parameters in {args.tensors} tensors, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print(f"{'gradwell':58s} {'vs torch':38s} {'speed-up':>8s} {'target':>7s} "
          f"{'peak MB (gw/torch)':>20s}")
    for gw, th, target in COMPARISONS:
        ratio = results[th]["median_ms"] / results[gw]["median_ms"]
        tgt = "" if target is None else (">=%.2f" % target)
        mem = f"{results[gw]['peak_mb']:.0f}/{results[th]['peak_mb']:.0f}"
        print(f"{gw:58s} {th:38s} {ratio:8.2f} {tgt:>7s} {mem:>20s}")


if __name__ == "__main__":
    main()
