"""gradwell.locate names the planted op and module; healthy steps give None; nothing changes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gradwell
from faults import Fault, faults, gpt2

FAULTS = faults()
FAST = [f for f in FAULTS if not f.family.startswith("GPT-2")]


def _torch_says_finite(loss: torch.Tensor, model: nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return bool(torch.isfinite(loss).all()) and all(bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize("fault", FAST, ids=lambda f: f"{f.family}: {f.name}")
def test_planted_fault_is_the_origin_and_its_healthy_twin_is_none(fault: Fault) -> None:
    origin, loss, model = fault.run(faulty=True)
    assert not _torch_says_finite(loss, model)       # torch confirms the step went bad
    assert fault.hit(origin), f"expected {fault.phase}/{fault.module}/{fault.op}, got {origin!r}"
    assert origin.kind in ("nan", "inf") and origin.dtype.startswith("torch.")
    healthy, loss, model = fault.run(faulty=False)
    assert _torch_says_finite(loss, model) and healthy is None


@pytest.mark.slow
def test_fault_table_top1_at_least_95_percent() -> None:
    hits = [f.hit(f.run(True)[0]) for f in FAULTS]
    assert len(FAULTS) >= 20 and len({f.family for f in FAULTS}) >= 4
    assert {f.dtype for f in FAULTS} >= {torch.float32, torch.float16, torch.bfloat16}
    assert sum(hits) / len(hits) >= 0.95, [f.name for f, h in zip(FAULTS, hits) if not h]
    assert all(f.run(False)[0] is None for f in FAULTS)


def test_hf_gpt2_inf_embedding_row_is_the_parameter_and_healthy_gpt2_is_none() -> None:
    fault = next(f for f in FAULTS if f.name == "Inf embedding row")
    origin, loss, model = fault.run(True)
    assert not math.isfinite(float(loss.detach())) and fault.hit(origin)
    assert origin.op == "parameter" and "transformer.wte.weight" in str(origin)
    assert fault.run(False)[0] is None


def test_explanation_names_the_finite_inputs_and_a_remedy() -> None:
    fault = next(f for f in FAULTS if f.name == "exp overflow in float16")
    origin = fault.run(True)[0]
    # the input of exp was finite and above log(65504) = 11.09, the float16 overflow point
    assert origin.inputs and origin.inputs[0]["absmax"] > math.log(65504)
    assert origin.inputs[0]["max"] < 65504
    text = str(origin)
    assert "exp" in text and "float16" in text and "clamp" in text and origin.remedy in text
    assert origin.to_dict()["text"] == text


def test_disarmed_leaves_no_hook_and_no_mode_behind() -> None:
    from torch.overrides import _get_current_function_mode_stack
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    x = torch.randn(8, 4)
    with gradwell.locate(model) as loc:
        model(x).sum().backward()
        assert model._forward_hooks and model._forward_pre_hooks
    assert loc.origin is None
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert not _get_current_function_mode_stack()
    assert all(not m._forward_hooks for m in model.modules())


def test_a_replay_changes_nothing_the_training_sees() -> None:
    """BatchNorm statistics, gradients and the RNG stream equal a run without locate."""
    def run(armed: bool) -> tuple[list[torch.Tensor], torch.Tensor, object]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout(0.3),
                              nn.Linear(8, 1))
        x = torch.randn(16, 8)
        x[0, 0] = float("nan")
        origin = None
        if armed:
            with gradwell.locate(model) as loc:
                model(x).mean().backward()
            origin = loc.origin
        else:
            model(x).mean().backward()
        state = [t.clone() for t in model.state_dict().values()]
        grads = [p.grad.clone() for p in model.parameters()]
        return state + grads, torch.rand(3), origin

    plain, armed = run(False), run(True)
    assert armed[2] is not None and armed[2].phase == "input"
    for a, b in zip(plain[0], armed[0]):
        assert torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
    assert torch.equal(plain[1], armed[1])


def test_the_replay_draws_the_same_dropout_mask() -> None:
    """The forward is replayed from the RNG state it started with: the same units drop."""
    from faults import Lambda
    seen: list[torch.Tensor] = []
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 64), nn.Dropout(0.5),
                          Lambda(lambda h: seen.append(h.detach().clone()) or h),
                          Lambda(lambda h: torch.exp(h * 1e3)), nn.Linear(64, 1))
    with gradwell.locate(model) as loc:
        model(torch.randn(8, 4)).sum().backward()
    assert loc.origin is not None and loc.origin.reproduced and loc.origin.module == "3"
    assert len(seen) == 2 and torch.equal(seen[0] == 0, seen[1] == 0)  # original, replay
    assert (seen[0] == 0).float().mean().item() == pytest.approx(0.5, abs=0.1)


def test_locate_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        gradwell.locate("model")
    with pytest.raises(TypeError, match="replay must be True or False"):
        gradwell.locate(nn.Linear(2, 2), replay="yes")
    assert gradwell.locate.Origin is gradwell.locate.origin.Origin


def test_hf_gpt2_from_config_under_bfloat16_autocast_healthy_is_none() -> None:
    torch.manual_seed(0)
    model = gpt2()
    ids = torch.randint(0, 64, (2, 12))
    with gradwell.locate(model) as loc:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, labels=ids).loss
        loss.backward()
    assert math.isfinite(float(loss)) and loc.origin is None


class _PairEncoder(nn.Module):
    """torch's nn.GRU as the shared encoder of a sentence pair (its last hidden state)."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[1][-1]


