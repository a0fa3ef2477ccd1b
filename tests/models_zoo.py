"""Real architectures for tests: models this project did not write, tiny, random init, offline.

Every entry of :data:`ZOO` is an :class:`Arch`: ``arch.build()`` makes a fresh model (seeded,
so two builds are equal), ``arch.batch(step)`` the inputs of a training step (a fixed small
batch by default, so healthy training visibly memorises it and the loss falls), and
``arch.loss(model, batch)`` the scalar loss. ``arch.lr`` is a learning rate at which Adam
trains the model healthily (checked by ``tests/watch/test_zoo.py``: within 25 steps the loss
falls below ``notes.get("loss_drop", 0.8)`` of its first value and every trained parameter
moves).

What it offers (``ZOO[name]``):

====================  ========================================================================
``gpt2``              ``transformers.GPT2LMHeadModel``, 2 blocks, tied input/output embeddings,
                      HF ``Conv1D`` layers (weights stored as (in, out)), ``NewGELUActivation``
``llama``             ``transformers.LlamaForCausalLM``, 2 blocks, RMSNorm, SiLU, GQA, q/k/v_proj
``bert``              ``transformers.BertForSequenceClassification``, 2 layers, tanh pooler
``bert_frozen_emb``   ``bert`` with frozen word embeddings (``requires_grad_(False)``)
``encoder_preln``     ``nn.TransformerEncoder`` (``norm_first=True``) with ``nn.MultiheadAttention``
``resnet_bn``         a residual CNN with ``BatchNorm2d`` (4 blocks, 8x8 inputs, 4 classes)
``lstm`` / ``gru``    ``nn.LSTM`` / ``nn.GRU`` sequence classifiers (2 layers)
``lora_gpt2``         ``gpt2`` with ``peft`` LoRA adapters on every ``Conv1D`` (B initialised at 0,
                      the base model frozen)
====================  ========================================================================

:func:`compiled` wraps any entry's model in ``torch.compile`` (default ``backend="eager"``:
dynamo's tracing, graph breaks and ``_orig_mod.`` names without inductor's compile time).
:func:`train` is the plain torch training loop the tests share (``optimizer`` and a callback
per step to plant a pathology or to drive a monitor). Everything is built from configs; nothing
is downloaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

__all__ = ["Arch", "ZOO", "compiled", "train", "ids_batch", "HF"]

#: the entries built with Hugging Face transformers (and peft)
HF = ("gpt2", "llama", "bert", "bert_frozen_emb", "lora_gpt2")

VOCAB, SEQ, BATCH = 64, 16, 8


@dataclass(frozen=True)
class Arch:
    """One architecture: how to build it, feed it and score it."""

    name: str
    build: Callable[[], nn.Module]
    batch: Callable[[int], dict[str, Tensor]]
    loss: Callable[[nn.Module, dict[str, Tensor]], Tensor]
    lr: float = 3e-3
    notes: dict[str, Any] = field(default_factory=dict)


def _quiet_transformers() -> None:
    logging.getLogger("transformers").setLevel(logging.ERROR)


def ids_batch(step: int, seed: int = 0, vocab: int = VOCAB) -> dict[str, Tensor]:
    """A fixed batch of token ids with a learnable pattern (x[t+1] = x[t] + 1 mod vocab)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab, (BATCH, 1), generator=g)
    ids = (start + torch.arange(SEQ)) % vocab
    labels = (start[:, 0] % 2).long()
    return {"input_ids": ids, "labels": labels}


def _lm_loss(model: nn.Module, b: dict[str, Tensor]) -> Tensor:
    return model(input_ids=b["input_ids"], labels=b["input_ids"]).loss


def _cls_loss(model: nn.Module, b: dict[str, Tensor]) -> Tensor:
    return model(input_ids=b["input_ids"], labels=b["labels"]).loss


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel
    _quiet_transformers()
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=SEQ,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                     eos_token_id=0, tie_word_embeddings=True)
    return GPT2LMHeadModel(cfg)


def _llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM
    _quiet_transformers()
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                      max_position_embeddings=SEQ, bos_token_id=0, eos_token_id=0,
                      pad_token_id=0, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


def _mixtral() -> nn.Module:
    """A sparse mixture of experts: each token is routed to 2 of 4 experts, so an expert's
    gradient comes from the tokens it got (none on a step it got none)."""
    from transformers import MixtralConfig, MixtralForCausalLM
    _quiet_transformers()
    torch.manual_seed(0)
    cfg = MixtralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                        max_position_embeddings=SEQ, num_local_experts=4, num_experts_per_tok=2,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0,
                        tie_word_embeddings=False)
    return MixtralForCausalLM(cfg)


def _bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification
    _quiet_transformers()
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2, vocab_size=VOCAB, max_position_embeddings=SEQ,
                     num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                     pad_token_id=0)
    return BertForSequenceClassification(cfg)


