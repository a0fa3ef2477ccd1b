"""GradwellCallback for the Hugging Face Trainer, checked against plain-torch loops."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

from integration_helpers import (assert_same_state, batches, make_optimizer,  # noqa: E402
                                 make_scheduler, mlp, torch_loop)
from transformers import Trainer, TrainingArguments  # noqa: E402

import gradwell.integrations.transformers as hf  # noqa: E402
from gradwell.integrations.transformers import GradwellCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:(?!gradwell)",
                                        "ignore::UserWarning", "ignore::FutureWarning")


class Regressor(nn.Module):
    """``net`` with the Trainer's calling convention: ``forward(x, labels) -> {"loss": ...}``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls = 0

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        out = self.net(x)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


def train(model: nn.Module, data: list, callbacks: list, tmp_path, *, optimizer: str = "adam",
          lr: float = 1e-2, schedule: bool = True, **kwargs) -> Trainer:
    """One epoch over ``data`` in order (one batch per micro-step), torch's optimizer."""
    opts = dict(output_dir=str(tmp_path), per_device_train_batch_size=len(data[0][0]),
                num_train_epochs=1, logging_steps=1, report_to="none", save_strategy="no",
                use_cpu=True, train_sampling_strategy="sequential", disable_tqdm=True,
                dataloader_num_workers=0, max_grad_norm=0.0)
    opts.update(kwargs)
    params = model.parameters()
    opt = make_optimizer(optimizer, params, lr)
    sched = make_scheduler(opt) if schedule else torch.optim.lr_scheduler.LambdaLR(opt,
                                                                                 lambda s: 1.0)
    rows = [{"x": x[i], "labels": y[i]} for x, y in data for i in range(len(x))]
    trainer = Trainer(model=model, args=TrainingArguments(**opts), train_dataset=rows,
                      optimizers=(opt, sched), callbacks=callbacks)
    trainer.train()
    return trainer


def test_norms_are_read_after_accumulation_and_before_the_trainer_clips(tmp_path):
    """Per-layer norms equal a torch loop's pre-clip norms of the accumulated gradient; the
    clipping (far below them) shapes training exactly as torch's clip_grad_norm_ does; the
    Trainer's log and args.max_grad_norm are what they would be without the callback."""
    data, net, clip = batches(8), mlp(), 0.05
    cb = GradwellCallback(verbose=False)
    model = Regressor(copy.deepcopy(net))
    trainer = train(model, data, [cb], tmp_path, gradient_accumulation_steps=2,
                    max_grad_norm=clip)
    ref = torch_loop(net, data, schedule=True, accumulate=2, clip=clip)
    steps, names, got = cb.session.monitor.history.series("grad_norm")
    assert names == ["net.0", "net.2", "net.4", "net.6"] and len(steps) == 4
    np.testing.assert_allclose(got, ref["layer_norms"], rtol=1e-5)
    assert min(ref["totals"]) > 10 * clip
    assert_same_state(model.net, ref["net"], trainer.optimizer.optimizer, ref["opt"])
    logs = [e for e in trainer.state.log_history if "loss" in e]
    np.testing.assert_allclose([e["grad_norm"] for e in logs], ref["totals"], rtol=1e-5)
    np.testing.assert_allclose([e["gradwell/grad_norm"] for e in logs], ref["totals"],
                               rtol=1e-5)
    assert all(e["gradwell/rel_grad_min"] <= e["gradwell/rel_grad_max"] for e in logs)
    assert trainer.args.max_grad_norm == clip
    assert cb.findings() == [] and trainer.state.log_history[-1]["gradwell/findings"] == []


def test_a_nan_batch_is_skipped_exactly(tmp_path):
    """Parameters, optimizer state and the LR schedule end as in a torch run that never saw
    the bad batch."""
    data, net = batches(7, nan_at=3), mlp()
    cb = GradwellCallback(guard=True, verbose=False)
    model = Regressor(copy.deepcopy(net))
    trainer = train(model, data, [cb], tmp_path)
    ref = torch_loop(net, data[:3] + data[4:], schedule=True)
    assert_same_state(model.net, ref["net"], trainer.optimizer.optimizer, ref["opt"])
    assert trainer.lr_scheduler.last_epoch == ref["sched"].last_epoch == 6
    assert "step" not in vars(trainer.lr_scheduler)
    assert [e.step for e in cb.session.guard.events] == [3]
    assert trainer.state.log_history[-1]["gradwell/findings/nonfinite"] >= 1
    assert [e["gradwell/skipped_steps"] for e in trainer.state.log_history
            if "loss" in e] == [0, 0, 0, 1, 1, 1, 1]


