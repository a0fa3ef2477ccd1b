"""ReLU units' alive flags laid out alike on every rank, so that one all-reduce can sum them.

A unit is dead when it is 0 in every row of every rank, so the monitor sums the ranks' alive
flags. Which units a rank holds depends on its data: an ``(N, T, F)`` output has one unit per
time step (docs/diagnosis.md), so ranks whose batches are padded to different lengths hold
different units, and a module in a branch that only some ranks take (DDP
``find_unused_parameters=True``, a routed expert) has units on those ranks only. The summed
vector must be as long on every rank: each rank packs its flags into the slots
``(module id, flag shape)`` agreed on the previous recorded step (zeros where it has none),
with one presence flag per slot, and counts the slots of its own that do not fit. When any
rank's do not (the summed count is the same on every rank, so every rank decides alike), every
rank gathers all ranks' slots and sums the flags again on their union: a second collective,
only on steps whose layout changed. Slots that no rank held are not units of the step.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Slot", "AliveLayout"]

#: a ReLU module's id in ``LayerIndex.rectified`` and the shape of its alive flags
Slot = tuple[int, tuple[int, ...]]


def _flat(masks: dict[Slot, Tensor], slots: list[Slot], device: torch.device
          ) -> tuple[Tensor, Tensor]:
    """The flags of ``slots`` (zeros for a slot not in ``masks``) and a presence flag per slot."""
    parts = [masks[s] if s in masks else
             torch.zeros(int(torch.Size(s[1]).numel()), dtype=torch.float64, device=device)
             for s in slots]
    f64 = torch.zeros(0, dtype=torch.float64, device=device)
    held = torch.tensor([float(s in masks) for s in slots], dtype=torch.float64)
    return (torch.cat(parts) if parts else f64), held.to(device)


class AliveLayout:
    """The slots every rank packs its alive flags into, kept from one recorded step to the next."""

    def __init__(self) -> None:
        self.slots: list[Slot] = []

    def pack(self, masks: dict[Slot, Tensor], world: int, device: torch.device
             ) -> dict[str, Tensor]:
        """This rank's flags on the agreed slots, to be summed over ranks (one process: its own
        slots, nothing to agree)."""
        if world <= 1:
            self.slots = list(masks)
            return {"alive": _flat(masks, self.slots, device)[0]}
        flags, held = _flat(masks, self.slots, device)
        misfit = float(sum(s not in set(self.slots) for s in masks))
        return {"alive": flags, "alive_held": held,
                "alive_misfit": torch.tensor([misfit], dtype=torch.float64, device=device)}

    def settle(self, shared: dict[str, Tensor], masks: dict[Slot, Tensor], world: int,
               device: torch.device) -> tuple[tuple[int, int], ...]:
        """After the sum over ranks: refit on the union of all ranks' slots if one rank's did not
        fit, keep only the slots some rank held (in ``shared["alive"]`` and for the next step),
        and return the ``(module id, units)`` runs of ``shared["alive"]``."""
        if world > 1:
            dist = torch.distributed
            # one host read: whether some rank's slots did not fit, and which slots were held
            host = torch.cat([shared["alive_misfit"], shared["alive_held"]]).cpu().tolist()
            misfit, held = host[0], host[1:]
            if misfit > 0:
                every: list[list[Slot]] = [[] for _ in range(world)]
                dist.all_gather_object(every, list(masks))
                self.slots = sorted({tuple(s) for mine in every for s in mine})
                flags, present = _flat(masks, self.slots, device)
                summed = torch.cat([flags, present])
                dist.all_reduce(summed)
                n = flags.numel()
                shared["alive"], shared["alive_held"] = summed[:n], summed[n:]
                held = shared["alive_held"].cpu().tolist()      # the refit's (rare)
            keep = [torch.full((int(torch.Size(s[1]).numel()),), h > 0) for s, h in
                    zip(self.slots, held)]
            if keep and not all(h > 0 for h in held):
                shared["alive"] = shared["alive"][torch.cat(keep).to(device)]
            self.slots = [s for s, h in zip(self.slots, held) if h > 0]
        return tuple((i, int(torch.Size(shape).numel())) for i, shape in self.slots)
