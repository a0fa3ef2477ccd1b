"""The monitor under activation checkpointing (Hugging Face ``gradient_checkpointing_enable``).

A checkpointed block runs its forward a second time in the backward (the recompute), so its
forward hooks fire twice; a reentrant checkpoint runs the first forward without grad, so the
monitor records each block only in the recompute, last block first. The statistics must still
be those of the step (checked against torch's own hooks on a run without checkpointing), and
the ``nonfinite`` event must name the module a NaN was born in, not the first module after the
checkpointed blocks (it named GPT-2's ``transformer.ln_f``, Llama's ``model.norm``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import gradwell

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models_zoo import ZOO  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated")

#: an activation module of the first block of each model
FIRST_ACT = {"gpt2": "transformer.h.0.mlp.act", "llama": "model.layers.0.mlp.act_fn",
             "bert": "bert.encoder.layer.0.intermediate.intermediate_act_fn"}


class NaNAct(nn.Module):
    """An activation (declared to the monitor) whose output is NaN."""

    gradwell_activation = "other"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


def _build(name: str, reentrant: bool | None) -> nn.Module:
    model = ZOO[name].build()
    if reentrant is not None:
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    return model.train()


def _plant(model: nn.Module, name: str) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, NaNAct())


@pytest.mark.parametrize("reentrant", [True, False])
@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_a_nan_born_in_a_checkpointed_block_is_named_there(arch, reentrant):
    model = _build(arch, reentrant)
    where = FIRST_ACT[arch]
    _plant(model, where)
    seen = []                                    # torch-only: is it born there?
    model.get_submodule(where).register_forward_hook(
        lambda m, a, o: seen.append((bool(torch.isfinite(a[0]).all()),
                                     bool(torch.isnan(o).all()))))
    batch = ZOO[arch].batch(0)
    with gradwell.watch(model) as mon:
        loss = ZOO[arch].loss(model, batch)
        loss.backward()
        mon.step(loss)
        events = [e for e in mon.history.events if e["kind"] == "nonfinite"]
    assert seen and seen[0] == (True, True) and not math.isfinite(loss.item())
    assert [(e["where"], e["layer"]) for e in events] == [("forward", where)]


def _torch_stats(model: nn.Module, layers: list[str], arch: str) -> dict[str, dict[str, float]]:
    """out_mean, out_std and out_grad_rms of each layer from torch hooks, one step."""
    out: dict[str, dict[str, float]] = {"out_mean": {}, "out_std": {}, "out_grad_rms": {}}

    def hook(name: str):
        def fn(m: nn.Module, a: tuple, o: torch.Tensor) -> None:
            t = o[0] if isinstance(o, tuple) else o
            out["out_mean"][name] = t.detach().double().mean().item()
            out["out_std"][name] = t.detach().double().std(unbiased=False).item()
            if t.requires_grad:
                t.register_hook(lambda g: out["out_grad_rms"].__setitem__(
                    name, g.double().square().mean().sqrt().item()))
        return fn

    for name in layers:
        model.get_submodule(name).register_forward_hook(hook(name))
    ZOO[arch].loss(model, ZOO[arch].batch(0)).backward()
    return out


@pytest.mark.parametrize("reentrant", [True, False])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_checkpointed_statistics_equal_torch_without_checkpointing(arch, reentrant):
    model = _build(arch, reentrant)
    with gradwell.watch(model) as mon:
        loss = ZOO[arch].loss(model, ZOO[arch].batch(0))
        loss.backward()
        mon.step(loss)
        rec = mon.history.latest()
        layers = [n for n in mon.layers if n in rec["out_grad_rms"]]
        findings = mon.findings()
    ref = _torch_stats(_build(arch, None), layers, arch)
    assert len(ref["out_grad_rms"]) >= 8
    for stat, values in ref.items():
        for name, want in values.items():
            assert rec[stat][name] == pytest.approx(want, rel=1e-4, abs=1e-8), (stat, name)
    assert [f.kind for f in findings] == []
