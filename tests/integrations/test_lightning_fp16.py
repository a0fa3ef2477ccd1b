"""GradwellCallback under Lightning's float16 mixed precision with a GradScaler: the monitor
gets the framework's scaler, so the scaler's overflow steps are events, not findings.

Reference: a plain callback before ours reads torch's gradient norms at the same hook (after
Lightning's unscale) and the scale before and after each step (a fall: the scaler skipped)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")
pytest.importorskip("transformers")

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.plugins import MixedPrecision  # noqa: E402

from gradwell.integrations.lightning import GradwellCallback  # noqa: E402
from models_zoo import ZOO  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:(?!gradwell)",
                                        "ignore::UserWarning", "ignore::FutureWarning")
LLAMA = ZOO["llama"]
STEPS = 10


class _Llama(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = LLAMA.build()

    def training_step(self, batch, i):
        return LLAMA.loss(self.net, LLAMA.batch(i))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=LLAMA.lr)


class _Evidence(pl.Callback):
    def __init__(self) -> None:
        self.norms, self.scales, self.backed_off = [], [], []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.norms.append({n: float(p.grad.norm()) for n, p in module.named_parameters()})
        self.scales.append(trainer.precision_plugin.scaler.get_scale())

    def on_train_batch_end(self, trainer, module, outputs, batch, i):
        self.backed_off.append(trainer.precision_plugin.scaler.get_scale() < self.scales[-1])


def test_float16_with_a_grad_scaler_records_true_norms_and_overflows_as_events():
    evidence, cb = _Evidence(), GradwellCallback(verbose=False)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(STEPS, 1)))
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", callbacks=[evidence, cb],
                         plugins=[MixedPrecision("16-mixed", "cpu",
                                                 scaler=torch.amp.GradScaler("cpu"))],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(_Llama(), data)
    mon = cb.session.monitor
    overflow = [i for i, b in enumerate(evidence.backed_off) if b]
    assert overflow, "the small Llama overflows float16 at the default scale"
    assert [e["step"] for e in mon.history.events if e["kind"] == "amp_overflow"] == overflow
    _, cols, got = mon.history.series("param_grad_norm")
    for i in set(range(STEPS)) - set(overflow):
        np.testing.assert_allclose(got[i], [evidence.norms[i][n] for n in cols], rtol=1e-5)
    assert not [f for f in cb.findings() if f.severity != "info"], cb.findings()


class _Losses(_Llama):
    def training_step(self, batch, i):
        loss = super().training_step(batch, i)
        self.seen = getattr(self, "seen", []) + [loss.item()]
        return loss


def test_float16_with_a_grad_scaler_records_the_unscaled_loss():
    """Lightning hands on_before_backward the loss times the GradScaler's scale (65536 at
    first); the recorded loss is the loss training_step returned (torch's)."""
    cb = GradwellCallback(verbose=False)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 1)))
    module = _Losses()
    pl.Trainer(max_steps=4, accelerator="cpu", callbacks=[cb],
               plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))],
               logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(module, data)
    _, _, got = cb.session.monitor.history.series("loss")
    np.testing.assert_allclose(got[:, 0], module.seen, rtol=1e-6)
