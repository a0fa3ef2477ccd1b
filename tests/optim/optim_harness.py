"""Shared test harness: a small float64 model, fixed batches, and lock-step comparison with torch.

Every comparison in the optimizer suite runs a *reference* (torch.optim with ``foreach=False``,
or torch's clipping utilities) and *gradwell* side by side on two copies of the same model, one
step at a time, and checks the parameters after every step and the optimizer state at the end.
Nothing here compares gradwell with itself.

Names from ``gradwell.optim`` are looked up when a test runs (``gw("Adam")``), so a name that has
not landed yet fails its own tests instead of breaking collection of the whole suite.
"""

from __future__ import annotations

import copy
import io
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import gradwell

DTYPE = torch.float64
RTOL = 1e-10          # issue 2, item 5: relative error <= 1e-10 in float64
STEPS = 50            # step for step over >= 50 steps
NAMES = ("SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW")
HAS_FUSED = ("SGD", "Adagrad", "Adam", "AdamW")   # torch.optim.X accepts fused=
BASE_LR = {"SGD": 0.05, "Adagrad": 0.05, "RMSprop": 0.01, "Adadelta": 1.0, "Adam": 0.01,
           "AdamW": 0.01}

_gen = torch.Generator().manual_seed(20240611)
X = torch.randn(64, 8, 5, generator=_gen, dtype=DTYPE)
Y = torch.randn(64, 8, 3, generator=_gen, dtype=DTYPE)


def gw(name: str) -> Any:
    """``gradwell.optim.<name>``, looked up at run time."""
    return getattr(gradwell.optim, name)


def paths(name: str) -> list[tuple[str, dict[str, Any]]]:
    """The gradwell code paths to compare: the automatic one and the forced slow one(s)."""
    if name in HAS_FUSED:
        return [("auto", {}), ("fused=False", {"fused": False}), ("fused=True", {"fused": True})]
    return [("auto", {}), ("foreach=False", {"foreach": False})]