def _pair_with_an_inf_in_the_second() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    a, b = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    b[1, 3, 2] = math.inf
    return _PairEncoder(), a, b


def test_a_model_called_twice_is_replayed_call_by_call() -> None:
    # the GRU's gates saturate on the Inf, so both calls' outputs and the loss are finite; the
    # NaN is born in the backward of the second call only (0 x Inf in the input weights'
    # gradient). Replaying only the first call found nothing and read as transient
    model, a, b = _pair_with_an_inf_in_the_second()
    ea, eb = model(a), model(b)
    loss = (ea - eb).pow(2).mean()
    loss.backward()
    assert ea.isfinite().all() and eb.isfinite().all() and loss.isfinite()     # torch
    assert not _torch_says_finite(loss, model)
    model.zero_grad()
    with gradwell.locate(model) as loc:
        (model(a) - model(b)).pow(2).mean().backward()
    o = loc.origin
    assert (o.phase, o.op, o.tensor, o.kind, o.nonfinite) == ("input", "input", "input[0]",
                                                              "inf", 1)


def test_the_guard_triages_that_step_as_data() -> None:
    model, a, b = _pair_with_an_inf_in_the_second()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = gradwell.guard.Guard(model, opt, spike_z=None)

    def loss_of() -> torch.Tensor:
        return (model(a) - model(b)).pow(2).mean()
    loss = loss_of()
    loss.backward()
    assert guard.step(loss, replay=loss_of) == "skipped"
    assert guard.events[-1].detail["triage"] == "data"


def test_a_loss_that_sums_the_outputs_is_located_not_crashed() -> None:
    # out.sum() hands the outputs one gradient value expanded over them (stride 0); the fused
    # check writes back what it reads and refused it with a RuntimeError inside the `with`
    model, _, b = _pair_with_an_inf_in_the_second()
    out = model(b)
    grad = torch.autograd.grad(out.sum(), out)[0]
    assert 0 in grad.stride()                                         # torch: expanded
    with gradwell.locate(model) as loc:
        model(b).sum().backward()
    assert not _torch_says_finite(torch.zeros(()), model)
    o = loc.origin
    assert (o.phase, o.tensor, o.kind) == ("input", "input[0]", "inf")


def test_a_loss_that_overflows_on_finite_inputs_names_their_size_and_the_targets() -> None:
    """A poisoned regression target of 1e20: mse_loss squares it past float32's largest value,
    so the loss is Inf although every input is finite; the remedy quotes the largest input, as
    torch measures it, and points at the targets."""
    fault = next(f for f in FAULTS if f.name == "poisoned label (1e20 target)")
    origin, loss, _ = fault.run(True)
    assert torch.isinf(loss) and fault.hit(origin)
    biggest = max(i["absmax"] for i in origin.inputs)
    assert biggest == pytest.approx(1e20, rel=1e-3)             # the planted target
    assert f"{biggest:.3g}" in origin.remedy and "poisoned targets" in origin.remedy
