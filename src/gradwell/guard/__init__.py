"""Never lose a run to a NaN: skip bad steps exactly, roll back when they persist.

``guard = gradwell.guard.Guard(model, optimizer)``, then per batch::

    loss.backward()
    status = guard.step(loss)        # "ok" (optimizer stepped), "skipped" or "rolled_back"

``guard.events`` says what happened, when and why; ``guard.findings()`` gives the skips and
rollbacks as ``gradwell.diagnose.Finding`` objects, the ones ``mon.findings()`` returns; with
``Guard(..., monitor=mon)`` they are also written to the monitor's event log.
``guard.step(loss, replay=..., samples=ids)`` replays a non-finite step under
``gradwell.locate`` (triage: data / reproducible / transient) and writes the refused batch's
sample ids to ``snapshot_dir/skipped.jsonl``. See ``docs/guards.md``.
"""

from .events import GuardEvent, to_finding, to_record
from .guard import Guard
from .samples import SampleTracker, skipped_ids
from .snapshot import SnapshotError, SnapshotStore, capture, restore
from .spike import RobustZ
from .triage import Batch, per_sample_norms

__all__ = ["Guard", "GuardEvent", "to_finding", "to_record", "RobustZ", "SnapshotError",
           "SnapshotStore", "capture", "restore", "Batch", "SampleTracker", "skipped_ids",
           "per_sample_norms"]
