"""What the guard does with a refused step besides refusing it: triage, culprits, skip list.

Kept apart from :class:`~gradwell.guard.guard.Guard` so its step logic stays as it was: the
guard asks :class:`Flagged` for the batch's ids, for the triage detail of a refused step, and
to record the step in the skip list.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import torch
from torch import nn

from .._distributed import sharded
from ..locate.replay import autocast_state, rng_state
from .samples import SampleTracker, SkipList, as_ids
from .triage import Batch, culprits, per_sample_norms, triage

__all__ = ["Flagged", "TRIAGED"]

#: Refusal reasons a replay is run for (an AMP overflow is GradScaler's normal business).
TRIAGED = ("nonfinite_loss", "nonfinite_grad")


@contextlib.contextmanager
def _autocast_as(state: list[tuple[str, torch.dtype]] | None) -> Iterator[None]:
    """Run under the autocast state ``state`` (``None``: the current one, unchanged)."""
    with contextlib.ExitStack() as stack:
        if state is not None:
            on = dict(state)
            for dev in ("cpu", "cuda"):
                if dev in on:
                    stack.enter_context(torch.autocast(dev, dtype=on[dev]))
                elif torch.is_autocast_enabled(dev):
                    stack.enter_context(torch.autocast(dev, enabled=False))
        yield


class Flagged:
    """Replay triage, per-sample culprits and the skip list, for one guard."""

    def __init__(self, model: nn.Module, snapshot_dir: str | os.PathLike[str] | None) -> None:
        self.model = model
        self.skips = SkipList(snapshot_dir)
        self._rng: dict[str, Any] | None = None   # the RNG state the current step started with
        self._bad_ids: list[Any] = []             # ids of the bad steps in a row
        # the autocast state of the model's last forward: the step's, for its replay (the
        # guard is usually called after the `with torch.autocast(...)` block has closed)
        self._autocast: list[tuple[str, torch.dtype]] | None = None
        self._hook = model.register_forward_pre_hook(self._saw_forward)

    def _saw_forward(self, module: nn.Module, args: Any) -> None:
        self._autocast = autocast_state()

    def close(self) -> None:
        """Remove the forward pre-hook."""
        self._hook.remove()

    def ids(self, samples: Any, replay: Any) -> list[Any] | None:
        """This step's sample ids (from ``samples=``, else a ``Batch``'s ``ids``). From a
        tracker with a ``Batch``: as many loader batches as the ``Batch`` holds samples (a
        ``Batch`` of the step's micro-batches, with gradient accumulation)."""
        size = len(replay) if isinstance(replay, Batch) else None
        if isinstance(samples, SampleTracker):
            ids = samples.pop()
            while size is not None and len(ids) < size:
                ids += samples.pop()
        elif samples is not None:
            ids = as_ids(samples)
        elif isinstance(replay, Batch) and replay.ids is not None:
            ids = as_ids(replay.ids)
        else:
            return None
        if size is not None and len(ids) != size:
            raise ValueError(f"the step's sample ids are {len(ids)}, its Batch holds {size} "
                             "samples: pass one id per sample of the Batch (samples=, "
                             "Batch(ids=) or a SampleTracker)")
        return ids

    def good(self, replay: Any) -> None:
        """A step was applied: the next one starts from the RNG state now."""
        self._bad_ids = []
        if replay is not None:
            self._rng = rng_state()

    def inspect(self, reason: str, replay: Any, ids: list[Any] | None,
                spike_z: float | None) -> dict[str, Any]:
        """Triage (non-finite steps) and culprit samples (a ``Batch``), as event detail."""
        detail: dict[str, Any] = {}
        if replay is None or reason == "amp_overflow":
            return detail
        with _autocast_as(self._autocast):     # the replay runs in the step's precision
            if reason in TRIAGED:
                detail.update(triage(self.model, replay, self._rng))
            if isinstance(replay, Batch):
                losses, norms = per_sample_norms(self.model, replay)
                measured = not sharded(list(self.model.parameters()))   # FSDP2: NaN norms
                where = culprits(losses, norms if measured else None, z=spike_z or 6.0)
                detail["culprits"] = [ids[i] for i in where] if ids is not None else where
        self._rng = rng_state()
        return detail

    def record(self, step: int, status: str, reason: str, ids: list[Any] | None,
               detail: dict[str, Any]) -> None:
        """Add the refused step (and a rollback it triggered) to the skip list."""
        if reason != "amp_overflow" and ids is not None:
            self._bad_ids.extend(ids)
        if ids is None and status != "rolled_back":
            return
        keep = {k: detail[k] for k in ("triage", "culprits") if k in detail}
        if detail.get("origin"):
            keep["origin"] = detail["origin"].get("text")
        if ids is not None:
            self.skips.add({"step": step, "action": "skipped", "reason": reason,
                            "samples": ids, **keep})
        if status == "rolled_back":
            self.skips.add({"step": step, "action": "rolled_back", "reason": "max_bad_steps",
                            "samples": list(self._bad_ids)})
            self._bad_ids = []