def _bert_frozen_emb() -> nn.Module:
    model = _bert()
    model.bert.embeddings.word_embeddings.requires_grad_(False)
    return model


def _lora_gpt2() -> nn.Module:
    from peft import LoraConfig, get_peft_model
    base = _gpt2()
    torch.manual_seed(1)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True,
                     lora_dropout=0.0)
    return get_peft_model(base, cfg)    # lora_B is zero-initialised: the adapter starts as 0


class EncoderClassifier(nn.Module):
    """Embedding -> pre-LN ``nn.TransformerEncoder`` -> LayerNorm -> mean pool -> Linear."""

    def __init__(self, d: int = 32, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        block = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=64, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 2)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.head(self.norm(self.encoder(self.embed(input_ids))).mean(1))


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    return EncoderClassifier()


def _logits_loss(model: nn.Module, b: dict[str, Tensor]) -> Tensor:
    return nn.functional.cross_entropy(model(b["input_ids"]), b["labels"])


class Block(nn.Module):
    """x + BN(conv(ReLU(BN(conv(x))))), then ReLU (He et al. 2016)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu2(x + self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    def __init__(self, c: int = 8, blocks: int = 4, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU())
        self.blocks = nn.Sequential(*[Block(c) for _ in range(blocks)])
        self.fc = nn.Linear(c, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return ResNet()


def _image_batch(step: int, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(16, 3, 8, 8, generator=g),
            "labels": torch.randint(0, 4, (16,), generator=g)}


def _image_loss(model: nn.Module, b: dict[str, Tensor]) -> Tensor:
    return nn.functional.cross_entropy(model(b["x"]), b["labels"])


class RecurrentClassifier(nn.Module):
    """Embedding -> 2-layer LSTM/GRU -> Linear on the last state."""

    def __init__(self, cell: type[nn.Module], d: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.rnn = cell(d, d, num_layers=2, batch_first=True)
        self.head = nn.Linear(d, 2)

    def forward(self, input_ids: Tensor) -> Tensor:
        out = self.rnn(self.embed(input_ids))[0]
        return self.head(out[:, -1])


def _recurrent(cell: type[nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return RecurrentClassifier(cell)
    return build


ZOO: dict[str, Arch] = {a.name: a for a in (
    Arch("gpt2", _gpt2, ids_batch, _lm_loss, notes={"tied": ("transformer.wte", "lm_head")}),
    Arch("llama", _llama, ids_batch, _lm_loss),
    Arch("mixtral", _mixtral, ids_batch, _lm_loss),
    Arch("bert", _bert, ids_batch, _cls_loss),
    Arch("bert_frozen_emb", _bert_frozen_emb, ids_batch, _cls_loss,
         notes={"frozen": "bert.embeddings.word_embeddings"}),
    Arch("encoder_preln", _encoder, ids_batch, _logits_loss),
    Arch("resnet_bn", _resnet, _image_batch, _image_loss),
    Arch("lstm", _recurrent(nn.LSTM), ids_batch, _logits_loss, lr=1e-2),
    Arch("gru", _recurrent(nn.GRU), ids_batch, _logits_loss, lr=1e-2),
    Arch("lora_gpt2", _lora_gpt2, ids_batch, _lm_loss, lr=1e-2,
         notes={"zero_init": "lora_B", "loss_drop": 0.95}),
)}


def compiled(model: nn.Module, backend: str = "eager") -> nn.Module:
    """``torch.compile(model, backend=backend)`` (an ``OptimizedModule``: names get
    ``_orig_mod.``). ``backend="eager"`` runs dynamo without inductor's compile time."""
    return torch.compile(model, backend=backend)


def train(arch: Arch, steps: int, *, model: nn.Module | None = None,
          optimizer: Callable[[Any], torch.optim.Optimizer] | None = None,
          on_step: Callable[[int, nn.Module, Tensor], None] | None = None,
          batch: Callable[[int], dict[str, Tensor]] | None = None,
          after_backward: Callable[[int, nn.Module, Tensor], None] | None = None
          ) -> tuple[nn.Module, list[float]]:
    """Train ``arch`` for ``steps`` plain torch steps; returns the model and the losses.

    ``optimizer(params)`` builds the optimizer (default ``torch.optim.Adam(lr=arch.lr)``);
    ``after_backward(step, model, loss)`` runs between ``loss.backward()`` and ``opt.step()`` (a
    monitor's ``mon.step()``, a clip); ``on_step(step, model, loss)`` after ``opt.step()``.
    """
    model = arch.build() if model is None else model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (optimizer or (lambda ps: torch.optim.Adam(ps, lr=arch.lr)))(params)
    get = batch or arch.batch
    losses = []
    for step in range(steps):
        loss = arch.loss(model, get(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward(step, model, loss)
        opt.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, model, loss)
    return model, losses
