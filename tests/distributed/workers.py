"""Functions run on every spawned rank (importable by name, as spawn requires)."""

from __future__ import annotations

import torch

import cases
import harness


def optimizers(rank: int, world: int, out: str, nan_step: int | None, quick: bool,
               how: str = "fsdp") -> None:
    """Every case on an FSDP2 (or DDP) model; rank 0 saves the parameters and skip counts."""
    results = {}
    for name in cases.names(quick):
        model = harness.make_model()
        if how == "fsdp":
            model = harness.shard(model)
        else:
            model = torch.nn.parallel.DistributedDataParallel(model)
        opt = cases.train(name, model, rank, world, nan_step, nan_input=how == "ddp")
        results[name] = {"params": harness.full_params(model),
                         "skipped": torch.tensor(getattr(opt, "skipped_steps", 0))}
    if rank == 0:
        torch.save(results, out)


def watch(rank: int, world: int, out: str, modes: list[str]) -> None:
    """Every monitor mode; each rank saves its records and findings (rank-r file)."""
    import watch_cases
    results = {m: watch_cases.run(m, rank, world, f"{out}.{m}.log{rank}") for m in modes}
    torch.save(results, f"{out}.{rank}")


def fast(rank: int, world: int, out: str) -> None:
    """The fast suite's share, in one spawn (starting ranks is the slow part)."""
    import watch_cases
    optimizers(rank, world, f"{out}.optim", 1, True)
    optimizers(rank, world, f"{out}.ddp", 1, True, how="ddp")
    watch(rank, world, f"{out}.watch", list(watch_cases.MODES))
    guard(rank, world, f"{out}.guard", ["fsdp", "fsdp-disk", "ddp"])


def guard(rank: int, world: int, out: str, hows: list[str]) -> None:
    """Guarded runs; each rank saves its events and parameters."""
    import guard_cases
    res = {h: guard_cases.run(h, rank, world, f"{out}.snaps") for h in hows}
    res["crash"] = guard_cases.crash_during_write(rank, world, f"{out}.crash")
    torch.save(res, f"{out}.{rank}")


def example(rank: int, world: int, out: str) -> None:
    """examples/fsdp2_digits.py's main() on this rank."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[2] / "examples" / "fsdp2_digits.py"
    spec = importlib.util.spec_from_file_location("fsdp2_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.main(), f"{out}.{rank}")
