"""Evaluate-images logic: score a trained image model on the held-out test images, gate it, write the report.

The model is scored through the same runtime the predictor serves
(model.json's `serving_format`: TorchScript, ONNX, TFLite or SavedModel), so
the numbers describe what will be deployed, not the training-time module.
The metric names are evaluate_model's multiclass ones, so one
`evaluation.min` / `evaluation.max` section and one gate serve both steps.
Kept free of KFP so it runs in tests and in the component alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from keel.components._common import storage
from keel.components._common.config import EvaluationSection
from keel.components._common.errors import DataError
from keel.components._common.image_data import ImageSet, read_npz
from keel.components._common.evaluation import metrics as m
from keel.components._common.evaluation import vision_metrics as vm

# Image models are scored as multiclass classifiers (a softmax over every class, two classes included).
TASK = "multiclass"
# Scored on CPU in the evaluation step: 512 MNIST-sized images are ~1.6 MB of float32 pixels per batch.
BATCH_SIZE = 512


@dataclass
class ImageEvaluation:
    """What evaluate_image_model found, in the shapes the KFP outputs and the report need."""

    info: dict  # model.json
    fmt: str  # the export that was scored
    class_names: list[str]
    metrics: dict[str, float]
    skipped: dict[str, str]
    passed: bool
    failures: list[str]
    images: int
    per_class: list[dict]
    confusion: list[list[int]]
    test: ImageSet = field(repr=False)
    y_pred: np.ndarray = field(repr=False)
    proba: np.ndarray = field(repr=False)


def evaluate_image_model(model_dir: str, test: ImageSet, section: EvaluationSection, *, fmt: str | None = None,
                         batch_size: int = BATCH_SIZE, where: str = "test") -> ImageEvaluation:
    """Scores the exported model in `model_dir` on `test` and checks the thresholds.

    Args:
        model_dir: a trained image model directory (model.json + export files).
        test: the test images.
        section: the evaluation config section (min/max thresholds).
        fmt: the export to score (default: model.json's serving_format).
        batch_size: images per forward pass.
        where: how errors name the test set (its file).

    Returns:
        The `ImageEvaluation`.

    Raises:
        ConfigError: a threshold names a metric that image evaluation does not compute.
        DataError: the test images do not fit the model (shape, classes), or the model does not load or score.
    """
    from keel.components._common.deep_model.artifact import read_info
    from keel.components._common.deep_model.runtime import load_runtime

    m.check_thresholds(section, TASK)  # before loading anything: a typo should cost nothing
    info = read_info(model_dir)
    names = [str(c) for c in info["classes"]]
    layout = check_test_set(test, info, where, model_dir)
    runtime = load_runtime(model_dir, fmt, info)
    logits = predict_logits(runtime, test.images, layout, len(names), batch_size, where)
    proba = softmax(logits)
    y_pred = logits.argmax(axis=1)
    scores = vm.classification_metrics(test.labels, y_pred, proba, n_classes=len(names), class_names=names)
    passed, failures = m.gate(scores.values, section, TASK, scores.skipped)
    return ImageEvaluation(info=info, fmt=runtime.fmt, class_names=names, metrics=scores.values, skipped=scores.skipped,
                           passed=passed, failures=failures, images=len(test), per_class=scores.per_class,
                           confusion=scores.confusion, test=test, y_pred=y_pred, proba=proba)


def evaluate_image_files(model_dir: str, test_path: str, section: EvaluationSection, report_path: str,
                         *, fmt: str | None = None) -> ImageEvaluation:
    """Reads the test ImageSet (.npz), evaluates, and writes the HTML report to `report_path`."""
    from keel.components.evaluate_images.report import render_report

    result = evaluate_image_model(model_dir, read_npz(test_path), section, fmt=fmt, where=str(test_path))
    storage.write_bytes(report_path, render_report(result, section).encode(), content_type="text/html")
    return result


def check_test_set(test: ImageSet, info: dict, where: str, model_dir: str = "trained_model") -> str:
    """Checks that `test` fits the model's input and classes; returns the model's layout.

    Raises:
        DataError: image shape differs from model.json's input, a label is not one of the
            model's classes, or the class names disagree (a different label order).
    """
    spec = info["input"]
    try:
        expected = (int(spec["height"]), int(spec["width"]), int(spec["channels"]))
        layout = spec["layout"]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{model_dir}/model.json: input must give layout, height, width and channels, got {spec!r}") from None
    if layout not in ("NCHW", "NHWC"):
        raise DataError(f"{model_dir}/model.json: input.layout {layout!r} is not NCHW or NHWC")
    if test.shape != expected:
        h, w, c = test.shape
        raise DataError(f"{where}: images are {h}x{w}x{c} (height x width x channels) but the model takes "
                        f"{expected[0]}x{expected[1]}x{expected[2]} (model.json input); evaluate on images prepared like its training set")
    names = [str(c) for c in info["classes"]]
    bad = test.labels >= len(names)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{where}: label {int(test.labels[row])} of image {row} is not one of the model's {len(names)} classes")
    # An .npz without class names gets "0", "1", ...: nothing to compare then. Named classes in
    # another order would score every image against the wrong label.
    numbered = test.classes == [str(i) for i in range(len(test.classes))]
    if not numbered and test.classes != names[:len(test.classes)]:
        mismatch = next((i for i, (a, b) in enumerate(zip(test.classes, names)) if a != b), min(len(test.classes), len(names)))
        theirs = test.classes[mismatch] if mismatch < len(test.classes) else None
        ours = names[mismatch] if mismatch < len(names) else None
        raise DataError(f"{where}: class {mismatch} is {theirs!r} but the model's class {mismatch} is {ours!r}; "
                        "the test set must use the model's class list (same names, same order)")
    return layout


def predict_logits(runtime, images: np.ndarray, layout: str, n_classes: int, batch_size: int = BATCH_SIZE,
                   where: str = "test") -> np.ndarray:
    """Class scores for uint8 `[N, H, W, C]` images, computed batch by batch in the model's layout.

    Raises:
        DataError: the model returns the wrong shape or non-finite scores (naming the image).
    """
    from keel.components._common.deep_model.runtime import to_layout

    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        logits = np.asarray(runtime.predict(to_layout(batch, layout)), dtype=np.float64)
        if logits.shape != (len(batch), n_classes):
            raise DataError(f"{runtime.path}: the {runtime.fmt} model returned shape {list(logits.shape)} for {len(batch)} "
                            f"images; model.json lists {n_classes} classes, so it must return [{len(batch)}, {n_classes}]")
        bad = ~np.isfinite(logits).all(axis=1)
        if bad.any():
            raise DataError(f"{where}: the model gave NaN or infinite scores for image {start + int(np.argmax(bad))}")
        out.append(logits)
    return np.concatenate(out)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from logits (every Keel image model returns logits)."""
    from scipy.special import softmax as scipy_softmax

    return scipy_softmax(np.asarray(logits, dtype=np.float64), axis=1)
