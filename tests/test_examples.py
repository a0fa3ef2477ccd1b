"""The examples run and do what their docstrings say."""

import importlib.util
import pathlib

import pytest

import gradwell

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_learns_digits_and_skips_the_nan_batch(capsys: pytest.CaptureFixture) -> None:
    accuracy = load("quickstart").main()
    assert accuracy > 0.85  # a 2-layer MLP reaches > 0.9 train accuracy on digits in 200 steps
    assert "skipped steps 1" in capsys.readouterr().out


def test_watch_amp_is_quiet_with_the_scaler_and_cries_wolf_without() -> None:
    pytest.importorskip("transformers")
    out = load("watch_amp").main()
    bare, scaled = out["without scaler="], out["with scaler="]
    assert scaled["losses"][-1] < 0.8 * scaled["losses"][0]            # torch: it trains
    assert scaled["backed_off"] and scaled["overflow_events"] == scaled["backed_off"]
    assert not [f for f in scaled["findings"] if f.severity != "info"]
    assert {f.kind for f in bare["findings"] if f.severity == "error"} >= {"exploding"}


def test_composed_optimizer_matches_clip_grad_norm_then_torch_adam() -> None:
    assert load("compose_optimizer").main() < 1e-5  # float32 rounding only


def test_gd_vs_sgd_minibatch_gets_further_in_the_same_epochs() -> None:
    results = load("gd_vs_sgd").main()
    (gd_loss, gd_acc, gd_steps), (sgd_loss, sgd_acc, sgd_steps) = results.values()
    assert gd_steps == 30  # one full-batch step per epoch
    assert sgd_steps > 40 * gd_steps  # ~45 mini-batches per epoch
    assert sgd_loss < gd_loss and sgd_acc > 0.9


def test_locate_names_the_log_of_an_underflowed_softmax_and_log_softmax_fixes_it() -> None:
    import torch
    result = load("locate_nan").main()
    origin = result["origin"]
    assert result["step"] == 40                      # only the planted batch goes bad
    assert (origin.phase, origin.module, origin.node) == ("backward", None, "LogBackward0")
    assert "epsilon" in origin.remedy
    # torch-only check of the fix: log_softmax on the same batch, gradients all finite
    assert result["fixed_finite"] and torch.isfinite(torch.tensor(result["fixed_loss"]))


def test_doctor_digits_lr_find_suggests_a_rate_adam_trains_with(tmp_path) -> None:
    example = load("doctor_digits")
    result = example.main(plot=str(tmp_path / "lr.png"))
    # Adam on a small digits MLP trains best between 1e-3 and 1e-1 (tests/doctor/test_lrfind.py
    # measures the range); the plot is a PNG.
    assert 1e-3 <= result.suggested_lr <= 1e-1
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    assert isinstance(example.make_model(), gradwell.nn.MLP)


def test_doctor_transformer_finds_attention_logit_growth_and_tries_qk_layernorm() -> None:
    import math
    import torch
    report = load("doctor_transformer").main(steps=40)     # the ranking at 200: -m slow
    assert "attention_logits" in {f.kind for f in report.findings}
    names = [c.name for c in report.candidates]
    assert "structure: QK-layernorm" in names and any(n.startswith("warm-up") for n in names)
    # torch-only: the baseline's attention logits at lr 0.1, by hand from in_proj, are > 100
    torch.manual_seed(0)
    model = load("doctor_transformer").make_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(2):
        for x, y in load("doctor_transformer").make_data():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    with torch.no_grad():
        attn, h = model.blocks[0].attn, model.blocks[0].norm1(model.embed(x) + model.pos)
        q, k, _ = attn.in_proj(h).split(32, -1)
        q, k = q.view(*x.shape, 2, 16), k.view(*x.shape, 2, 16)
        logits = torch.einsum("bthd,buhd->bhtu", q, k).tril() / math.sqrt(16)
    assert logits.abs().max() > 100


def test_guard_replay_names_the_poisoned_samples_and_a_resumed_epoch_skips_nothing(
        tmp_path) -> None:
    example = load("guard_replay")
    result = example.main(str(tmp_path))
    assert result["found"] == set(example.POISONED)        # the planted NaN samples, no others
    assert result["triage"] == ["data"] * len(example.POISONED)  # each is drawn once per epoch
    assert result["first"].count("skipped") == len(example.POISONED)
    assert result["second"] == ["ok"] * 28                  # (1797 - 4) // 64 full batches
