"""Vision metrics on cases small enough to work out by hand: box IoU, mask IoU, COCO mAP, image classification."""

import math

import numpy as np
import pytest

from keel.components._common.errors import DataError
from keel.components._common.evaluation import vision_metrics as vm

# ---- box IoU ----------------------------------------------------------------------------------


def test_box_iou_matches_hand_computed_overlaps():
    boxes1 = [[0, 0, 2, 2], [0, 0, 4, 4]]
    boxes2 = [[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6], [2, 0, 6, 4]]
    iou = vm.box_iou(boxes1, boxes2)
    assert iou.shape == (2, 4)
    # 2x2 squares offset by (1, 1): intersection 1, union 4 + 4 - 1 = 7.
    assert iou[0, 0] == pytest.approx(1 / 7)
    assert iou[0, 1] == 1.0  # identical
    assert iou[0, 2] == 0.0 and iou[1, 2] == 0.0  # disjoint
    # 4x4 squares sharing half their width: intersection 8, union 16 + 16 - 8 = 24.
    assert iou[1, 3] == pytest.approx(1 / 3)
    # the 2x2 box lies inside the 4x4 one: 4 / 16.
    assert iou[1, 1] == pytest.approx(0.25)


def test_box_iou_of_degenerate_boxes_is_zero_not_nan():
    iou = vm.box_iou([[1, 1, 1, 1]], [[1, 1, 1, 1]])
    assert iou.tolist() == [[0.0]]
    assert vm.box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)


@pytest.mark.parametrize("boxes1, boxes2, message", [
    ([[0, 0, 1, 1], [3, 0, 2, 1]], [[0, 0, 1, 1]], r"boxes1\[1\]: x2 2 < x1 3"),
    ([[0, 0, 1, 1]], [[0, 5, 1, 4]], r"boxes2\[0\]: y2 4 < y1 5"),
    ([[0, 0, 1, 1]], [[0, 0, 1, 1], [0, float("nan"), 1, 1]], r"boxes2\[1\]: NaN"),
    ([[0, 0, 1]], [[0, 0, 1, 1]], r"boxes1: boxes must be \[K, 4\].*\[1, 3\]"),
])
def test_malformed_boxes_name_the_argument_and_index(boxes1, boxes2, message):
    with pytest.raises(DataError, match=message):
        vm.box_iou(boxes1, boxes2)


# ---- mask IoU ---------------------------------------------------------------------------------

TARGET = np.array([[0, 0, 1], [1, 2, 2]])
PRED = np.array([[0, 1, 1], [1, 2, 0]])


def test_mask_iou_matches_hand_computation():
    result = vm.mask_iou(TARGET, PRED, num_classes=3)
    # class 0: target {(0,0),(0,1)}, pred {(0,0),(1,2)}: 1 shared of 3 pixels.
    # class 1: target {(0,2),(1,0)}, pred {(0,1),(0,2),(1,0)}: 2 of 3.
    # class 2: target {(1,1),(1,2)}, pred {(1,1)}: 1 of 2.
    assert result.per_class == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert result.mean_iou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_mask_iou_agrees_with_torchmetrics_jaccard():
    import torch
    from torchmetrics.classification import MulticlassJaccardIndex

    rng = np.random.default_rng(0)
    target, pred = rng.integers(0, 4, (3, 16, 16)), rng.integers(0, 4, (3, 16, 16))
    ours = vm.mask_iou(target, pred, num_classes=4)
    theirs = MulticlassJaccardIndex(num_classes=4, average="none")(torch.from_numpy(pred), torch.from_numpy(target))
    assert ours.per_class == pytest.approx(theirs.tolist())


def test_a_class_in_neither_map_is_undefined_and_left_out_of_the_mean():
    result = vm.mask_iou(TARGET, PRED, num_classes=4)
    assert result.per_class[3] is None
    assert result.mean_iou == pytest.approx(0.5)


def test_ignored_pixels_are_not_scored():
    target = TARGET.copy()
    target[0, 0] = 255
    result = vm.mask_iou(target, PRED, num_classes=3, ignore_index=255)
    # class 0 now: target {(0,1)}, pred {(1,2)} (pixel (0,0) is ignored): no overlap.
    assert result.per_class[0] == 0.0
    assert result.per_class[1] == pytest.approx(2 / 3)


