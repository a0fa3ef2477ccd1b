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
    tensor_parallel_refused(rank, world, f"{out}.tp")


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


def tensor_parallel_refused(rank: int, world: int, out: str) -> None:
    """A column-sharded (tensor-parallel) parameter: the optimizer, AGC and the monitor refuse
    it with a NotImplementedError naming the placement; rank 0 saves the messages."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    import gradwell
    mesh = init_device_mesh("cpu", (world,))
    layer = torch.nn.Linear(4, 4, bias=False)
    layer.weight = torch.nn.Parameter(distribute_tensor(layer.weight.detach(), mesh, [Shard(1)]))
    layer.weight.grad = distribute_tensor(torch.ones(4, 4), mesh, [Shard(1)])
    messages = []
    for make in (lambda: gradwell.optim.Adam(layer.parameters(), clip=gradwell.clip.GlobalNorm(1.0)),
                 lambda: gradwell.optim.SGD(layer.parameters(), lr=0.1,
                                            clip=gradwell.clip.AGC(0.01))):
        try:
            make().step()
            messages.append("")
        except NotImplementedError as err:
            messages.append(str(err))
    try:
        gradwell.watch(layer)
        messages.append("")
    except NotImplementedError as err:
        messages.append(str(err))
    if rank == 0:
        torch.save(messages, out)


def locate(rank: int, world: int, out: str) -> None:
    """A NaN in rank 0's batch under DDP: each rank's ``gradwell.locate`` origin, and the
    torch-only evidence of what each rank's own step held."""
    import gradwell
    model = torch.nn.parallel.DistributedDataParallel(harness.make_model(dtype=torch.float32))
    torch.manual_seed(rank)
    x, y = torch.randn(4, 6), torch.randn(4, 3)
    if rank == 0:
        x[1, 2] = float("nan")
    with gradwell.locate(model) as loc:
        out_t = model(x)
        loss = torch.nn.functional.mse_loss(out_t, y)
        loss.backward()
    grads = [p.grad for p in model.parameters()]
    torch.save({"origin": loc.origin.to_dict() if loc.origin else None,
                "text": str(loc.origin), "outputs_finite": bool(torch.isfinite(out_t).all()),
                "grads_finite": all(bool(torch.isfinite(g).all()) for g in grads)},
               f"{out}.{rank}")


def guard_replay(rank: int, world: int, out: str, how: str) -> None:
    """The Guard with ``replay=`` under DDP or FSDP2: a NaN in the last rank's share of one
    batch; every rank's triage and origin of that step."""
    import gradwell
    import watch_cases
    model = watch_cases.wrap(harness.make_model(), how, world)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    guard = gradwell.guard.Guard(model, opt, spike_z=None)
    x, y = harness.data(3)
    x[1, -1, 0] = float("nan")
    loss_fn = torch.nn.functional.mse_loss
    for s in range(3):
        xs, ys = harness.part(x[s], rank, world), harness.part(y[s], rank, world)
        opt.zero_grad()
        loss = loss_fn(model(xs), ys)
        loss.backward()
        guard.step(loss, replay=gradwell.guard.Batch(xs, ys, loss_fn))
    torch.save([{"step": e.step, "action": e.action, "reason": e.reason,
                 "triage": e.detail.get("triage"), "origin": e.detail.get("origin")}
                for e in guard.events], f"{out}.{rank}")