def test_vanishing_finding_reaches_log_history(tmp_path):
    """Deep sigmoid MLP: torch shows the first layer's gradient ~1e-5 of the last one's; the
    callback's vanishing finding is in trainer.state.log_history."""
    data, net = batches(12), mlp(width=16, depth=12, act=nn.Sigmoid)
    ref = torch_loop(net, data, optimizer="sgd", lr=0.05, clip=1.0)
    first, last = np.array(ref["layer_norms"])[:, [0, -1]].T
    assert np.all(first < 1e-4 * last)
    cb = GradwellCallback(verbose=False)
    trainer = train(Regressor(copy.deepcopy(net)), data, [cb], tmp_path, optimizer="sgd",
                    lr=0.05, schedule=False, max_grad_norm=1.0)
    final = trainer.state.log_history[-1]
    assert final["gradwell/findings/vanishing"] >= 1
    assert "vanishing" in {f["kind"] for f in final["gradwell/findings"]}
    assert any(f.kind == "vanishing" for f in cb.findings())


@pytest.mark.parametrize("name", ["gpt2", "llama", "lora_gpt2"])
def test_healthy_zoo_models_have_no_findings(name, tmp_path):
    """Models we did not write (tests/models_zoo.py: HF from configs, LoRA via peft) trained by
    the Trainer at the zoo's healthy learning rate: the loss falls as the zoo says it must
    (torch-only evidence) and the callback finds nothing."""
    from models_zoo import ZOO
    arch = ZOO[name]
    batch = arch.batch(0)
    lm = arch.loss.__name__ == "_lm_loss"
    rows = [{"input_ids": batch["input_ids"][i],
             "labels": batch["input_ids"][i] if lm else batch["labels"][i]}
            for _ in range(25) for i in range(len(batch["input_ids"]))]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8,
                             num_train_epochs=1, logging_steps=1, report_to="none",
                             save_strategy="no", use_cpu=True, disable_tqdm=True,
                             learning_rate=arch.lr, lr_scheduler_type="constant",
                             weight_decay=0.0, train_sampling_strategy="sequential",
                             dataloader_num_workers=0)
    cb = GradwellCallback(verbose=False)
    trainer = Trainer(model=arch.build(), args=args, train_dataset=rows, callbacks=[cb])
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 25 and losses[-1] < arch.notes.get("loss_drop", 0.8) * losses[0]
    assert cb.findings() == [], [str(f) for f in cb.findings()]
    assert all("gradwell/grad_norm" in e for e in trainer.state.log_history if "loss" in e)


def test_an_fp16_trainers_grad_scaler_reaches_the_monitor(tmp_path):
    """With ``fp16=True`` on a GPU, accelerate wraps the optimizer with its GradScaler
    (``AcceleratedOptimizer.scaler``); the callback hands it to the monitor, which then treats
    the scaler's overflow steps as events (tests/watch/test_amp_scaler.py). On the CPU
    accelerate uses no scaler, so the wrapper is built here as the Trainer builds it."""
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer
    from transformers import TrainerControl, TrainerState
    from models_zoo import ZOO
    Accelerator(cpu=True)
    model = ZOO["llama"].build()
    scaler = torch.amp.GradScaler("cpu")
    opt = AcceleratedOptimizer(torch.optim.AdamW(model.parameters()), scaler=scaler)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    cb = GradwellCallback(verbose=False)
    cb.on_train_begin(args, TrainerState(), TrainerControl(), model=model, optimizer=opt)
    try:
        assert cb.session.monitor.scaler is scaler
    finally:
        cb.on_train_end(args, TrainerState(), TrainerControl())


# --------------------------------------------------------------------------- bad input
def _fails_at_start(model, callbacks, tmp_path, match, error=ValueError, **kwargs):
    with pytest.raises(error, match=match):
        train(model, batches(3), callbacks, tmp_path, **kwargs)
    assert model.calls == 0          # at train() start, never mid-run


def test_two_callbacks_are_an_error_at_train_start(tmp_path):
    first = GradwellCallback()
    _fails_at_start(Regressor(mlp()), [first, GradwellCallback(guard=True)], tmp_path,
                    "two GradwellCallback objects")
    assert first.session is None and not hf._ACTIVE     # the first one let go too


def test_an_unwatchable_model_is_an_error_at_train_start(tmp_path):
    model = Regressor(mlp())
    model.net.requires_grad_(False)
    outside = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([outside], lr=0.1)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                             save_strategy="no", disable_tqdm=True)
    rows = [{"x": x, "labels": y} for x, y in zip(*batches(1)[0])]
    trainer = Trainer(model=model, args=args, train_dataset=rows, optimizers=(opt, None),
                      callbacks=[GradwellCallback()])
    with pytest.raises(ValueError, match="no parameters that require gradients"):
        trainer.train()
    assert model.calls == 0 and not hf._ACTIVE


def test_guard_with_an_unsupported_strategy_is_an_error_at_train_start(tmp_path, monkeypatch):
    """DeepSpeed/FSDP need other machines; accelerate's answer is stood in for."""
    monkeypatch.setattr(hf, "_distributed_type", lambda: "DEEPSPEED")
    _fails_at_start(Regressor(mlp()), [GradwellCallback(guard=True)], tmp_path,
                    "supports one process and DDP, got accelerate's distributed type DEEPSPEED")