class TinyNet(nn.Module):
    """A 2-layer tanh MLP with a 0-dim gain and a bias used only on steps ``k % 3 == 1``.

    ``extra`` therefore has no gradient on most steps, and none on the first: optimizers must
    leave it alone then and create its state late, exactly like torch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 4)
        self.fc2 = nn.Linear(4, 3)
        self.gain = nn.Parameter(torch.tensor(1.0))
        self.extra = nn.Parameter(0.1 * torch.randn(3))

    def forward(self, x: Tensor, k: int) -> Tensor:
        out = self.gain * self.fc2(torch.tanh(self.fc1(x)))
        return out + self.extra if k % 3 == 1 else out


def make_model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().to(DTYPE)


def twin_models(seed: int = 0) -> tuple[TinyNet, TinyNet]:
    ref = make_model(seed)
    return ref, copy.deepcopy(ref)


def loss_at(model: nn.Module, k: int) -> Tensor:
    return F.mse_loss(model(X[k % len(X)], k), Y[k % len(Y)])


def backward_at(model: nn.Module, opt: torch.optim.Optimizer, k: int) -> Tensor:
    opt.zero_grad()
    loss = loss_at(model, k)
    loss.backward()
    return loss


def two_groups(model: TinyNet, kw_a: dict[str, Any], kw_b: dict[str, Any]) -> list[dict]:
    """fc1 in one group, everything else in another, each with its own hyperparameters."""
    rest = [model.fc2.weight, model.fc2.bias, model.gain, model.extra]
    return [{"params": list(model.fc1.parameters()), **kw_a}, {"params": rest, **kw_b}]


# ------------------------------------------------------------------------------ comparisons
def rel_err(a: Tensor, b: Tensor) -> float:
    """max |a - b| / max |b| (b is the reference); inf for a shape or non-finite mismatch."""
    a, b = a.detach().to(DTYPE), b.detach().to(DTYPE)
    if a.shape != b.shape:
        return math.inf
    if a.numel() == 0:
        return 0.0
    if not torch.equal(torch.isfinite(a), torch.isfinite(b)):
        return math.inf
    fin = torch.isfinite(b)
    if not torch.equal(a[~fin].nan_to_num(), b[~fin].nan_to_num()):
        return math.inf
    if not fin.any():
        return 0.0
    diff = (a[fin] - b[fin]).abs().max().item()
    return diff / max(b[fin].abs().max().item(), 1e-12)


def flat_params(opt: torch.optim.Optimizer) -> list[Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]


def rel_errs(got: list[Tensor], ref: list[Tensor]) -> list[float]:
    """:func:`rel_err` for many pairs, in a few foreach calls when everything is finite."""
    got = [g.detach() for g in got]
    ref = [r.detach() for r in ref]
    if [g.shape for g in got] == [r.shape for r in ref] and all(r.numel() for r in ref):
        diffs = torch._foreach_norm(torch._foreach_sub(got, ref), math.inf)
        scales = torch._foreach_norm(ref, math.inf)
        values = torch.stack([*diffs, *scales]).tolist()
        if all(math.isfinite(v) for v in values):
            n = len(ref)
            return [d / max(s, 1e-12) for d, s in zip(values[:n], values[n:])]
    return [rel_err(g, r) for g, r in zip(got, ref)]


def assert_params_close(ref: nn.Module, got: nn.Module, where: str, rtol: float = RTOL) -> None:
    names = [n for n, _ in ref.named_parameters()]
    errs = rel_errs(list(got.parameters()), list(ref.parameters()))
    for name, err in zip(names, errs):
        assert err <= rtol, f"{where}: parameter {name}: relative error {err:.3e} > {rtol:g}"


def _value(v: Any) -> Any:
    return v.item() if isinstance(v, Tensor) and v.numel() == 1 and v.dim() == 0 else v


def assert_state_close(ref_opt: torch.optim.Optimizer, got_opt: torch.optim.Optimizer,
                       where: str = "end", rtol: float = RTOL, lenient_untouched: bool = True,
                       ) -> None:
    """Same state keys per parameter, tensors within ``rtol``, step counters equal.

    ``lenient_untouched`` accepts a missing gradwell state where torch holds only its
    initial values (torch.optim.Adagrad creates state in ``__init__``); a dedicated test checks
    that case strictly.
    """
    for i, (rp, gp) in enumerate(zip(flat_params(ref_opt), flat_params(got_opt))):
        rs, gs = ref_opt.state.get(rp, {}), got_opt.state.get(gp, {})
        if lenient_untouched and not gs and rs and _value(rs.get("step", 1)) == 0:
            continue
        assert set(gs) == set(rs), f"{where}: param {i}: state keys {sorted(gs)} != {sorted(rs)}"
        for key, rv in rs.items():
            gv = gs[key]
            if key == "step":
                assert float(_value(gv)) == float(_value(rv)), (
                    f"{where}: param {i}: step {_value(gv)} != torch's {_value(rv)}")
            elif isinstance(rv, Tensor):
                err = rel_err(gv, rv)
                assert err <= rtol, f"{where}: param {i}: state[{key!r}] rel. error {err:.3e}"
            else:
                assert gv == rv, f"{where}: param {i}: state[{key!r}] {gv!r} != {rv!r}"


def assert_groups_equal(ref_opt: torch.optim.Optimizer, got_opt: torch.optim.Optimizer,
                        where: str) -> None:
    """Every hyperparameter torch keeps in a group has the same value in gradwell's group."""
    skip = {"params", "foreach", "fused", "differentiable", "capturable"}
    for i, (rg, gg) in enumerate(zip(ref_opt.param_groups, got_opt.param_groups)):
        for k, v in rg.items():
            if k in skip:
                continue
            assert k in gg, f"{where}: group {i} lacks hyperparameter {k!r}"
            assert _value(gg[k]) == _value(v) or (gg[k] == v), (
                f"{where}: group {i}: {k}={gg[k]!r}, torch has {v!r}")


