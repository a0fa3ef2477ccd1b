"""The spread statistics (std, saturated share) of outputs larger than collect.SAMPLE values, and
the RMS of such output gradients, are estimated on an evenly spaced sample of rows: the estimates agree with torch's statistics of the whole output within their
standard error; the mean and dead units are exact (every row), so one NaN anywhere is seen."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

import gradwell
from gradwell.watch.collect import SAMPLE, sample


def test_sample_is_every_kth_row_view_and_leaves_small_or_strided_tensors_whole() -> None:
    t = torch.randn(64, 64, 1024)                         # 4 * 2**20 values: k = 4
    s = sample(t)
    rows = t.view(-1, 1024)
    assert s.numel() <= SAMPLE and s.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
    assert torch.equal(s, rows[::4]) and s.shape == (1024, 1024)
    small = torch.randn(SAMPLE)
    assert sample(small) is small
    strided = t.transpose(0, 2)
    assert sample(strided) is strided
    long = torch.randn(3 * SAMPLE + 1)                    # 1-D: every 4th value
    assert torch.equal(sample(long).view(-1), long[::4])


def test_sampled_statistics_estimate_the_whole_output_and_dead_units_stay_exact() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 1024), nn.Tanh(), nn.Linear(1024, 1024), nn.ReLU(),
                          nn.Linear(1024, 10))        # batch 2304: outputs of 2.25 * 2**20
    with torch.no_grad():
        model[0].weight.mul_(8.0)                          # a good share saturates
        model[2].bias[:100] = -1e3                         # 100 of 1024 ReLU units dead

    def alive_on_row_7_only(m: nn.Module, a: tuple, o: torch.Tensor) -> torch.Tensor:
        o = o.clone()                                      # row 7 is not in the sample
        o[:, 100] = -1.0
        o[7, 100] = 5.0                                    # rows 0, 3, 6, ... are sampled
        return o

    model[2].register_forward_hook(alive_on_row_7_only)
    outs: dict[str, torch.Tensor] = {}
    for i in (1, 3):
        model[i].register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(str(i), o))
    model[2].register_forward_hook(lambda m, a, o: o.retain_grad() or outs.__setitem__("2", o))
    x, y = torch.randn(2304, 32) * 3, torch.randint(0, 10, (2304,))
    mon = gradwell.watch(model)
    nn.functional.cross_entropy(model(x), y).backward()
    mon.step()
    mon.close()
    steps, names, mean = mon.history.series("out_mean")
    col = {n: i for i, n in enumerate(names)}
    tanh, relu = outs["1"].detach(), outs["3"].detach()
    assert tanh.numel() == 2304 * 1024 > 2 * SAMPLE        # sampled: 1 row in 3
    n = math.ceil(2304 / 3) * 1024                         # values in the sample
    # the mean reads every value: exact up to float32 summation
    assert abs(mean[0, col["1"]] - float(tanh.double().mean())) < 1e-5
    _, _, std = mon.history.series("out_std")
    assert abs(std[0, col["1"]] - float(tanh.std(unbiased=False))) < 0.02 * float(tanh.std())
    _, snames, sat = mon.history.series("saturated")
    share = float((tanh.abs() > 0.97).float().mean())
    assert 0.2 < share < 0.95
    assert abs(sat[0, list(snames).index("1")] - share) < 4 * math.sqrt(share * (1 - share) / n)
    _, dnames, dead = mon.history.series("dead")
    exact = float((relu == 0).all(dim=0).float().mean())   # unit 100 is alive (row 7)
    assert exact == 100 / 1024 and dead[0, list(dnames).index("3")] == exact
    _, gnames, og = mon.history.series("out_grad_rms")
    g = outs["2"].grad
    rms = float(g.norm() / g.numel() ** 0.5)
    assert np.isfinite(og[0, list(gnames).index("2")])
    assert abs(og[0, list(gnames).index("2")] - rms) < 0.1 * rms


def test_one_nan_outside_the_sample_is_found_where_it_was_born() -> None:
    """The mean reads every value, so a NaN in a row the spread sample skips still names the
    module it first appeared in (torch's own check of the outputs says which one)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 512), nn.Tanh(), nn.Linear(512, 512), nn.Tanh(),
                          nn.Linear(512, 10))
    x, y = torch.randn(2304, 16), torch.randint(0, 10, (2304,))  # outputs of 1.125 * 2**20

    def nan_on_row_1(m: nn.Module, a: tuple, o: torch.Tensor) -> torch.Tensor:
        o = o.clone()
        o[1, 3] = float("nan")                   # the spread sample takes rows 0, 2, 4, ...
        return o

    model[2].register_forward_hook(nan_on_row_1)
    first: list[str] = []
    for name, m in model.named_children():       # torch-only evidence: the first NaN output
        m.register_forward_hook(lambda m, a, o, name=name: first.append(name)
                                if not first and not torch.isfinite(o).all() else None)
    assert torch.equal(sample(torch.arange(2304.0)[:, None].expand(2304, 512).contiguous())[:, 0],
                       torch.arange(0.0, 2304, 2))  # row 1 is not in the sample
    mon = gradwell.watch(model)
    nn.functional.cross_entropy(model(x), y).backward()
    mon.step()
    mon.close()
    assert first == ["2"]
    found = [f for f in mon.findings() if f.kind == "nonfinite"]
    assert len(found) == 1 and found[0].layer == "2" and found[0].evidence["where"] == "forward"
