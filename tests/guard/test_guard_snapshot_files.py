"""Snapshot files are data: a planted pickle never runs, a damaged file is refused, one Guard
holds a directory, a restart resumes only when asked, and a full disk fails before the step."""

from __future__ import annotations

import copy
import errno
import hashlib
import io
import os
from pathlib import Path

import pytest
import torch

import gradwell
from gradwell.guard import Guard, SnapshotError
from gradwell.guard.snapshot import MAGIC, read_snapshot
from guard_helpers import assert_same_state, make_model, state_copy
from test_guard_rollback import one_step, reference_state, setup


class _Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _signed(payload: bytes) -> bytes:
    """A file with a valid digest header: an attacker can compute one as easily as we can."""
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def _run_into(directory: Path, steps: int = 13):
    model, opt, sched, guard = setup(snapshot_dir=directory)
    for it in range(steps):       # candidate at good step 10, trusted after 13
        assert one_step(model, opt, guard, it) == "ok"
    return model, opt, sched, guard


def test_a_planted_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"model": _Payload(marker)}, buf)
    # the plain pickle really is code: loading it the unsafe way creates the marker
    torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    assert marker.exists()
    marker.unlink()
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    for content in (_signed(buf.getvalue()), buf.getvalue()):
        (snaps / "trusted.pt").write_bytes(content)
        with pytest.raises(SnapshotError, match="refusing"):
            setup(snapshot_dir=snaps, resume=True)
        assert not marker.exists()


def test_a_damaged_snapshot_is_refused(tmp_path: Path) -> None:
    model, opt, sched, guard = _run_into(tmp_path)
    guard.close()
    data = bytearray((tmp_path / "trusted.pt").read_bytes())
    data[len(data) // 2] ^= 0x40                 # one flipped bit in the middle of the payload
    (tmp_path / "trusted.pt").write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="damaged"):
        read_snapshot(tmp_path / "trusted.pt")
    with pytest.raises(SnapshotError, match="damaged"):
        setup(snapshot_dir=tmp_path, resume=True)


def test_adam_zclip_autoclip_steplr_gradscaler_state_loads_as_data(tmp_path: Path) -> None:
    model = make_model(0)
    opt = gradwell.optim.Adam(model.parameters(), lr=1e-3, clip=gradwell.clip.ZClip())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    guard = Guard(model, opt, scheduler=sched, scaler=scaler, clip=gradwell.clip.AutoClip(),
                  snapshot_dir=tmp_path, snapshot_every=10, trust_after=3, spike_warmup=5)
    for it in range(13):
        opt.zero_grad(set_to_none=True)
        x = torch.randn(16, 64, generator=torch.Generator().manual_seed(it))
        loss = model(x).square().mean()
        scaler.scale(loss).backward()
        assert guard.step(loss) == "ok"
        if it == 9:                          # good step 10: the candidate that becomes trusted
            live = copy.deepcopy({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                  "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                                  "clip": guard.clip.state_dict()})
    on_disk = read_snapshot(tmp_path / "trusted.pt")
    assert on_disk["optimizer"]["state"][0]["exp_avg"].shape == (64, 64)
    assert on_disk["extra"]["good_steps"] == 10
    _assert_equal({**{k: on_disk[k] for k in live if k != "clip"},
                   "clip": on_disk["extra"]["clip"]}, live)


def _assert_equal(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict), where
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b) or torch.allclose(a, b, rtol=0, atol=0, equal_nan=True), where
    else:
        assert type(a) is type(b) and (a == b or (a != a and b != b)), where


def test_one_guard_per_directory(tmp_path: Path) -> None:
    model, opt, sched, first = _run_into(tmp_path, steps=12)   # a candidate is pending
    with pytest.raises(SnapshotError, match="in use by another Guard"):
        setup(snapshot_dir=tmp_path)
    with pytest.raises(SnapshotError, match="in use by another Guard"):
        setup(snapshot_dir=tmp_path, resume=True)
    # the first guard's files are untouched: its candidate still becomes trusted
    assert one_step(model, opt, first, 12) == "ok"
    assert [e.action for e in first.events] == ["trusted"]
    first.close()
    with pytest.raises(SnapshotError, match="pass resume=True"):
        setup(snapshot_dir=tmp_path)
    assert read_snapshot(tmp_path / "trusted.pt")["extra"]["good_steps"] == 10
    with pytest.raises(ValueError, match="resume=True needs snapshot_dir"):
        setup(resume=True)


def test_a_restart_resumes_from_the_trusted_snapshot_bit_for_bit(tmp_path: Path) -> None:
    model, opt, sched, guard = _run_into(tmp_path, steps=17)
    del guard                                    # the process "dies": the lock goes with it
    model, opt, sched, guard = setup(snapshot_dir=tmp_path, resume=True)
    assert guard.good_steps == 10 and guard.lr_scale == 1.0
    expected, sched_state = reference_state(10)
    assert_same_state(expected, state_copy(model, opt))
    assert sched.state_dict() == sched_state
    for it in range(10, 20):
        assert one_step(model, opt, guard, it) == "ok"
    assert_same_state(reference_state(20)[0], state_copy(model, opt))
    guard.close()


def test_a_full_disk_fails_before_the_step_and_leaves_no_tmp(tmp_path: Path,
                                                             monkeypatch) -> None:
    model, opt, sched, guard = setup(snapshot_dir=tmp_path)
    for it in range(9):
        one_step(model, opt, guard, it)
    before = state_copy(model, opt)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(SnapshotError, match=f"cannot write a snapshot to {tmp_path}.*not applied"):
        one_step(model, opt, guard, 9)           # good step 10 would write a candidate
    assert_same_state(before, state_copy(model, opt))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lock", "trusted.pt"]
    monkeypatch.undo()

    def failing_write(f, snap):
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(gradwell.guard.snapshot, "write_snapshot", failing_write)
    with pytest.raises(SnapshotError, match="No space left"):
        one_step(model, opt, guard, 9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lock", "trusted.pt"]
