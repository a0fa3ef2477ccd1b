"""Items 1 and 2 of issue 11 (slow: the full matrix; the fast share is in test_fast.py): every optimizer, path and clipper on an FSDP2 model gives the
parameters of one process on the whole batch (float64, 1e-9); a NaN on one rank skips the step
on every rank."""

from __future__ import annotations

import pytest
import torch

import cases
import harness
import workers


def reference(nan_step: int | None, quick: bool, nan_input: bool = False
              ) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for name in cases.names(quick):
        model = harness.make_model()
        opt = cases.train(name, model, 0, 1, nan_step, nan_input=nan_input)
        out[name] = {"params": [p.detach() for p in model.parameters()],
                     "skipped": torch.tensor(getattr(opt, "skipped_steps", 0))}
    return out


def check(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    bad = []
    for name in want:
        if int(got[name]["skipped"]) != int(want[name]["skipped"]):
            bad.append(f"{name}: skipped {int(got[name]['skipped'])} != "
                       f"{int(want[name]['skipped'])}")
        for i, (g, w) in enumerate(zip(got[name]["params"], want[name]["params"])):
            err = (g - w).abs().max().item()
            if not err <= 1e-9:
                bad.append(f"{name}: parameter {i} off by {err:.3g}")
    assert not bad, "\n".join(bad)


@pytest.mark.slow
@pytest.mark.parametrize("world, nan_step, quick", [(2, None, False), (4, 2, False)])
def test_fsdp2_matches_one_process(tmp_path, world, nan_step, quick):
    out = tmp_path / "r.pt"
    harness.run_ranks(workers.optimizers, world, str(out), nan_step, quick)
    got = torch.load(out, weights_only=True)
    want = reference(nan_step, quick)
    if nan_step is not None:  # the reference really skipped one step
        assert all(int(w["skipped"]) == 1 for w in want.values())
    check(got, want)
