"""Issue 10, item 2: PyTorch's own optimizer test database, run against gradwell's drop-ins.

``torch.testing._internal.common_optimizers.optim_db`` (shipped in the torch wheel) lists, per
optimizer, the configurations torch tests (``optim_inputs_func``; with
``_get_optim_inputs_including_global_cliquey_kwargs`` also the ``fused`` and ``differentiable``
variants) and the inputs it must refuse (``optim_error_inputs_func``). Here every CPU
configuration is run, in float64 for 10 steps (every third through a closure), by torch and by
gradwell on the same parameters, given once as a list and once as two parameter groups; the
parameters and the state must agree to 1e-10 after every step. Each configuration also runs
with ``foreach=True`` (torch lists foreach only for CUDA), where torch accepts it.

Every error input must raise torch's error type (or warning) with a message matching torch's.

Deliberate differences are listed in :data:`DELIBERATE` and checked to behave as stated
(docs/optimizers.md, "Everything torch.optim accepts", says why): nothing is skipped silently.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch

from optim_harness import NAMES, gw

common = pytest.importorskip("torch.testing._internal.common_optimizers",
                             reason="torch's optim_db needs expecttest (the dev extra)")

DEVICE, DTYPE, STEPS, RTOL = "cpu", torch.float64, 10, 1e-10
INFOS = {i.optim_cls.__name__: i for i in common.optim_db if i.optim_cls.__name__ in NAMES}

#: What gradwell refuses on purpose, and how (a configuration matching the key raises this).
DELIBERATE = {
    "differentiable": (ValueError, "differentiable=True is not supported"),
}


def deliberate(kwargs: dict) -> tuple[type, str] | None:
    return DELIBERATE["differentiable"] if kwargs.get("differentiable") else None


def configs(name: str) -> list[tuple[str, dict]]:
    info = INFOS[name]
    out = []
    for oi in common._get_optim_inputs_including_global_cliquey_kwargs(DEVICE, DTYPE, info):
        assert oi.params is None, "optim_db gives these configs for the test's own parameters"
        out.append((oi.desc, dict(oi.kwargs)))
        if not oi.kwargs.get("fused") and not oi.kwargs.get("differentiable"):
            out.append((oi.desc + " & foreach", {**oi.kwargs, "foreach": True}))
    return out


CASES = [pytest.param(name, kw, form, id=f"{name}-{desc}-{form}")
         for name in NAMES for desc, kw in configs(name) for form in ("list", "groups")]


def make_params() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(10, 5, generator=g, dtype=DTYPE).requires_grad_()
    b = torch.randn(10, generator=g, dtype=DTYPE).requires_grad_()
    return [w, b]


_g = torch.Generator().manual_seed(1)
INPUTS = torch.randn(STEPS, 5, generator=_g, dtype=DTYPE)


def loss_fn(params: list[torch.Tensor], k: int) -> torch.Tensor:
    w, b = params
    return torch.tanh(w @ INPUTS[k] + b).pow(2).sum() + 0.1 * w.abs().sum()


def build(cls, params, kw, form):
    if form == "list":
        return cls(params, **kw)
    return cls([{"params": [params[0]]}, {"params": [params[1]]}], **kw)


def run_step(opt, params, k):
    def closure():
        opt.zero_grad()
        loss = loss_fn(params, k)
        loss.backward()
        return loss
    if k % 3 == 2:
        return opt.step(closure)
    closure()
    return opt.step()


def torch_or_error(cls, params, kw, form):
    try:
        return build(cls, params, kw, form), None
    except Exception as exc:  # noqa: BLE001 - the exact error is compared below
        return None, exc


@pytest.mark.parametrize("name, kw, form", CASES)
def test_optim_db_config_matches_torch(name, kw, form) -> None:
    ref_params, my_params = make_params(), make_params()
    ref, err = torch_or_error(getattr(torch.optim, name), ref_params, copy.deepcopy(kw), form)
    if err is not None:  # torch refuses it (e.g. Tensor lr with foreach=True): so must we
        with pytest.raises(type(err)) as exc:
            build(gw(name), my_params, copy.deepcopy(kw), form)
        assert str(err).split(":")[0] in str(exc.value)
        return
    special = deliberate(kw)
    if special is not None:
        with pytest.raises(special[0], match=special[1]):
            build(gw(name), my_params, copy.deepcopy(kw), form)
        return
    mine = build(gw(name), my_params, copy.deepcopy(kw), form)
    for k in range(STEPS):
        ref_loss, my_loss = run_step(ref, ref_params, k), run_step(mine, my_params, k)
        if k % 3 == 2:
            torch.testing.assert_close(my_loss, ref_loss, rtol=RTOL, atol=0)
        for p, q in zip(ref_params, my_params):
            torch.testing.assert_close(q, p, rtol=RTOL, atol=1e-12, msg=lambda m: f"step {k}: {m}")
    for p, q in zip(ref_params, my_params):
        assert set(mine.state[q]) == set(ref.state[p])
        for key, v in ref.state[p].items():
            torch.testing.assert_close(mine.state[q][key].to(v.dtype), v, rtol=RTOL, atol=1e-12)


ERROR_CASES = [pytest.param(name, i, id=f"{name}-{i}-{e.error_regex[:40]}")
               for name in NAMES
               for i, e in enumerate(INFOS[name].optim_error_inputs_func(device=DEVICE,
                                                                          dtype=DTYPE))]


@pytest.mark.parametrize("name, index", ERROR_CASES)
def test_optim_db_error_input_raises_torchs_error(name, index) -> None:
    e = INFOS[name].optim_error_inputs_func(device=DEVICE, dtype=DTYPE)[index]
    oi = e.optimizer_error_input
    params = oi.params if oi.params is not None else make_params()

    def attempt():
        opt = gw(name)(params, **oi.kwargs)
        if e.error_on == common.OptimizerErrorEnum.STEP_ERROR:
            for p in opt.param_groups[0]["params"]:
                p.grad = torch.rand_like(p)
            opt.step()

    if issubclass(e.error_type, Warning):
        with pytest.warns(e.error_type, match=e.error_regex):
            attempt()
    else:
        with pytest.raises(e.error_type) as exc:
            attempt()
        assert re.search(e.error_regex, str(exc.value)), (
            f"{str(exc.value)!r} does not match torch's {e.error_regex!r}")


def test_the_database_covers_all_six_and_their_flags() -> None:
    assert set(INFOS) == set(NAMES)
    flags = {k for name in NAMES for _, kw in configs(name) for k in kw}
    assert {"lr", "maximize", "weight_decay", "amsgrad", "centered", "nesterov", "momentum",
            "differentiable", "fused", "foreach"} <= flags
    assert any(isinstance(kw.get("lr"), torch.Tensor) for name in NAMES for _, kw in configs(name))
