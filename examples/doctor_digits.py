"""The learning-rate range test and the doctor on scikit-learn's digits.

``make_model()`` and ``make_data()`` are what ``gradwell doctor examples/doctor_digits.py``
reads: the demo's 20-layer sigmoid MLP (its gradients vanish) and the digits loaders.

    python examples/doctor_digits.py          # lr_find on the model, plot in lr_find.png
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import gradwell
from gradwell.lab import data


def make_model() -> nn.Module:
    """The demo's plain deep sigmoid net (Glorot & Bengio 2010's failing case)."""
    return gradwell.nn.MLP(64, 10, depth=20, width=64, activation="sigmoid")


def make_data() -> tuple[DataLoader, DataLoader]:
    """(training batches of 64, reshuffled every epoch; the held-out test set in one batch)."""
    d = data.digits()
    train = DataLoader(TensorDataset(d.x_train, d.y_train), batch_size=64, shuffle=True)
    test = DataLoader(TensorDataset(d.x_test, d.y_test), batch_size=len(d.y_test))
    return train, test


def main(plot: str | None = "lr_find.png") -> gradwell.doctor.LRFindResult:
    torch.manual_seed(0)
    train, _ = make_data()
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))   # a healthy net
    result = gradwell.lr_find(model, train, nn.CrossEntropyLoss(), "adam")
    print(result)
    if plot:
        print("plot:", result.plot(plot))
    return result


if __name__ == "__main__":
    main()
