"""Vision metrics: box and mask IoU, detection mAP, and image classification scores.

Pure functions over numpy arrays (or lists), each validating its inputs so a
bad box or label is one DataError that names the argument and the index, not
a shape error deep inside torch or sklearn. The numbers come from the
libraries that define them: torchvision's `box_iou`, torchmetrics'
`MeanAveragePrecision` on the pycocotools backend (the COCO evaluation
itself) and sklearn.metrics. Heavy imports stay inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keel.components._common.errors import DataError

# Names match keel.components._common.evaluation.metrics.MULTICLASS, so evaluation.min /
# evaluation.max and that module's gate() work unchanged for image models.
CLASSIFICATION = ("accuracy", "precision_macro", "recall_macro", "f1_macro",
                  "precision_weighted", "recall_weighted", "f1_weighted", "roc_auc", "log_loss")


# ---- boxes ------------------------------------------------------------------------------------


def check_boxes(boxes, where: str) -> np.ndarray:
    """Boxes as a float64 `[K, 4]` array of (x1, y1, x2, y2), validated.

    Raises:
        DataError: naming `where` and the first bad box: wrong shape, NaN or
            infinite coordinates, or x2 < x1 / y2 < y1.
    """
    array = np.asarray(boxes, dtype=float)
    if array.size == 0:
        return np.zeros((0, 4))
    if array.ndim != 2 or array.shape[1] != 4:
        raise DataError(f"{where}: boxes must be [K, 4] (x1, y1, x2, y2), got shape {list(array.shape)}")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise DataError(f"{where}[{int(np.argmax(bad))}]: NaN or infinite coordinate")
    for axis, (low, high) in (("x", (0, 2)), ("y", (1, 3))):
        bad = array[:, high] < array[:, low]
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"{where}[{row}]: {axis}2 {array[row, high]:g} < {axis}1 {array[row, low]:g}; "
                            f"boxes are (x1, y1, x2, y2) corners with x2 >= x1 and y2 >= y1")
    return array


def box_iou(boxes1, boxes2) -> np.ndarray:
    """Pairwise intersection over union of two sets of xyxy boxes.

    Args:
        boxes1: `[N, 4]` boxes (x1, y1, x2, y2).
        boxes2: `[M, 4]` boxes.

    Returns:
        `[N, M]` float64 IoU matrix; a pair of zero-area boxes counts as 0, not NaN.

    Raises:
        DataError: a box is malformed (named as boxes1[i] or boxes2[j]).
    """
    import torch
    from torchvision.ops import box_iou as tv_box_iou

    a, b = check_boxes(boxes1, "boxes1"), check_boxes(boxes2, "boxes2")
    iou = tv_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    # torchvision divides 0 by 0 for two degenerate boxes: no overlap is an IoU of 0.
    return np.nan_to_num(iou, nan=0.0)


# ---- segmentation masks -----------------------------------------------------------------------


@dataclass
class MaskIoU:
    """Per-class IoU of a segmentation: None where a class is in neither map (undefined, left out of the mean)."""

    per_class: list[float | None]
    mean_iou: float


def mask_iou(target, pred, num_classes: int, ignore_index: int | None = None) -> MaskIoU:
    """Per-class and mean intersection over union of two segmentation label maps.

    IoU of class c = |target == c AND pred == c| / |target == c OR pred == c|,
    counted over every pixel of every map (one confusion matrix for the whole
    set, as the Cityscapes and VOC benchmarks do, not a mean of per-image IoUs).

    Args:
        target: integer label map(s), any shape (`[H, W]` or `[N, H, W]`).
        pred: predicted label map(s), the same shape.
        num_classes: classes are 0..num_classes-1.
        ignore_index: a target value (e.g. 255 for "void") whose pixels are not scored.

    Returns:
        The `MaskIoU`.

    Raises:
        DataError: shapes differ, or a value is not a class index (named with its position).
    """
    target, pred = np.asarray(target), np.asarray(pred)
    if target.shape != pred.shape:
        raise DataError(f"pred: shape {list(pred.shape)} differs from target's {list(target.shape)}")
    if target.size == 0:
        raise DataError("target: empty label map")
    keep = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    for name, values in (("target", target), ("pred", pred)):
        _check_labels(values, name, num_classes, mask=keep if name == "target" else None)
    counts = np.bincount(num_classes * target[keep].astype(np.int64) + pred[keep].astype(np.int64),
                         minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    intersection = np.diag(counts).astype(float)
    union = counts.sum(axis=0) + counts.sum(axis=1) - intersection
    per_class = [float(i / u) if u else None for i, u in zip(intersection, union)]
    defined = [v for v in per_class if v is not None]
    if not defined:
        raise DataError("target: every pixel is ignore_index; nothing to score")
    return MaskIoU(per_class=per_class, mean_iou=float(np.mean(defined)))


def _check_labels(values: np.ndarray, name: str, num_classes: int, mask: np.ndarray | None = None) -> None:
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.bool_)):
        if not np.issubdtype(values.dtype, np.floating):
            raise DataError(f"{name}: class labels must be integers, got dtype {values.dtype}")
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            where = np.argwhere(bad)[0]
            raise DataError(f"{name}{_position(where)}: {values[tuple(where)]} is not a whole class index")
    bad = (values < 0) | (values >= num_classes)
    if mask is not None:
        bad &= mask
    if bad.any():
        where = np.argwhere(bad)[0]
        raise DataError(f"{name}{_position(where)}: {values[tuple(where)]} is not a class index 0..{num_classes - 1}")


def _position(index) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


# ---- detection --------------------------------------------------------------------------------


def mean_average_precision(preds: list[dict], targets: list[dict], *, per_class: bool = False) -> dict:
    """COCO mean average precision of box detections (torchmetrics on the pycocotools backend).

    Average precision per class uses COCO's 101-point interpolation (precision
    at recall 0, 0.01, ..., 1, each the best precision at that recall or
    more), averaged over classes; `map` averages it over IoU thresholds
    0.50:0.05:0.95, `map_50` and `map_75` are single thresholds.

    Args:
        preds: one dict per image: boxes `[K, 4]` xyxy, scores `[K]`, labels `[K]` (ints).
        targets: one dict per image, in the same order: boxes `[G, 4]` xyxy, labels `[G]`.
        per_class: also return `map_per_class` {label: AP at 0.50:0.95}.

    Returns:
        {"map", "map_50", "map_75"} as floats (and `map_per_class`). Images
        with no predictions count as misses: no predictions at all give 0.

    Raises:
        DataError: the lists differ in length, a dict lacks a key, shapes
            disagree, a box is malformed (named as preds[i].boxes[k]), or
            there are no ground-truth boxes at all (AP is undefined).
    """
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    if not isinstance(preds, (list, tuple)) or not isinstance(targets, (list, tuple)):
        raise DataError("preds, targets: must be lists with one dict per image")
    if len(preds) != len(targets):
        raise DataError(f"preds: {len(preds)} images but targets has {len(targets)}; give one dict per image in both")
    torch_preds = [_detections(p, f"preds[{i}]", scored=True) for i, p in enumerate(preds)]
    torch_targets = [_detections(t, f"targets[{i}]", scored=False) for i, t in enumerate(targets)]
    if sum(len(t["labels"]) for t in torch_targets) == 0:
        raise DataError("targets: no ground-truth boxes in any image; average precision is undefined")
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools", class_metrics=per_class)
    metric.update(torch_preds, torch_targets)
    result = metric.compute()
    # -1 is pycocotools' "no ground truth at this IoU/area": with ground truth present it does not occur
    # for these three, and a miss is scored 0.
    out = {name: max(float(result[name]), 0.0) for name in ("map", "map_50", "map_75")}
    if per_class:
        classes = torch.atleast_1d(result["classes"]).tolist()
        values = torch.atleast_1d(result["map_per_class"]).tolist()
        # A class only predicted (never in the ground truth) has no AP: pycocotools gives -1.
        out["map_per_class"] = {int(c): float(v) for c, v in zip(classes, values) if v >= 0}
    return out


def _detections(item, where: str, *, scored: bool) -> dict:
    import torch

    if not isinstance(item, dict):
        raise DataError(f"{where}: must be a dict with boxes, labels{', scores' if scored else ''}")
    keys = ("boxes", "scores", "labels") if scored else ("boxes", "labels")
    missing = [k for k in keys if k not in item]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)}")
    boxes = check_boxes(item["boxes"], f"{where}.boxes")
    labels = np.asarray(item["labels"]).reshape(-1) if np.size(item["labels"]) else np.zeros(0, np.int64)
    if len(labels) != len(boxes):
        raise DataError(f"{where}.labels: {len(labels)} labels for {len(boxes)} boxes")
    whole = np.issubdtype(labels.dtype, np.integer) or (
        np.issubdtype(labels.dtype, np.floating) and np.isfinite(labels).all() and (labels == np.round(labels)).all())
    if not whole:
        raise DataError(f"{where}.labels: class labels must be whole numbers, got {labels.dtype}")
    if (labels < 0).any():
        raise DataError(f"{where}.labels[{int(np.argmax(labels < 0))}]: negative class label {labels[labels < 0][0]}")
    out = {"boxes": torch.from_numpy(boxes).float(), "labels": torch.from_numpy(labels.astype(np.int64))}
    if scored:
        scores = np.asarray(item["scores"], dtype=float).reshape(-1) if np.size(item["scores"]) else np.zeros(0)
        if len(scores) != len(boxes):
            raise DataError(f"{where}.scores: {len(scores)} scores for {len(boxes)} boxes")
        bad = ~np.isfinite(scores)
        if bad.any():
            raise DataError(f"{where}.scores[{int(np.argmax(bad))}]: NaN or infinite score")
        out["scores"] = torch.from_numpy(scores).float()
    return out


# ---- image classification ---------------------------------------------------------------------


@dataclass
class ClassificationResult:
    """Image classification scores: the gate-able scalars, per-class rows and the confusion matrix."""

    values: dict[str, float]  # CLASSIFICATION names; finite numbers only
    skipped: dict[str, str]  # metric -> why it was not computed
    per_class: list[dict]  # one row per class: class, precision, recall, f1, support (None where undefined)
    confusion: list[list[int]]  # rows: true class, columns: predicted


def classification_metrics(y_true, y_pred, proba=None, *, n_classes: int,
                           class_names: list[str] | None = None) -> ClassificationResult:
    """Accuracy, macro/weighted precision, recall and F1, ROC AUC, log loss, per-class scores and the confusion matrix.

    The averages follow sklearn's convention (and evaluate_model's): over the
    classes present in the labels or predictions. Per-class precision of a
    class never predicted, or recall of a class with no test images, is None:
    undefined, not 0.

    Args:
        y_true: int labels in [0, n_classes).
        y_pred: predicted int labels.
        proba: `[N, n_classes]` class probabilities (rows sum to 1), or None.
        n_classes: the number of classes the model knows.
        class_names: display names by label (default "0".."n-1").

    Returns:
        The `ClassificationResult`.

    Raises:
        DataError: lengths differ, a label is outside 0..n_classes-1, or proba is malformed (named with the row).
    """
    from sklearn import metrics as skm

    names = [str(c) for c in (class_names or range(n_classes))]
    if len(names) != n_classes:
        raise DataError(f"class_names: {len(names)} names for {n_classes} classes")
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or len(y_true) == 0:
        raise DataError(f"y_true: must be a non-empty 1-D array of labels, got shape {list(y_true.shape)}")
    if y_pred.shape != y_true.shape:
        raise DataError(f"y_pred: shape {list(y_pred.shape)} differs from y_true's {list(y_true.shape)}")
    _check_labels(y_true, "y_true", n_classes)
    _check_labels(y_pred, "y_pred", n_classes)
    y_true, y_pred = y_true.astype(int), y_pred.astype(int)

    values = {"accuracy": skm.accuracy_score(y_true, y_pred)}
    for average in ("macro", "weighted"):
        scores = skm.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
        values.update({f"{name}_{average}": score for name, score in zip(("precision", "recall", "f1"), scores)})
    skipped = {}
    labels = list(range(n_classes))
    if proba is None:
        skipped.update({n: "the model gives no probabilities" for n in ("roc_auc", "log_loss")})
    else:
        proba = _check_proba(proba, len(y_true), n_classes)
        missing = sorted(set(labels) - set(np.unique(y_true).tolist()))
        if missing:
            skipped["roc_auc"] = f"one-vs-rest needs every class in the labels; class index(es) {missing[:10]} have no images"
        elif n_classes == 2:  # sklearn's multi-class path wants 1-D scores for two classes
            values["roc_auc"] = skm.roc_auc_score(y_true, proba[:, 1])
        else:
            values["roc_auc"] = skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)
        values["log_loss"] = skm.log_loss(y_true, proba, labels=labels)
    finite = {}
    for name, value in values.items():
        if np.isfinite(value):
            finite[name] = float(value)
        else:
            skipped[name] = "undefined on this data"

    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=np.nan)
    per_class = [{"class": names[i], "precision": _or_none(precision[i]), "recall": _or_none(recall[i]),
                  "f1": _or_none(f1[i]), "support": int(support[i])} for i in labels]
    confusion = skm.confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist()
    return ClassificationResult(values=finite, skipped=skipped, per_class=per_class, confusion=confusion)


def _check_proba(proba, rows: int, n_classes: int) -> np.ndarray:
    proba = np.asarray(proba, dtype=float)
    if proba.shape != (rows, n_classes):
        raise DataError(f"proba: shape {list(proba.shape)}, expected [{rows}, {n_classes}] (one probability per class per image)")
    bad = ~np.isfinite(proba).all(axis=1)
    if bad.any():
        raise DataError(f"proba[{int(np.argmax(bad))}]: NaN or infinite probability")
    bad = (proba < 0).any(axis=1) | (np.abs(proba.sum(axis=1) - 1) > 1e-3)
    if bad.any():
        raise DataError(f"proba[{int(np.argmax(bad))}]: probabilities must be >= 0 and sum to 1 (apply softmax to logits)")
    # float32 softmax sums to 1 only to float32 precision, which log_loss flags.
    return proba / proba.sum(axis=1, keepdims=True)


def _or_none(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
