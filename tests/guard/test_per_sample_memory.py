"""Per-sample gradient norms hold a bounded number of per-sample gradients at once.

``vmap(grad(...))`` over a batch used to return every sample's full gradient before taking
norms: batch x trainable parameters floats (a 1.8M-parameter GPT-2 from a config, batch 64:
1.4 GiB more memory for one refused step; GPT-2 small at batch 64 would need ~100 GB, a run
lost to the memory the guard's triage took). Each sample's squared norm is now reduced inside
the vmapped function, over chunks of ``PER_SAMPLE_BYTES`` worth of gradients.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from torch import nn
from torch.nn import functional as F

from gradwell.guard import Batch, per_sample_norms

SCRIPT = textwrap.dedent("""
    import resource, torch
    from torch import nn
    from torch.nn import functional as F
    from gradwell.guard import Batch, per_sample_norms
    import gradwell.guard.triage as triage
    triage.PER_SAMPLE_BYTES = 2 ** 24
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1))  # 1.05M params
    x, y = torch.randn(128, 1024), torch.randn(128, 1)
    per_sample_norms(model, Batch(x[:2], y[:2], F.mse_loss))                   # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    per_sample_norms(model, Batch(x, y, F.mse_loss))
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
""")


def test_per_sample_norms_do_not_hold_every_samples_gradient_at_once() -> None:
    # a fixed mmap threshold: freed tensors go back to the system, so the peak RSS is the
    # peak of live memory (glibc's sliding threshold otherwise keeps freed chunks in the heap)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=120, check=True, env=env)
    grown_mib = float(out.stdout.split()[-1])
    all_at_once_mib = 128 * 1_050_625 * 4 / 2 ** 20          # 513 MiB of per-sample gradients
    assert grown_mib < all_at_once_mib / 4, out.stdout


def test_chunked_norms_equal_torchs_per_sample_gradients(monkeypatch) -> None:
    import gradwell.guard.triage as triage
    monkeypatch.setattr(triage, "PER_SAMPLE_BYTES", 3 * 4 * 4417, raising=False)  # chunks of 3
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))     # 4417 params
    x, y = torch.randn(10, 64), torch.randn(10, 1)
    y[4] = 1e3
    losses, norms = per_sample_norms(model, Batch(x, y, F.mse_loss))
    for i in range(10):
        loss = F.mse_loss(model(x[i:i + 1]), y[i:i + 1])
        grads = torch.autograd.grad(loss, list(model.parameters()))
        ref = torch.sqrt(sum(g.double().pow(2).sum() for g in grads))
        torch.testing.assert_close(norms[i].double(), ref, rtol=1e-5, atol=0)
        torch.testing.assert_close(losses[i], loss.detach(), rtol=1e-6, atol=0)


def test_per_sample_norms_of_a_hugging_face_model_raise_no_torch_vmap_warning() -> None:
    """functorch warns, for ops it runs in a loop (CPU flash attention in HF GPT-2), "Please
    file us an issue on GitHub": a note about gradwell's use of vmap, shown to the user."""
    import warnings
    from models_zoo import ZOO
    arch = ZOO["gpt2"]
    model, x = arch.build(), arch.batch(0)["input_ids"]

    def lm_loss(out, t):
        return F.cross_entropy(out.logits[:, :-1].reshape(-1, 64), t[:, 1:].reshape(-1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        per_sample_norms(model, Batch(x, x, lm_loss))
    assert not [w for w in caught if "batching rule" in str(w.message)]
