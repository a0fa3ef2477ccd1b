"""Rollback: restores the last trusted snapshot bit for bit, never one that holds a bad update,
cuts the learning rate, works from disk (atomic writes) and reports what it did."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import gradwell
from gradwell.guard import Guard
from guard_helpers import assert_same_state, batches, digits, make_model, state_copy

LR = 0.05
LAMBDA = lambda epoch: 1.0 / (1 + 0.1 * epoch)  # noqa: E731 - a closed-form schedule


def setup(seed: int = 0, **guard_kwargs):
    model = make_model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LAMBDA)
    kwargs = {"snapshot_every": 10, "trust_after": 3, "max_bad_steps": 2, "spike_warmup": 5,
              **guard_kwargs}
    return model, opt, sched, Guard(model, opt, scheduler=sched, **kwargs)


def one_step(model, opt, guard, it: int, burst: float = 1.0, nan: bool = False, mon=None):
    x_all, y_all = digits()
    idx = batches(200)[it]
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
    if nan:
        loss = loss * float("nan")
    loss.backward()
    if mon is not None:
        mon.step()  # the monitor reads the gradients before the guard may drop them
    if guard is None:
        opt.step()
        return "ok"
    for g in opt.param_groups:
        g["lr"] *= burst  # LambdaLR resets it at the scheduler step inside guard.step
    return guard.step(loss)


def reference_state(n_steps: int):
    """An unguarded run of the first ``n_steps`` batches: the state a snapshot must hold."""
    model = make_model(0)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LAMBDA)
    for it in range(n_steps):
        one_step(model, opt, None, it)
        sched.step()
    return state_copy(model, opt), sched.state_dict()


def with_lr(state, factor: float):
    for g in state["opt"]["param_groups"]:
        g["lr"] *= factor
        g["initial_lr"] *= factor
    return state


def test_untrusted_snapshot_with_bad_update_is_never_restored() -> None:
    model, opt, sched, guard = setup()
    statuses = [one_step(model, opt, guard, it) for it in range(9)]
    # step 10 applies a x1000 update; its harm only shows in step 11's loss
    statuses.append(one_step(model, opt, guard, 9, burst=1000.0))
    statuses += [one_step(model, opt, guard, it) for it in (10, 11)]
    assert statuses == ["ok"] * 10 + ["skipped", "rolled_back"]
    # the candidate taken right after the bad update was never trusted: back to the start
    expected, sched_state = reference_state(0)
    assert_same_state(with_lr(expected, 0.5), state_copy(model, opt))
    assert sched.last_epoch == 0
    assert sched.base_lrs == [LR * 0.5] * len(sched.base_lrs)


def test_trusted_snapshot_is_restored_exactly_and_lr_cut_repeats(tmp_path: Path) -> None:
    for directory in (None, tmp_path / "snaps"):
        model, opt, sched, guard = setup(snapshot_dir=directory)
        for it in range(13):  # candidate at 10, trusted after 11, 12, 13
            assert one_step(model, opt, guard, it) == "ok"
        assert [e.action for e in guard.events] == ["trusted"]
        assert one_step(model, opt, guard, 13, burst=1000.0) == "ok"
        assert [one_step(model, opt, guard, it) for it in (14, 15)] == ["skipped", "rolled_back"]
        expected, sched_state = reference_state(10)
        assert_same_state(with_lr(expected, 0.5), state_copy(model, opt))
        assert sched.last_epoch == sched_state["last_epoch"] == 10
        assert opt.param_groups[0]["lr"] == pytest.approx(LR * 0.5 * LAMBDA(10), rel=1e-12)
        # two good steps (they update momentum buffers in place: a snapshot sharing tensors
        # with the optimizer would change too), then trouble again: the same snapshot comes
        # back, with the learning rate cut a second time
        assert [one_step(model, opt, guard, it) for it in (16, 17)] == ["ok", "ok"]
        assert [one_step(model, opt, guard, it, nan=True) for it in (18, 19)] == [
            "skipped", "rolled_back"]
        assert_same_state(with_lr(reference_state(10)[0], 0.25), state_copy(model, opt))
        assert guard.lr_scale == 0.25
        one_step(model, opt, guard, 20)  # the scheduler goes on from the cut base rate
        assert opt.param_groups[0]["lr"] == pytest.approx(LR * 0.25 * LAMBDA(11), rel=1e-12)


def test_disk_snapshots_are_written_atomically(tmp_path: Path, monkeypatch) -> None:
    import gradwell.guard.snapshot as snapshot_module
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(src, dst):
        calls.append((str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(snapshot_module.os, "replace", recording_replace)
    model, opt, sched, guard = setup(snapshot_dir=tmp_path)
    for it in range(13):
        one_step(model, opt, guard, it)
    writes = [c for c in calls if c[0].endswith(".tmp")]
    assert [Path(d).name for _, d in writes] == ["trusted.pt", "candidate.pt"]
    assert (Path(calls[-1][0]).name, Path(calls[-1][1]).name) == ("candidate.pt", "trusted.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lock", "trusted.pt"]
    assert guard.snapshot_dir == str(tmp_path)
    on_disk = gradwell.guard.snapshot.read_snapshot(tmp_path / "trusted.pt")
    expected, _ = reference_state(10)
    for k, v in expected["model"].items():
        assert torch.equal(on_disk["model"][k], v)


def test_events_and_findings_say_what_happened() -> None:
    model, opt, sched, guard = setup(max_bad_steps=3)
    seen = []
    guard.on_event = seen.append
    for it in range(6):
        one_step(model, opt, guard, it)
    handle = model[2].weight.register_hook(lambda g: torch.full_like(g, float("nan")))
    one_step(model, opt, guard, 6)
    handle.remove()
    one_step(model, opt, guard, 7, nan=True)
    event = guard.events[0]
    assert (event.step, event.action, event.reason) == (6, "skipped", "nonfinite_grad")
    assert math.isnan(event.grad_norm) and math.isfinite(event.loss)
    assert seen == guard.events
    findings = guard.findings()
    assert all(isinstance(f, gradwell.diagnose.Finding) for f in findings)
    assert [(f.kind, f.layer, f.step, f.severity) for f in findings] == [
        ("nonfinite", "2", 6, "warning"), ("nonfinite", None, 7, "warning")]
    assert findings[0].evidence["nonfinite_layers"] == ["2"]
    assert findings[1].evidence["reason"] == "nonfinite_loss"
    assert all(f.remedies and f.evidence["source"] == "guard" for f in findings)
    one_step(model, opt, guard, 8, nan=True)  # third bad step in a row: a rollback
    assert [(f.kind, f.severity) for f in guard.findings()[-2:]] == [
        ("nonfinite", "warning"), ("exploding", "error")]


def test_events_reach_a_watch_monitor() -> None:
    model, opt, sched, _ = setup()
    with gradwell.watch(model) as mon:
        guard = Guard(model, opt, scheduler=sched, monitor=mon)
        for it in range(4):
            one_step(model, opt, guard, it, nan=(it == 2), mon=mon)
        records = [e for e in mon.history.events if e["kind"] == "guard"]
    assert [(r["step"], r["action"], r["reason"]) for r in records] == [
        (2, "skipped", "nonfinite_loss")]
    with pytest.raises(TypeError, match="monitor must be a gradwell.watch monitor"):
        Guard(model, opt, monitor=object())


def test_gives_up_after_max_rollbacks() -> None:
    model, opt, sched, guard = setup(max_rollbacks=2)
    for it in range(4):
        one_step(model, opt, guard, it)
    for it in range(4, 8):
        one_step(model, opt, guard, it, nan=True)
    with pytest.raises(RuntimeError, match=r"2 rollbacks in a row did not make training stable"):
        for it in range(8, 10):
            one_step(model, opt, guard, it, nan=True)


def test_gradwell_optimizer_and_clipper_state_roll_back() -> None:
    model = make_model(0)
    clipper = gradwell.clip.AutoClip(25, history=50)
    opt = gradwell.optim.Adam(model.parameters(), lr=1e-3, clip=clipper)
    guard = Guard(model, opt, snapshot_every=5, trust_after=2, max_bad_steps=1)
    for it in range(7):
        one_step(model, opt, guard, it)
    saved = {k: v.clone() for k, v in opt.clip_state["clip"].items()}  # the optimizer owns it
    ref = make_model(0)
    ref_opt = gradwell.optim.Adam(ref.parameters(), lr=1e-3, clip=gradwell.clip.AutoClip(25, 50))
    for it in range(5):
        one_step(ref, ref_opt, None, it)
    one_step(model, opt, guard, 7)
    assert one_step(model, opt, guard, 8, nan=True) == "rolled_back"
    assert_same_state(with_lr_only(state_copy(ref, ref_opt), 0.5), state_copy(model, opt))
    # the clipper's history went back too: it differs from the one before the rollback ...
    assert not torch.equal(opt.clip_state["clip"]["history"].nan_to_num(-1),
                           saved["history"].nan_to_num(-1))
    # ... and equals the one of a run that stopped at the snapshot
    assert torch.equal(opt.clip_state["clip"]["history"].nan_to_num(-1),
                       ref_opt.clip_state["clip"]["history"].nan_to_num(-1))


def with_lr_only(state, factor: float):
    for g in state["opt"]["param_groups"]:
        g["lr"] *= factor
    return state