# ------------------------------------------------------------------------------ lock-step runs
Factory = Callable[[nn.Module], torch.optim.Optimizer]


class Side:
    """One model with its optimizer and optional scheduler."""

    def __init__(self, model: nn.Module, make_opt: Factory, make_sched: Callable | None) -> None:
        self.model, self.opt = model, make_opt(model)
        self.sched = make_sched(self.opt) if make_sched else None

    def step(self, k: int, edit: Callable[[nn.Module], Any] | None = None) -> None:
        backward_at(self.model, self.opt, k)
        if edit is not None:
            edit(self.model)
        self.opt.step()
        if self.sched is not None:
            self.sched.step()


def lockstep(make_ref: Factory, make_got: Factory, steps: int = STEPS, *,
             make_sched: Callable | None = None, ref_edit: Callable | None = None,
             events: dict[int, Callable[[Side, Side], None]] | None = None,
             seed: int = 0) -> tuple[Side, Side]:
    """Train torch (``make_ref``) and gradwell (``make_got``) side by side and compare.

    ``ref_edit(model)`` runs on the reference side between backward and step (e.g. torch's
    clipping); ``events[k](ref, got)`` runs before step ``k`` (e.g. a checkpoint reload).
    """
    ref_model, got_model = twin_models(seed)
    ref, got = Side(ref_model, make_ref, make_sched), Side(got_model, make_got, make_sched)
    for k in range(steps):
        if events and k in events:
            events[k](ref, got)
        ref.step(k, ref_edit)
        got.step(k)
        assert_params_close(ref.model, got.model, f"step {k}")
        if ref.sched is not None:
            assert ref.opt.param_groups[0]["lr"] == got.opt.param_groups[0]["lr"], f"lr at {k}"
    assert_state_close(ref.opt, got.opt)
    return ref, got


def torch_opt(name: str, **kw: Any) -> Factory:
    """Factory for the reference: ``torch.optim.<name>(..., foreach=False)``."""
    return lambda m: getattr(torch.optim, name)(m.parameters(), foreach=False, **kw)


def gw_opt(name: str, **kw: Any) -> Factory:
    return lambda m: gw(name)(m.parameters(), **kw)


def roundtrip(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Save to bytes and load back, as a checkpoint on disk would be."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """A deep copy of parameters, per-parameter state and group hyperparameters."""
    params = [p.detach().clone() for p in model.parameters()]
    state = []
    for p in flat_params(opt):
        s = opt.state.get(p)
        state.append(None if s is None or not s else
                     {k: v.detach().clone() if isinstance(v, Tensor) else copy.deepcopy(v)
                      for k, v in s.items()})
    groups = [{k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
              for g in opt.param_groups]
    return {"params": params, "state": state, "groups": groups}


def assert_bitwise_equal(before: dict[str, Any], after: dict[str, Any], where: str) -> None:
    for i, (a, b) in enumerate(zip(before["params"], after["params"])):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{where}: parameter {i} changed"
    for i, (a, b) in enumerate(zip(before["state"], after["state"])):
        assert (a is None) == (b is None), f"{where}: state of param {i}: {a!r} became {b!r}"
        if a is None:
            continue
        assert set(a) == set(b), f"{where}: state keys of param {i}: {sorted(a)} -> {sorted(b)}"
        for k in a:
            va, vb = a[k], b[k]
            if isinstance(va, Tensor):
                assert va.dtype == vb.dtype and torch.equal(va, vb), (
                    f"{where}: state[{k!r}] of param {i} changed: {va.flatten()[:3]} -> "
                    f"{vb.flatten()[:3]}")
            else:
                assert va == vb, f"{where}: state[{k!r}] of param {i}: {va!r} -> {vb!r}"
    assert before["groups"] == after["groups"], f"{where}: param groups changed"
