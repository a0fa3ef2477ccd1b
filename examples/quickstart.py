"""Quick start: a drop-in Adam with clipping and a NaN guard inside the step.

    python examples/quickstart.py

Trains a small classifier on scikit-learn's digits (bundled, offline); one batch of NaN
gradients is injected at step 50 and skipped without touching the model.
"""

import torch
from sklearn.datasets import load_digits

import gradwell
from gradwell.clip import GlobalNorm


def main(steps: int = 200) -> float:
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = gradwell.optim.Adam(model.parameters(), lr=1e-3, clip=GlobalNorm(1.0),
                              skip_nonfinite=True)
    for step in range(steps):
        idx = torch.randint(0, len(x), (64,))
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        if step == 50:  # a bad batch: its gradients are NaN
            model[0].weight.grad.fill_(float("nan"))
        opt.step()
    accuracy = (model(x).argmax(1) == y).float().mean().item()
    print(f"train accuracy {accuracy:.3f}, skipped steps {opt.skipped_steps}")
    return accuracy


if __name__ == "__main__":
    main()
