"""GradwellCallback for Lightning: what reaches the loggers, and runs with two optimizers."""

from __future__ import annotations

import copy
import csv

import pytest
import torch

pytest.importorskip("lightning")

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

