"""The monitor under DDP when ranks hold different ReLU units: batches padded to their own
length (an ``(N, T, F)`` output has a unit per time step) and a ReLU branch that only some
ranks take (``find_unused_parameters=True``). The summed alive flags used to have a different
length on each rank, and gloo aborted the process ("Received data size doesn't match expected
size"). Every rank must record the dead share torch's outputs give over all ranks' units."""

from __future__ import annotations

import math

import torch
from torch import nn

import gradwell

import harness

#: per step, per rank: (sequence length, padded positions at the end, takes the branch)
PLAN = [[(5, 0, True), (7, 2, False)],     # a branch on rank 0 only; different lengths
        [(5, 0, False), (6, 1, False)],    # nobody takes the branch: its share is undefined
        [(5, 0, False), (6, 1, True)]]     # the same layout as the step before


class Routed(nn.Module):
    """Token ReLU features (a pad token embeds as 0, and a negative bias keeps padded positions
    at 0: dead time steps), mean-pooled; a ReLU branch with half its units dead."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(16, 8, padding_idx=0)
        self.tok, self.tok_act = nn.Linear(8, 8), nn.ReLU()
        self.branch, self.branch_act = nn.Linear(8, 6), nn.ReLU()
        self.head, self.branch_head = nn.Linear(8, 2), nn.Linear(6, 2)
        with torch.no_grad():
            self.tok.bias.fill_(-0.05)
            self.branch.bias[:3] = -50.0

    def forward(self, ids: torch.Tensor, route: bool) -> torch.Tensor:
        h = self.tok_act(self.tok(self.emb(ids))).mean(1)
        out = self.head(h)
        if route:
            out = out + self.branch_head(self.branch_act(self.branch(h)))
        return out


def _batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    length, pad, route = PLAN[step][rank]
    g = torch.Generator().manual_seed(10 * step + rank)
    ids = torch.randint(1, 16, (4, length), generator=g)
    if pad:
        ids[:, -pad:] = 0
    return ids, torch.randint(0, 2, (4,), generator=g), route


def train(rank: int, world: int, out: str) -> None:
    model = nn.parallel.DistributedDataParallel(Routed(), find_unused_parameters=True)
    inner = model.module
    flags: dict[str, list] = {"tok_act": [], "branch_act": []}

    def capture(name: str):
        def hook(_m, _inp, y):           # torch's own alive flags: non-zero somewhere
            dims = [d for d in range(y.dim()) if d != 1]
            flags[name][-1] = (y.detach().amax(dim=dims) > 0).tolist()
        return hook
    for name in flags:
        getattr(inner, name).register_forward_hook(capture(name))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = gradwell.watch(model)
    for step in range(len(PLAN)):
        for name in flags:
            flags[name].append(None)
        ids, y, route = _batch(step, rank)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(ids, route), y)
        loss.backward()
        mon.step(loss)
        opt.step()
    records = list(mon.history.records())
    torch.save({"flags": flags, "dead": {n: [r["dead"][n] for r in records] for n in flags},
                "findings": [(f.kind, f.layer) for f in mon.findings()]}, f"{out}.{rank}")
    mon.close()


def _torch_dead_share(ranks: list[list | None]) -> float:
    """Units are the flags of each distinct shape (alive if alive on any rank holding it)."""
    slots: dict[int, list[bool]] = {}
    for alive in ranks:
        if alive is not None:
            old = slots.get(len(alive), [False] * len(alive))
            slots[len(alive)] = [a or b for a, b in zip(old, alive)]
    units = sum(len(v) for v in slots.values())
    return math.nan if units == 0 else sum(not a for v in slots.values() for a in v) / units


def test_ranks_with_different_relu_units_record_torch_dead_share(tmp_path):
    out = str(tmp_path / "layouts")
    harness.run_ranks(train, 2, out, timeout=120)
    got = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]
    assert got[0]["findings"] == got[1]["findings"]
    for name in ("tok_act", "branch_act"):
        want = [_torch_dead_share([g["flags"][name][s] for g in got]) for s in range(len(PLAN))]
        for g in got:
            assert len(g["dead"][name]) == len(PLAN)
            for s, (x, w) in enumerate(zip(g["dead"][name], want)):
                assert (math.isnan(x) and math.isnan(w)) or abs(x - w) < 1e-12, (name, s, x, w)
        if name == "tok_act":   # padded positions are dead time steps: 2 of 12 units at step 0
            assert 0.0 < want[0] < 1.0 and all(w > 0 for w in want), want
        else:                   # half the branch's units dead; no unit where nobody took it
            assert want[0] >= 0.5 and math.isnan(want[1]) and want[2] >= 0.5, want
