"""Issue 10, item 3: every real dtype torch trains, on gradwell's default path, with and without
``clip=`` / ``skip_nonfinite=``, against torch's *default* path (``torch.optim.X(params)``, which
on the CPU is the single-tensor loop) on a model that must actually learn.

The reference for ``clip=GlobalNorm(c)`` is ``torch.nn.utils.clip_grad_norm_(params, c)`` before
torch's step. float32/float64 must agree to rounding; float16/bfloat16 to a small fraction of
how far the weights moved (torch rounds each elementwise op to the half type, and gradwell's
foreach ops group the same arithmetic slightly differently). Each run must also learn: the loss
falls and most weights move (torch 2.13's CPU fused SGD kernel, once gradwell's default for
half precision, left 0 % of the weights of a float16 model unchanged... moved).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradwell
from optim_harness import NAMES, gw

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
LR = {"SGD": 0.5, "Adagrad": 0.05, "RMSprop": 0.003, "Adadelta": 20.0, "Adam": 0.01,
      "AdamW": 0.01}
#: float16 cannot hold torch's default eps (1e-8, 1e-10 become 0 and 0/0 is NaN, in torch too)
HALF_EPS = {"Adagrad": 1e-4, "RMSprop": 1e-4, "Adam": 1e-4, "AdamW": 1e-4}
STEPS = 25
MAX_NORM = 0.3

_g = torch.Generator().manual_seed(7)
X = torch.randn(256, 10, generator=_g)
Y = (X @ torch.randn(10, 4, generator=_g)).argmax(1)   # a teacher's labels: learnable


def make_model(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 4)).to(dtype)


def run(model: nn.Module, opt: torch.optim.Optimizer, dtype: torch.dtype, clip: bool
        ) -> list[float]:
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = F.cross_entropy(model(X.to(dtype)).float(), Y)
        loss.backward()
        if clip and not isinstance(opt, gradwell.optim.Optimizer):
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        opt.step()
        losses.append(loss.item())
    return losses


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in model.parameters()])


@pytest.mark.parametrize("clip", [False, True], ids=["plain", "clip+skip"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[1])
@pytest.mark.parametrize("name", NAMES)
def test_default_path_trains_like_torchs_default_path(name, dtype, clip) -> None:
    ref = make_model(dtype)
    mine = copy.deepcopy(ref)
    start = flat(ref)
    hyper = {"lr": LR[name]}
    if dtype == torch.float16 and name in HALF_EPS:
        hyper["eps"] = HALF_EPS[name]
    ref_losses = run(ref, getattr(torch.optim, name)(ref.parameters(), **hyper), dtype, clip)
    kw = {"clip": gradwell.clip.GlobalNorm(MAX_NORM), "skip_nonfinite": True} if clip else {}
    my_losses = run(mine, gw(name)(mine.parameters(), **hyper, **kw), dtype, clip)

    moved_ref, moved_mine = flat(ref) - start, flat(mine) - start
    assert ref_losses[-1] < 0.9 * ref_losses[0], "the reference must learn on this problem"
    assert my_losses[-1] < 0.9 * my_losses[0], f"gradwell {name} did not learn: {my_losses}"
    assert (moved_mine != 0).double().mean() > 0.9, "most weights must move"
    if dtype in (torch.float32, torch.float64):
        tol = 1e-10 if dtype == torch.float64 else 1e-4
        assert torch.allclose(flat(mine), flat(ref), rtol=tol, atol=tol)
    else:
        gap = (moved_mine - moved_ref).norm() / moved_ref.norm()
        assert gap < 0.05, f"{name} {dtype}: {gap:.3g} of the reference's movement apart"
        assert abs(my_losses[-1] - ref_losses[-1]) < 0.02 * ref_losses[0]
