"""GradwellCallback for Lightning: what reaches the loggers, the loss it records, two optimizers."""

from __future__ import annotations

import copy
import csv
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("lightning")

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from integration_helpers import batches, mlp, torch_loop  # noqa: E402
from lightning_helpers import Regressor, fit  # noqa: E402

from gradwell.integrations.lightning import GradwellCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:(?!gradwell)",
                                        "ignore::UserWarning", "ignore::FutureWarning")


def _logged(logger: CSVLogger, key: str) -> list[tuple[int, float]]:
    rows = list(csv.DictReader(open(logger.log_dir + "/metrics.csv")))
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


@pytest.mark.parametrize("log_every_n_steps", [1, 50])
def test_each_recorded_step_is_logged_once_with_its_own_norm(tmp_path, log_every_n_steps):
    """every=3: steps 0, 3, 6 and 9 are recorded; each is logged at its own step with torch's
    pre-clip norm of that step, and no other step gets a (stale) value. Lightning's
    log_every_n_steps does not hide them (12 steps, fewer than 50)."""
    data, net = batches(12), mlp()
    ref = torch_loop(net, data, clip=0.1)
    logger = CSVLogger(tmp_path, name="csv")
    fit(Regressor(copy.deepcopy(net)), data, [GradwellCallback(every=3, verbose=False)],
        logger=logger, log_every_n_steps=log_every_n_steps, gradient_clip_val=0.1)
    got = _logged(logger, "gradwell/grad_norm")
    assert [s for s, _ in got] == [0, 3, 6, 9]
    torch.testing.assert_close([v for _, v in got], [ref["totals"][s] for s in (0, 3, 6, 9)],
                               rtol=1e-5, atol=0)
    ratios = _logged(logger, "gradwell/update_ratio_max")
    assert [s for s, _ in ratios] == [0, 9]       # one recorded step in 10 // every
    assert len({v for _, v in ratios}) == 2


class TwoTasks(pl.LightningModule):
    """Two independent regressions on very different scales, one Adam each (manual
    optimization): the small-scale task steps first."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.big = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1))
        self.small = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1))
        self.losses: dict[str, list[float]] = {"big": [], "small": []}

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        for name, net, opt, target in (("small", self.small, self.optimizers()[1], y[:, 1:]),
                                       ("big", self.big, self.optimizers()[0], y[:, :1])):
            loss = nn.functional.mse_loss(net(x), target)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            self.losses[name].append(loss.item())

    def configure_optimizers(self) -> Any:
        return [torch.optim.Adam(self.big.parameters(), 1e-2),
                torch.optim.Adam(self.small.parameters(), 3e-3)]


def test_two_optimizers_losses_are_not_one_series():
    """Each task's loss falls (torch), but the losses of the two objectives interleaved look
    like a loss that leaps 500x above its running minimum every other step: no divergence."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(384, 4, generator=g)
    y = torch.cat([x @ torch.tensor([[3.0], [-2.0], [1.0], [4.0]]),
                   0.1 * torch.sin(x[:, :1])], dim=1)
    module, cb = TwoTasks(), GradwellCallback(verbose=False)
    data = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 384, 32)]
    fit(module, data, [cb], max_epochs=3)
    for losses in module.losses.values():       # both learn: the last losses are far lower
        assert max(losses[-3:]) < 0.2 * losses[0]
    assert cb.session.steps == 2 * 3 * len(data)   # one record per optimizer step
    assert not [f for f in cb.findings() if f.kind == "divergence"]



class Recorder(Regressor):
    """A Regressor that keeps each micro-batch's loss (torch's)."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.seen = getattr(self, "seen", []) + [loss.item()]
        return loss


def test_the_last_short_accumulation_window_records_its_mean_loss():
    """10 batches, accumulate_grad_batches=4: steps of 4, 4 and 2 micro-batches. Lightning
    divides every loss by 4, also in the short window; the recorded loss of each step is the
    mean of its micro-batches' losses all the same."""
    module, cb = Recorder(mlp(), optimizer="sgd"), GradwellCallback(verbose=False)
    fit(module, batches(10), [cb], accumulate_grad_batches=4)
    want = [np.mean(module.seen[i:i + 4]) for i in (0, 4, 8)]
    _, _, got = cb.session.monitor.history.series("loss")
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-6)