def test_mask_errors_name_the_argument_and_position():
    with pytest.raises(DataError, match=r"pred: shape \[2, 2\] differs from target's \[2, 3\]"):
        vm.mask_iou(TARGET, PRED[:, :2], num_classes=3)
    bad = PRED.copy()
    bad[1, 2] = 7
    with pytest.raises(DataError, match=r"pred\[1, 2\]: 7 is not a class index 0..2"):
        vm.mask_iou(TARGET, bad, num_classes=3)
    with pytest.raises(DataError, match=r"target\[0, 0\]: 255 is not a class index"):
        vm.mask_iou(np.where(TARGET == 0, 255, TARGET), PRED, num_classes=3)  # 255 is only skipped when ignore_index says so


# ---- detection mAP ----------------------------------------------------------------------------

GT = {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [1, 1]}


def _pred(boxes, scores, labels=None):
    return {"boxes": boxes, "scores": scores, "labels": labels if labels is not None else [1] * len(scores)}


def test_perfect_detections_score_one():
    result = vm.mean_average_precision([_pred(GT["boxes"], [0.9, 0.8])], [GT])
    assert result == {"map": 1.0, "map_50": 1.0, "map_75": 1.0}


def test_a_false_positive_ranked_above_a_true_positive_halves_ap():
    target = {"boxes": [[0, 0, 10, 10]], "labels": [1]}
    preds = _pred([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.8])
    # Ranked: FP (precision 0/1, recall 0), then TP (precision 1/2, recall 1).
    # COCO interpolates precision at recall 0, 0.01, ..., 1 as the best precision at that recall or
    # beyond: 0.5 at all 101 points, so AP = 0.5 at every IoU threshold.
    assert vm.mean_average_precision([preds], [target]) == pytest.approx({"map": 0.5, "map_50": 0.5, "map_75": 0.5})


def test_a_false_positive_between_two_true_positives_uses_101_point_interpolation():
    preds = _pred([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7])
    # Ranked: TP (P 1, R 0.5), FP (P 1/2, R 0.5), TP (P 2/3, R 1).
    # Interpolated precision: 1 at recall 0.00..0.50 (51 points), 2/3 at 0.51..1.00 (50 points).
    expected = (51 * 1 + 50 * 2 / 3) / 101  # 0.83498...
    result = vm.mean_average_precision([preds], [GT])
    assert result["map_50"] == pytest.approx(expected, abs=1e-6)
    assert result["map"] == pytest.approx(expected, abs=1e-6)


def test_map_averages_iou_thresholds():
    target = {"boxes": [[0, 0, 10, 10]], "labels": [0]}
    # IoU 72/100 = 0.72: a hit at thresholds 0.50, 0.55, 0.60, 0.65, 0.70 (5 of 10), a miss at 0.75 and up.
    result = vm.mean_average_precision([_pred([[0, 0, 10, 7.2]], [0.9], [0])], [target])
    assert result == pytest.approx({"map": 0.5, "map_50": 1.0, "map_75": 0.0})


def test_map_averages_over_classes_and_reports_per_class():
    targets = [{"boxes": [[0, 0, 10, 10]], "labels": [0]}, {"boxes": [[0, 0, 10, 10]], "labels": [1]}]
    preds = [_pred([[0, 0, 10, 10]], [0.9], [0]), _pred([[40, 40, 50, 50]], [0.9], [1])]  # class 1 missed
    result = vm.mean_average_precision(preds, targets, per_class=True)
    assert result["map"] == pytest.approx(0.5)
    assert result["map_per_class"] == pytest.approx({0: 1.0, 1: 0.0})


def test_no_predictions_score_zero():
    empty = {"boxes": np.zeros((0, 4)), "scores": [], "labels": []}
    assert vm.mean_average_precision([empty], [GT]) == {"map": 0.0, "map_50": 0.0, "map_75": 0.0}


