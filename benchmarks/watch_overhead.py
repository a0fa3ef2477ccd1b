"""Per-step overhead of gradwell.watch, compared in the same process with the usual alternatives.

    python benchmarks/watch_overhead.py              # the issue's sizes (slow on small CPUs)
    python benchmarks/watch_overhead.py --quick      # a smaller, faster run to check it works

Models (CPU): a 20-layer MLP, width 512, batch 256, a small CNN (4 conv layers, 32-64
channels, BatchNorm) on 32x32 images, batch 64, and Hugging Face GPT-2 from a config (4 blocks,
width 256, 8 x 64 tokens), all trained with torch.optim.Adam. Each variant trains its own copy
of the model, and their steps alternate (bare, watch, ..., bare, watch, ...) so that machine
drift hits all of them alike. Variants (targets: the MLP and CNN of issue 3; on GPT-2, issue 12
asks <= 1.05x for ``watch()`` and <= 1.01x for ``every=10``):

* ``bare``                        - no monitoring;
* ``watch(activations=False)``    - gradient, weight and update statistics (target <= 1.03x);
* ``watch()``                     - plus activation and back-propagated gradient statistics
                                    (target <= 1.10x);
* ``watch(every=10)``             - one step in ten (target <= 1.01x);
* ``naive .norm().item()``        - a per-parameter Python loop, one host read per parameter
                                    (cheap on CPU, where a read is no synchronisation; on a GPU
                                    every ``.item()`` waits for the device);
* ``add_histogram``               - TensorBoard's ``SummaryWriter.add_histogram`` of every
                                    gradient per step (emulated with numpy's histogram, which is
                                    what it computes, when tensorboard is not installed).

Steps are summed in blocks of 10 (so every block holds one recorded step of ``every=10`` and one
update snapshot of the default). Printed: milliseconds per step of the median block, and the
ratio to ``bare`` paired by block (the median over blocks of a block's time over bare's time in
that block), by wall clock and by the process's CPU time. Results belong in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import tempfile
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

import gradwell


#: steps per timed block: one recorded step of ``every=10``, one update snapshot of the default
BLOCK = 10


def mlp(depth: int, width: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def cnn(channels: int) -> nn.Module:
    c = channels
    return nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
        nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(2 * c, 10))


class GPT2Logits(nn.Module):
    """Hugging Face GPT-2 (from a config, random init, tied embeddings) returning flat logits,
    so the benchmark's cross-entropy applies unchanged."""

    def __init__(self, layers: int, width: int, vocab: int, seq: int) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel
        cfg = GPT2Config(n_layer=layers, n_embd=width, n_head=max(1, width // 64),
                         vocab_size=vocab, n_positions=seq, bos_token_id=0, eos_token_id=0)
        self.lm = GPT2LMHeadModel(cfg)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.lm(input_ids=ids).logits
        return logits.reshape(-1, logits.shape[-1])


def histogram_writer() -> tuple[Callable[[str, torch.Tensor, int], None], str]:
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        pos = 1e-12 * 1.1 ** np.arange(0, 775)          # TensorFlow's default buckets
        edges = np.concatenate([-pos[::-1], [0.0], pos[pos < 1e20]])

        def emulate(tag: str, t: torch.Tensor, step: int) -> None:
            v = t.detach().cpu().numpy().astype(float)   # what add_histogram computes
            np.histogram(v, bins=edges)
            v.min(), v.max(), v.sum(), v.dot(v.ravel()) if v.ndim == 1 else (v * v).sum()
        return emulate, "add_histogram (emulated with numpy)"
    writer = SummaryWriter(tempfile.mkdtemp())
    return writer.add_histogram, "add_histogram (tensorboard)"


class Variant:
    """Set up before a round, called after backward each step, torn down after the round."""

    def __init__(self, name: str, start: Callable[[nn.Module], Any] | None = None,
                 per_step: Callable[[Any, nn.Module, int], None] | None = None) -> None:
        self.name, self.start, self.per_step = name, start, per_step


def variants() -> list[Variant]:
    hist, hist_name = histogram_writer()

    def naive(state: Any, model: nn.Module, step: int) -> None:
        for p in model.parameters():
            p.grad.norm().item()

    def histograms(state: Any, model: nn.Module, step: int) -> None:
        for name, p in model.named_parameters():
            hist(f"grad/{name}", p.grad, step)

    return [
        Variant("bare"),
        Variant("watch(activations=False)", lambda m: gradwell.watch(m, activations=False),
                lambda mon, m, s: mon.step()),
        Variant("watch()", lambda m: gradwell.watch(m), lambda mon, m, s: mon.step()),
        Variant("watch(every=10)", lambda m: gradwell.watch(m, every=10),
                lambda mon, m, s: mon.step()),
        Variant("naive .norm().item()", None, naive),
        Variant(hist_name, None, histograms),
    ]


class Copy:
    """One copy of the model with its own optimizer; each block, another variant drives it."""

    def __init__(self, model: nn.Module, lr: float = 1e-4) -> None:
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)

    def step(self, v: Variant, state: Any, count: int, x: torch.Tensor,
             y: torch.Tensor) -> tuple[float, float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        self.opt.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(self.model(x), y).backward()
        t1 = time.perf_counter()
        if v.per_step is not None:
            v.per_step(state, self.model, count)
        t2 = time.perf_counter()
        self.opt.step()
        return time.perf_counter() - t0, time.process_time() - c0, t2 - t1


def _block(pairs: list[tuple[Variant, Copy]], x: torch.Tensor, y: torch.Tensor,
           order: random.Random) -> dict[str, list[float]]:
    """One block: each variant starts on its copy, takes ``BLOCK`` steps interleaved with the
    others' in a random order, and closes (the close, which records the pending step, is
    timed as part of its last step). Returns per-step means of (wall, cpu, call) by name."""
    states = {v.name: v.start(c.model) if v.start else None for v, c in pairs}
    acc = {v.name: [0.0, 0.0, 0.0] for v, _ in pairs}
    for i in range(BLOCK):
        order.shuffle(pairs)            # what runs before a step matters (caches): mix it
        for v, c in pairs:
            w0, c0 = time.perf_counter(), time.process_time()
            _, _, inside = c.step(v, states[v.name], i, x, y)
            if i == BLOCK - 1 and states[v.name] is not None:
                states[v.name].close()
            for j, t in enumerate((time.perf_counter() - w0, time.process_time() - c0, inside)):
                acc[v.name][j] += t / BLOCK
    return acc


def bench(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, args: Any) -> None:
    """The variants drive copies of ``model`` (one each, reassigned every block, so no variant
    keeps a copy whose memory happens to be faster) and their steps alternate in a random
    order, so drift, a shared VM's slow phases and the caches a previous step left hit all
    alike. A block is ``BLOCK`` steps of each variant (one recorded step of ``every=10`` and
    one update snapshot of the default, each monitor new at the block's start), and each
    block is compared with bare's same block."""
    vs = variants()
    copies = [Copy(copy.deepcopy(model)) for _ in vs]
    names, order = [v.name for v in vs], random.Random(0)
    for _ in range(args.warmup):
        for c in copies:
            c.step(vs[0], None, 0, x, y)
    blocks: dict[str, list[tuple[float, ...]]] = {n: [] for n in names}
    for b in range(args.rounds * max(1, args.steps // BLOCK)):
        pairs = [(v, copies[(i + b) % len(copies)]) for i, v in enumerate(vs)]
        for k, a in _block(pairs, x, y, order).items():
            blocks[k].append(tuple(a))
    med = {k: tuple(statistics.median(col) for col in zip(*blocks[k])) for k in names}
    # the ratio is paired: each block's time over bare's time in the same block, then the median
    ratio = {k: [statistics.median(v[i] / b[i] for v, b in zip(blocks[k], blocks["bare"]))
                 for i in (0, 1)] for k in names}
    spread = min(w for w, _, _ in blocks["bare"]) / med["bare"][0]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n{name}: {n_params / 1e6:.2f}M parameters, batch {x.shape[0]}, "
          f"{len(blocks['bare'])} blocks of {BLOCK} alternating steps, "
          f"{torch.get_num_threads()} threads (bare: best block / median block = {spread:.2f}; "
          "near 1 means a quiet machine)")
    print(f"  {'variant':<40}{'wall ms':>10}{'ratio':>8}{'cpu ms':>10}{'ratio':>8}"
          f"{'call ms':>10}")
    for k in names:
        (w, c, inside), (rw, rc) = med[k], ratio[k]
        print(f"  {k[:40]:<40}{w * 1e3:>10.2f}{rw:>8.3f}{c * 1e3:>10.2f}{rc:>8.3f}"
              f"{inside * 1e3:>10.2f}")
    print("  (ms: the median block, per step; ratio: the median over blocks of the block's time "
          "over bare's in the same block; call ms: time inside the per-step call - mon.step(), "
          "the .item() loop or the histograms - without the forward/backward hooks)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small models, few steps: a smoke run")
    p.add_argument("--steps", type=int, help="timed steps per round (20; quick: 4)")
    p.add_argument("--warmup", type=int, help="untimed steps per round (3; quick: 1)")
    p.add_argument("--rounds", type=int, help="interleaved rounds per variant (5; quick: 2)")
    p.add_argument("--depth", type=int, help="MLP layers (20; quick: 8)")
    p.add_argument("--width", type=int, help="MLP width (512; quick: 128)")
    p.add_argument("--batch", type=int, help="batch size (256; quick: 64)")
    p.add_argument("--channels", type=int, help="CNN width (32; quick: 8)")
    p.add_argument("--image", type=int, help="CNN input size (32; quick: 16)")
    p.add_argument("--cnn-batch", type=int, help="CNN batch size (64; quick: 32)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--gpt2-layers", type=int, help="GPT-2 blocks (4; quick: 2)")
    p.add_argument("--gpt2-width", type=int, help="GPT-2 width (256; quick: 64)")
    p.add_argument("--only", choices=["mlp", "cnn", "gpt2"], default=None)
    args = p.parse_args()
    full = dict(steps=20, warmup=3, rounds=5, depth=20, width=512, batch=256, channels=32,
                image=32, cnn_batch=64, gpt2_layers=4, gpt2_width=256)
    quick = dict(steps=4, warmup=1, rounds=2, depth=8, width=128, batch=64, channels=8, image=16,
                 cnn_batch=32, gpt2_layers=2, gpt2_width=64)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.only in (None, "mlp"):
        x, y = torch.randn(args.batch, args.width), torch.randint(0, 10, (args.batch,))
        bench(f"MLP {args.depth}x{args.width}", mlp(args.depth, args.width), x, y, args)
    if args.only in (None, "cnn"):
        x = torch.randn(args.cnn_batch, 3, args.image, args.image)
        y = torch.randint(0, 10, (args.cnn_batch,))
        bench(f"CNN {args.channels} channels, {args.image}x{args.image}", cnn(args.channels),
              x, y, args)
    if args.only in (None, "gpt2"):
        try:
            model = GPT2Logits(args.gpt2_layers, args.gpt2_width, vocab=1024, seq=64)
        except ImportError:
            print("\nGPT-2: skipped (pip install transformers, part of gradwell[dev])")
            return
        ids = torch.randint(0, 1024, (8, 64))
        bench(f"HF GPT-2 {args.gpt2_layers}x{args.gpt2_width}, 8x64 tokens", model, ids,
              ids.reshape(-1), args)


if __name__ == "__main__":
    main()
