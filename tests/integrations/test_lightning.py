"""GradwellCallback for Lightning, checked against plain-torch loops that do the same training."""

from __future__ import annotations

import copy
import csv
import math

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("lightning")

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from integration_helpers import (assert_same_state, batches, make_optimizer,  # noqa: E402
                                 make_scheduler, mlp, torch_loop)
from lightning_helpers import Regressor, fit  # noqa: E402

from gradwell.guard import Guard  # noqa: E402

from gradwell.integrations.lightning import GradwellCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:(?!gradwell)",
                                        "ignore::UserWarning", "ignore::FutureWarning")


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-mixed"])
def test_norms_are_read_after_accumulation_and_before_lightning_clips(bf16):
    """Per-layer norms equal a torch loop's pre-clip norms of the accumulated gradient, while
    the clipping (far below those norms) still shapes the training exactly as in torch."""
    data, net, clip = batches(8), mlp(), 0.05
    cb = GradwellCallback()
    module = Regressor(copy.deepcopy(net), schedule=True)
    trainer = fit(module, data, [cb], accumulate_grad_batches=2, gradient_clip_val=clip,
                  precision="bf16-mixed" if bf16 else "32-true")
    ref = torch_loop(net, data, schedule=True, accumulate=2, clip=clip, bf16=bf16)
    steps, names, got = cb.session.monitor.history.series("grad_norm")
    assert names == ["net.0", "net.2", "net.4", "net.6"] and len(steps) == 4
    np.testing.assert_allclose(got, ref["layer_norms"], rtol=1e-5)
    assert min(ref["totals"]) > 10 * clip          # so post-clip norms would be ~clip
    assert_same_state(module.net, ref["net"], trainer.optimizers[0], ref["opt"])
    assert cb.findings() == []


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_nan_batch_is_skipped_exactly(optimizer):
    """Parameters, optimizer state and the per-step LR schedule end as in a run that never saw
    the bad batch; the skip is reported."""
    data, net = batches(7, nan_at=3), mlp()
    cb = GradwellCallback(guard=True)
    module = Regressor(copy.deepcopy(net), optimizer=optimizer, schedule=True)
    trainer = fit(module, data, [cb])
    clean = data[:3] + data[4:]
    ref = torch_loop(net, clean, optimizer=optimizer, schedule=True)
    assert_same_state(module.net, ref["net"], trainer.optimizers[0], ref["opt"])
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.last_epoch == ref["sched"].last_epoch == 6
    assert "step" not in vars(sched)
    assert [p["lr"] for p in trainer.optimizers[0].param_groups] == ref["sched"].get_last_lr()
    kinds = [(f.kind, f.evidence.get("reason")) for f in cb.findings()]
    assert ("nonfinite", "nonfinite_loss") in kinds
    assert cb.session.guard.events[0].step == 3


def test_rollback_matches_gradwell_guard_in_a_torch_loop():
    """Two NaN batches in a row: the callback rolls back to the same trusted state, with the
    same events and learning-rate cut, as Guard.step does in a hand-written loop."""
    data, net = batches(12, nan_at=6), mlp()
    data[7] = batches(8, nan_at=7)[7]
    opts = {"max_bad_steps": 2, "snapshot_every": 2, "trust_after": 2, "spike_z": None}
    cb = GradwellCallback(guard=opts, verbose=False)
    module = Regressor(copy.deepcopy(net), schedule=True)
    trainer = fit(module, data, [cb])

    ref_net = copy.deepcopy(net)
    opt = make_optimizer("adam", ref_net.parameters(), 1e-2)
    sched = make_scheduler(opt)
    guard = Guard(ref_net, opt, scheduler=sched, **opts)
    for x, y in data:
        opt.zero_grad()
        loss = nn.functional.mse_loss(ref_net(x), y)
        loss.backward()
        guard.step(loss)
    got = [(e.step, e.action) for e in cb.session.guard.events]
    assert got == [(e.step, e.action) for e in guard.events]
    assert ("rolled_back" in {a for _, a in got}) and cb.session.guard.lr_scale == 0.5
    assert_same_state(module.net, ref_net, trainer.optimizers[0], opt)
    assert trainer.lr_scheduler_configs[0].scheduler.state_dict() == sched.state_dict()


