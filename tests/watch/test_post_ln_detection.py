"""Which Hugging Face transformers normalise after the residual sum (post-LN, which needs
warm-up: Xiong et al. 2020)? ``history.meta["post_ln"]`` is checked against what each model
does in a forward pass, found here with torch hooks alone: a transformer layer (an item of an
``nn.ModuleList`` that holds an attention module, returning a tensor or a tuple) whose output
*is* the output of a normalisation module inside it."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
import transformers as hf
from torch import nn

import gradwell

V = 64
small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
seq2seq = dict(d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_layers=1,
               decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
               decoder_start_token_id=0, pad_token_id=1)
audio = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
             conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4),
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
MODELS = {
    "bert": lambda: hf.BertForSequenceClassification(hf.BertConfig(vocab_size=V, **small)),
    "roberta": lambda: hf.RobertaForMaskedLM(hf.RobertaConfig(vocab_size=V, **small)),
    "electra": lambda: hf.ElectraForSequenceClassification(
        hf.ElectraConfig(vocab_size=V, embedding_size=32, **small)),
    "albert": lambda: hf.AlbertForMaskedLM(
        hf.AlbertConfig(vocab_size=V, embedding_size=16, **small)),
    "distilbert": lambda: hf.DistilBertForMaskedLM(
        hf.DistilBertConfig(vocab_size=V, dim=32, hidden_dim=64, n_layers=2, n_heads=4)),
    "bart": lambda: hf.BartForConditionalGeneration(hf.BartConfig(vocab_size=V, **seq2seq)),
    "mbart": lambda: hf.MBartForConditionalGeneration(hf.MBartConfig(vocab_size=V, **seq2seq)),
    "opt_post_ln": lambda: hf.OPTForCausalLM(hf.OPTConfig(
        vocab_size=V, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
        word_embed_proj_dim=32, do_layer_norm_before=False)),
    "opt": lambda: hf.OPTForCausalLM(hf.OPTConfig(
        vocab_size=V, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
        word_embed_proj_dim=32)),
    "gpt2": lambda: hf.GPT2LMHeadModel(hf.GPT2Config(vocab_size=V, n_embd=32, n_layer=2,
                                                     n_head=4)),
    "llama": lambda: hf.LlamaForCausalLM(hf.LlamaConfig(vocab_size=V, **small)),
    "wav2vec2": lambda: hf.Wav2Vec2ForSequenceClassification(hf.Wav2Vec2Config(**audio)),
    "wav2vec2_stable": lambda: hf.Wav2Vec2ForSequenceClassification(
        hf.Wav2Vec2Config(do_stable_layer_norm=True, feat_extract_norm="layer", **audio)),
    "t5": lambda: hf.T5ForConditionalGeneration(hf.T5Config(
        vocab_size=V, d_model=32, d_ff=64, num_layers=1, num_heads=4, d_kv=8,
        decoder_start_token_id=0)),
}


def _attention(m: nn.Module) -> bool:
    return type(m).__name__.endswith("Attention")


def _post_ln_by_torch(model: nn.Module, ids: torch.Tensor) -> bool:
    """Run one forward and look for a transformer layer whose output is a norm's output."""
    mods = list(model.modules())
    layers = [m for lst in mods if isinstance(lst, nn.ModuleList) for m in lst
              if any(_attention(c) for c in m.modules())]
    outs: dict[int, Any] = {}

    def keep(mod: nn.Module, args: tuple, out: Any) -> None:
        outs.setdefault(id(mod), out)
    handles = [m.register_forward_hook(keep) for m in mods]
    with torch.no_grad():
        if "Wav2Vec2" in type(model).__name__:
            model(input_values=torch.randn(2, 800))
        elif "Classification" in type(model).__name__:
            model(input_ids=ids)
        else:
            model(input_ids=ids, labels=ids)
    for h in handles:
        h.remove()

    def first(out: Any) -> torch.Tensor | None:
        if isinstance(out, torch.Tensor):
            return out
        return first(out[0]) if isinstance(out, tuple) and out else None
    for layer in layers:
        if not isinstance(outs.get(id(layer)), (torch.Tensor, tuple)):
            continue                              # a model output: a whole stack, not a layer
        out = first(outs[id(layer)])
        norms = [first(outs.get(id(c))) for c in list(layer.modules())[1:]   # not the layer
                 if "Norm" in type(c).__name__]
        if out is not None and any(n is not None and n.data_ptr() == out.data_ptr()
                                   and n.shape == out.shape for n in norms):
            return True
    return False


@pytest.mark.parametrize("name", list(MODELS))
def test_post_ln_is_what_the_forward_pass_does(name: str) -> None:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    ids = torch.randint(2, V, (2, 8))
    expected = _post_ln_by_torch(model, ids)
    mon = gradwell.watch(model)
    mon.close()
    assert mon.history.meta["post_ln"] is expected
    assert expected is (name in ("bert", "roberta", "electra", "albert", "distilbert", "bart",
                                 "opt_post_ln", "wav2vec2"))  # the papers' and configs' layouts