@pytest.mark.parametrize("preds, targets, message", [
    ([_pred([[0, 0, 10, 10], [9, 0, 5, 5]], [0.9, 0.8])], [GT], r"preds\[0\].boxes\[1\]: x2 5 < x1 9"),
    ([_pred([[0, 0, 10, 10]], [float("nan")])], [GT], r"preds\[0\].scores\[0\]: NaN"),
    ([_pred([[0, 0, 10, 10]], [0.9])], [{"boxes": [[0, 0, float("nan"), 1]], "labels": [1]}], r"targets\[0\].boxes\[0\]: NaN"),
    ([_pred([[0, 0, 10, 10]], [0.9, 0.8], [1])], [GT], r"preds\[0\].scores: 2 scores for 1 boxes"),
    ([_pred([[0, 0, 10, 10]], [0.9])], [{"boxes": [[0, 0, 1, 1]]}], r"targets\[0\]: missing labels"),
    ([_pred([[0, 0, 10, 10]], [0.9])], [GT, GT], r"preds: 1 images but targets has 2"),
    ([_pred([[0, 0, 10, 10]], [0.9])], [{"boxes": np.zeros((0, 4)), "labels": []}], r"targets: no ground-truth boxes"),
])
def test_detection_errors_name_the_argument_and_index(preds, targets, message):
    with pytest.raises(DataError, match=message):
        vm.mean_average_precision(preds, targets)


# ---- image classification ---------------------------------------------------------------------


def test_classification_metrics_match_hand_computation():
    y, pred = [0, 1, 2, 2], [0, 2, 2, 1]
    proba = np.eye(3)[pred] * 0.7 + 0.1  # 0.8 on the predicted class, 0.1 elsewhere
    result = vm.classification_metrics(y, pred, proba, n_classes=3, class_names=["a", "b", "c"])
    assert result.skipped == {}
    assert set(result.values) == set(vm.CLASSIFICATION)
    assert result.values["accuracy"] == 0.5
    # per class: a P 1/1 R 1/1; b P 0/1 R 0/1; c P 1/2 R 1/2.
    assert result.values["precision_macro"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert result.values["recall_weighted"] == pytest.approx((1 * 1 + 0 * 1 + 0.5 * 2) / 4)
    assert result.values["log_loss"] == pytest.approx(-(2 * math.log(0.8) + 2 * math.log(0.1)) / 4)
    assert [(r["class"], r["precision"], r["recall"], r["support"]) for r in result.per_class] == [
        ("a", 1.0, 1.0, 1), ("b", 0.0, 0.0, 1), ("c", 0.5, 0.5, 2)]
    assert result.confusion == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]


def test_undefined_per_class_scores_are_none_not_zero():
    result = vm.classification_metrics([0, 1, 1], [0, 0, 0], None, n_classes=3)
    assert result.per_class[1]["precision"] is None  # class 1 never predicted
    assert result.per_class[1]["recall"] == 0.0
    assert result.per_class[2]["recall"] is None and result.per_class[2]["support"] == 0  # no images of class 2
    assert set(result.skipped) == {"roc_auc", "log_loss"}
    assert result.confusion[2] == [0, 0, 0]


def test_two_class_roc_auc_uses_the_positive_column():
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.1, 0.9]])
    result = vm.classification_metrics([0, 0, 1, 1], proba.argmax(1), proba, n_classes=2)
    assert result.values["roc_auc"] == pytest.approx(0.75)  # 3 of 4 (positive, negative) pairs ranked right


def test_roc_auc_is_skipped_with_a_reason_when_a_class_has_no_images():
    result = vm.classification_metrics([0, 1, 1], [0, 1, 0], np.full((3, 3), 1 / 3), n_classes=3)
    assert "roc_auc" not in result.values and "[2]" in result.skipped["roc_auc"]


@pytest.mark.parametrize("y, pred, proba, message", [
    ([0, 1, 2], [0, 1], None, r"y_pred: shape \[2\] differs from y_true's \[3\]"),
    ([0, 1, 2], [0, 5, 1], None, r"y_pred\[1\]: 5 is not a class index 0..2"),
    ([0, 1, -1], [0, 1, 1], None, r"y_true\[2\]: -1 is not a class index"),
    ([0, 1, 2], [0, 1, 2], np.full((3, 2), 0.5), r"proba: shape \[3, 2\], expected \[3, 3\]"),
    ([0, 1, 2], [0, 1, 2], np.array([[1, 0, 0], [np.nan, 0, 1], [0, 0, 1]]), r"proba\[1\]: NaN"),
    ([0, 1, 2], [0, 1, 2], np.array([[1, 0, 0], [0, 1, 0], [0, 3, 1]]), r"proba\[2\]: .*sum to 1"),
])
def test_classification_errors_name_the_argument_and_row(y, pred, proba, message):
    with pytest.raises(DataError, match=message):
        vm.classification_metrics(y, pred, proba, n_classes=3)