def test_loggers_get_the_scalars_and_a_vanishing_finding(tmp_path):
    """Deep sigmoid MLP: the callback's vanishing finding reaches the CSV and TensorBoard logs;
    the logged total norm is torch's pre-clip norm; torch confirms the vanishing."""
    data, net = batches(12), mlp(width=16, depth=12, act=nn.Sigmoid)
    ref = torch_loop(net, data, optimizer="sgd", lr=0.05, clip=1.0)
    first, last = np.array(ref["layer_norms"])[:, [0, -1]].T
    assert np.all(first < 1e-4 * last)              # torch's own evidence of vanishing
    loggers = [CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")]
    cb = GradwellCallback(verbose=False)
    fit(Regressor(copy.deepcopy(net), optimizer="sgd", lr=0.05), data, [cb], logger=loggers,
        log_every_n_steps=1, gradient_clip_val=1.0)
    assert any(f.kind == "vanishing" for f in cb.findings())

    rows = list(csv.DictReader(open(loggers[0].log_dir + "/metrics.csv")))
    norms = [float(r["gradwell/grad_norm"]) for r in rows if r.get("gradwell/grad_norm")]
    np.testing.assert_allclose(norms, ref["totals"], rtol=1e-5)
    assert all(r["gradwell/rel_grad_min"] for r in rows if r.get("gradwell/grad_norm"))
    final = [r for r in rows if r.get("gradwell/findings/vanishing")]
    assert len(final) == 1 and float(final[0]["gradwell/findings/vanishing"]) >= 1
    assert float(final[0]["gradwell/findings/nonfinite"]) == 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(loggers[1].log_dir, size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert {"gradwell/grad_norm", "gradwell/findings/vanishing"} <= set(scalars)
    assert acc.Scalars("gradwell/findings/vanishing")[-1].value >= 1
    text = acc.Tensors("gradwell/findings/text_summary")[-1].tensor_proto.string_val[0]
    assert b"vanishing" in text


def test_healthy_transformer_encoder_has_no_findings():
    """nn.TransformerEncoder (a model we did not write) training normally: no findings, and the
    logged-step scalars are finite."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.0,
                                       batch_first=True)
    net = nn.Sequential(nn.Linear(6, 16), _Seq(nn.TransformerEncoder(layer, num_layers=2)),
                        nn.Linear(16, 1))
    cb = GradwellCallback(verbose=False)
    fit(Regressor(net, lr=3e-3), batches(20), [cb])
    assert cb.findings() == []
    rec = cb.session.monitor.history.latest()
    assert math.isfinite(rec["total_grad_norm"]["total"])


class _Seq(nn.Module):
    """Treat each sample's 6 features as a sequence of length 1 for the encoder."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.unsqueeze(1)).squeeze(1)


# --------------------------------------------------------------------------- bad input
def _fails_at_start(module, callbacks, match, **kwargs):
    with pytest.raises(ValueError, match=match):
        fit(module, batches(3), callbacks, **kwargs)
    assert module.calls == 0          # at fit() start, never mid-run


def test_two_callbacks_are_an_error_at_fit_start():
    _fails_at_start(Regressor(mlp()), [GradwellCallback(), GradwellCallback(guard=True)],
                    "2 GradwellCallback objects")


def test_an_unwatchable_model_is_an_error_at_fit_start():
    """A frozen module (its optimizer trains a tensor outside it): nothing to watch."""
    module = Regressor(mlp())
    module.net.requires_grad_(False)
    outside = nn.Parameter(torch.zeros(1))
    module.configure_optimizers = lambda: torch.optim.SGD([outside], lr=0.1)
    with pytest.raises(ValueError, match="no parameters that require gradients"):
        fit(module, batches(3), [GradwellCallback()])
    assert module.calls == 0


def test_guard_with_manual_optimization_is_an_error_at_fit_start():
    module = Regressor(mlp())
    module.automatic_optimization = False
    _fails_at_start(module, [GradwellCallback(guard=True)], "automatic optimization")


def test_guard_with_an_unsupported_strategy_is_an_error_at_fit_start():
    """FSDP needs a GPU to reach on_fit_start, so the hook is called as Lightning would; its
    flat-shard gradients are no parameter's own, so watching alone is refused too, as the
    docs' support table says."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
    cb = GradwellCallback(guard=True)
    trainer = SimpleNamespace(callbacks=[cb], strategy=ModelParallelStrategy(), optimizers=[],
                              lr_scheduler_configs=[])
    with pytest.raises(ValueError, match="supports the single-device and DDP strategies, got "
                                         "ModelParallelStrategy"):
        cb.on_fit_start(trainer, Regressor(mlp()))
    assert cb.session is None
    trainer.strategy = FSDPStrategy()
    for guard in (True, False):                                     # FSDP1: flat shards
        with pytest.raises(ValueError, match="does not support FSDPStrategy: the gradients "
                                             "are not the parameters' own"):
            GradwellCallback(guard=guard)._check(trainer, Regressor(mlp()))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"watch": False, "guard": False}, ValueError, "do nothing"),
    ({"every": 0}, ValueError, "every must be an int >= 1"),
    ({"guard": "yes"}, TypeError, "guard must be True, False or a dict"),
    ({"watch": {"every": 2}}, ValueError, "pass every= to the callback"),
])
def test_bad_arguments_are_rejected_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        GradwellCallback(**kwargs)
