"""gradwell's clipped, guarded, watched step against clip_grad_norm_ + torch AdamW(fused), FSDP2.

    python benchmarks/distributed_overhead.py            # 2 ranks (gloo), 8 blocks of width 512
    python benchmarks/distributed_overhead.py --quick    # a small, fast run to check it works

Both sides train the same FSDP2 model (``fully_shard`` per block, then the root) on the same
batches, in one process group, alternating step by step so machine drift hits both alike:

* ``torch``: ``loss.backward(); clip_grad_norm_(params, 1.0); AdamW(fused=True).step()``;
* ``gradwell``: ``loss.backward(); mon.step(loss); guard.step(loss)`` with
  ``gradwell.optim.AdamW(clip=GlobalNorm(1.0), skip_nonfinite=True)``, a ``Guard`` (no
  snapshot in the timed steps) and ``gradwell.watch`` (activations off): the clip norm, the skip,
  the guard's loss and norm, and the monitor's norms.

Times are whole steps (forward, backward, step), median over the timed steps, as rank 0 sees
them. Ratio = gradwell / torch (< 1: gradwell is faster).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn


def model(blocks: int, width: int) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(blocks):
        layers += [nn.Linear(width, width), nn.LayerNorm(width), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def shard(m: nn.Module) -> nn.Module:
    from torch.distributed.fsdp import fully_shard
    for layer in m:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    return fully_shard(m)


def worker(rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    import gradwell
    m_t, m_g = shard(model(args.blocks, args.width)), shard(model(args.blocks, args.width))
    opt_t = torch.optim.AdamW(m_t.parameters(), lr=1e-4, fused=True)
    opt_g = gradwell.optim.AdamW(m_g.parameters(), lr=1e-4, clip=gradwell.clip.GlobalNorm(1.0),
                                 skip_nonfinite=True)
    mon = gradwell.watch(m_g, optimizer=opt_g, activations=False)
    guard = gradwell.guard.Guard(m_g, opt_g, snapshot_every=10 ** 9, spike_z=None)
    gen = torch.Generator().manual_seed(rank)
    times: dict[str, list[float]] = {"torch": [], "gradwell": []}
    for step in range(args.warmup + args.steps):
        x = torch.randn(args.batch, args.width, generator=gen)
        y = torch.randint(0, 10, (args.batch,), generator=gen)
        for name in ("torch", "gradwell"):
            dist.barrier()
            t0 = time.perf_counter()
            if name == "torch":
                opt_t.zero_grad()
                loss = nn.functional.cross_entropy(m_t(x), y)
                loss.backward()
                nn.utils.clip_grad_norm_(m_t.parameters(), 1.0)
                opt_t.step()
            else:
                opt_g.zero_grad()
                loss = nn.functional.cross_entropy(m_g(x), y)
                loss.backward()
                mon.step(loss)
                guard.step(loss)
            dt = time.perf_counter() - t0
            if step >= args.warmup:
                times[name].append(dt)
    mon.close()
    if rank == 0:
        n = sum(p.numel() for p in m_t.parameters())
        t, g = (statistics.median(times[k]) * 1e3 for k in ("torch", "gradwell"))
        print(f"{n:,} parameters in {len(list(m_t.parameters()))} tensors, FSDP2 on {world} "
              f"ranks (gloo), batch {args.batch} per rank, torch {torch.__version__}, "
              f"{args.threads} thread(s) per rank, median of {args.steps} alternating steps")
        print(f"{'step':70s} {'ms':>8s}")
        print(f"{'clip_grad_norm_ + torch AdamW(fused=True)':70s} {t:8.2f}")
        print(f"{'gradwell AdamW(clip=GlobalNorm, skip_nonfinite) + Guard + watch':70s} {g:8.2f}")
        print(f"ratio gradwell / torch: {g / t:.2f}")
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a small, fast run to check it works")
    args = ap.parse_args()
    if args.quick:
        args.blocks, args.width, args.steps, args.warmup = 2, 64, 3, 1
    for attempt in range(3):
        with socket.socket() as s:          # a free port; another process may take it before
            s.bind(("127.0.0.1", 0))        # rank 0 binds it (tests run in parallel): retry
            port = s.getsockname()[1]
        try:
            mp.spawn(worker, args=(args.world, port, args), nprocs=args.world, join=True)
            return
        except mp.ProcessRaisedException as e:
            if attempt == 2 or "address already in use" not in str(e).lower():
                raise


if __name__ == "__main__":
    main()
