"""gradwell in a Lightning run: watch the gradients and skip a bad batch exactly.

    python examples/lightning_callback.py

Trains a small classifier on scikit-learn's digits (bundled, offline) with Lightning;
the sixth batch holds a NaN pixel. ``GradwellCallback(guard=True)`` skips that step in every
epoch (the model and Adam's state stay as they were), logs ``gradwell/...`` scalars to a CSV
log in a temporary folder, and prints its findings at the end of ``fit``.
"""

import tempfile

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gradwell.integrations.lightning import GradwellCallback


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def main(epochs: int = 3) -> tuple[GradwellCallback, float]:
    """Returns the callback and the final training accuracy."""
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    x[5 * 64, 0] = float("nan")                       # the sixth batch is bad
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=False, drop_last=True)
    model = Classifier()
    callback = GradwellCallback(guard=True)            # the two lines that matter
    with tempfile.TemporaryDirectory() as logs:
        trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", callbacks=[callback],
                             logger=CSVLogger(logs), log_every_n_steps=10,
                             gradient_clip_val=1.0, enable_progress_bar=False,
                             enable_checkpointing=False, enable_model_summary=False)
        trainer.fit(model, loader)
    x[5 * 64, 0] = 0.0
    with torch.no_grad():
        accuracy = float((model.net(x).argmax(1) == y).float().mean())
    skipped = int(callback.session.skipped)
    print(f"skipped steps {skipped}, training accuracy {accuracy:.3f}")
    return callback, accuracy


if __name__ == "__main__":
    main()
