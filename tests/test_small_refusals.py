"""Small promises of issue 15: a non-scalar loss to mon.step is refused at once; watch() of a
model with a sparse nn.Embedding works; AGC and Value refuse sparse gradients clearly (and
GlobalNorm clips them); Guard(on_event=1) is refused."""

import pytest
import torch
from torch import nn

import gradwell


def _model_and_grads():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Embedding(50, 8, sparse=True), nn.Flatten(), nn.Linear(32, 2))
    x = torch.randint(0, 50, (4, 4))
    return m, x


def test_a_non_scalar_loss_to_mon_step_is_an_error_at_once():
    m, x = _model_and_grads()
    mon = gradwell.watch(m)
    out = m(x)
    out.square().mean().backward()
    with pytest.raises(ValueError, match=r"loss must hold one value, got shape \(4, 2\); "
                                         r"reduce it"):
        mon.step(out.square())
    mon.close()


def test_watch_of_a_sparse_embedding_records_its_true_gradient_norm():
    m, x = _model_and_grads()
    mon = gradwell.watch(m)
    loss = m(x).square().mean()
    loss.backward()
    mon.step(loss)
    mon.close()
    rec = mon.history.latest()
    assert m[0].weight.grad.is_sparse
    expected = float(m[0].weight.grad.to_dense().norm())
    assert rec["param_grad_norm"]["0.weight"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("clip", [gradwell.clip.AGC(0.01), gradwell.clip.Value(0.1)],
                         ids=["AGC", "Value"])
def test_elementwise_clippers_refuse_sparse_gradients_clearly(clip):
    m, x = _model_and_grads()
    m(x).square().mean().backward()
    before = m[0].weight.detach().clone()
    opt = gradwell.optim.SGD(m.parameters(), lr=0.1, clip=clip)
    with pytest.raises(ValueError, match="does not support sparse gradients .*shape \\(50, 8\\)"
                                         ".*use GlobalNorm"):
        opt.step()
    assert torch.equal(m[0].weight, before)


def test_global_norm_clips_a_sparse_gradient_like_torch():
    m, x = _model_and_grads()
    m(x).square().mean().backward()
    dense = [p.grad.to_dense() if p.grad.is_sparse else p.grad.clone() for p in m.parameters()]
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in dense]))
    scale = min(1.0, 1e-3 / (float(total) + 1e-6))
    before = [p.detach().clone() for p in m.parameters()]
    gradwell.optim.SGD(m.parameters(), lr=1.0, clip=gradwell.clip.GlobalNorm(1e-3)).step()
    for p, b, g in zip(m.parameters(), before, dense):
        torch.testing.assert_close(p.detach(), b - scale * g, rtol=1e-5, atol=1e-7)


def test_guard_refuses_an_on_event_that_cannot_be_called():
    m, _ = _model_and_grads()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="on_event must be a function taking a GuardEvent, or "
                                        "None; got 1"):
        gradwell.guard.Guard(m, opt, on_event=1)
