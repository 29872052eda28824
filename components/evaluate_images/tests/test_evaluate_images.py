"""evaluate_image_model: scoring through the serving export, the gate, the checks on the test set, the report, the component."""

import base64
import json
import re

import numpy as np
import pytest

from keel.components._common import lineage
from keel.components._common.config import EvaluationSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.image_data import ImageSet, write_npz
from keel.components._common.evaluation import vision_metrics as vm
from testkit.system_packages import skip_unless
from keel.components.evaluate_images.evaluate_images import (
    check_test_set, evaluate_image_files, evaluate_image_model, predict_logits)

NO_GATE = EvaluationSection()


# ---- scoring ----------------------------------------------------------------------------------


def test_batched_scoring_matches_the_torch_module_image_for_image(untrained_dir, mnist):
    import torch

    from keel.components._common.deep_model.artifact import load_torch_model

    test = mnist["test"].take(np.arange(50))
    result = evaluate_image_model(str(untrained_dir), test, NO_GATE, batch_size=7)  # 7 batches and a remainder of 1
    with torch.no_grad():
        direct = load_torch_model(untrained_dir)(torch.from_numpy(test.images).permute(0, 3, 1, 2).float()).numpy()
    assert result.fmt == "torchscript" and result.images == 50
    np.testing.assert_array_equal(result.y_pred, direct.argmax(1))
    np.testing.assert_allclose(result.proba.sum(axis=1), 1.0)
    assert set(result.metrics) == set(vm.CLASSIFICATION)
    assert result.metrics["accuracy"] == pytest.approx(float(np.mean(direct.argmax(1) == test.labels)))
    assert np.asarray(result.confusion).sum() == 50 and len(result.confusion) == 10
    assert [row["support"] for row in result.per_class] == np.bincount(test.labels, minlength=10).tolist()
    assert result.passed and result.failures == []  # no thresholds: the gate passes


def test_a_briefly_trained_model_scores_above_80_percent_and_passes_its_gate(trained_dir, mnist):
    section = EvaluationSection(min={"accuracy": 0.8, "f1_macro": 0.75})
    result = evaluate_image_model(str(trained_dir), mnist["test"], section)
    assert result.metrics["accuracy"] > 0.8, result.metrics
    assert result.passed, result.failures
    # the matrix agrees with the accuracy: its diagonal is the correct predictions
    assert np.trace(np.asarray(result.confusion)) == round(result.metrics["accuracy"] * 500)


def test_the_gate_fails_when_min_accuracy_is_above_what_the_model_achieves(trained_dir, mnist):
    achieved = evaluate_image_model(str(trained_dir), mnist["test"], NO_GATE).metrics["accuracy"]
    section = EvaluationSection(min={"accuracy": min(achieved + 0.01, 1.0)}, max={"log_loss": 10.0})
    result = evaluate_image_model(str(trained_dir), mnist["test"], section)
    assert result.passed is False
    assert len(result.failures) == 1 and result.failures[0].startswith(f"accuracy {achieved:.4g} < min ")


def test_the_serving_format_in_model_json_is_what_gets_scored(trained_dir, mnist, tmp_path):
    import shutil
    import warnings

    import torch

    from keel.components._common.deep_model.artifact import load_torch_model, read_info, write_info

    onnx_dir = tmp_path / "onnx"
    shutil.copytree(trained_dir, onnx_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(load_torch_model(onnx_dir), (torch.zeros(2, 1, 28, 28),), str(onnx_dir / "model.onnx"), dynamo=False,
                          input_names=["pixels"], output_names=["logits"], dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}})
    info = read_info(onnx_dir)
    info["files"]["onnx"], info["serving_format"] = "model.onnx", "onnx"
    write_info(onnx_dir, info)
    test = mnist["test"].take(np.arange(100))
    served = evaluate_image_model(str(onnx_dir), test, NO_GATE)
    traced = evaluate_image_model(str(onnx_dir), test, NO_GATE, fmt="torchscript")
    assert served.fmt == "onnx" and traced.fmt == "torchscript"
    np.testing.assert_array_equal(served.y_pred, traced.y_pred)
    np.testing.assert_allclose(served.proba, traced.proba, atol=1e-4)
    with pytest.raises(DataError, match=r"has no tflite export \(has onnx, torchscript, weights\)"):
        evaluate_image_model(str(onnx_dir), test, NO_GATE, fmt="tflite")


def test_a_threshold_on_an_unknown_metric_fails_before_the_model_loads(tmp_path, mnist):
    with pytest.raises(ConfigError, match=r"evaluation.min.map_50: not a metric for multiclass"):
        evaluate_image_model(str(tmp_path / "no-model-here"), mnist["test"], EvaluationSection(min={"map_50": 0.5}))


# ---- the test set must fit the model ----------------------------------------------------------


@pytest.mark.parametrize("shape, seen", [((32, 32, 1), "32x32x1"), ((28, 28, 3), "28x28x3")])
def test_test_images_of_another_shape_are_one_data_error(untrained_dir, tmp_path, shape, seen):
    images = np.zeros((4, *shape), np.uint8)
    path = tmp_path / "other.npz"
    write_npz(path, ImageSet(images, np.arange(4), [str(i) for i in range(10)]))
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: images are {seen} .* the model takes 28x28x1 \(model.json input\)"):
        evaluate_image_files(str(untrained_dir), str(path), NO_GATE, str(tmp_path / "report.html"))
    assert not (tmp_path / "report.html").exists()


def test_labels_and_class_names_must_be_the_models():
    images = np.zeros((5, 28, 28, 1), np.uint8)
    info = {"classes": ["a", "b"], "input": {"layout": "NCHW", "height": 28, "width": 28, "channels": 1}}
    with pytest.raises(DataError, match=r"t.npz: label 2 of image 3 is not one of the model's 2 classes"):
        check_test_set(ImageSet(images, np.array([0, 1, 1, 2, 0]), ["0", "1", "2"]), info, "t.npz")
    with pytest.raises(DataError, match=r"t.npz: class 0 is 'b' but the model's class 0 is 'a'"):
        check_test_set(ImageSet(images, np.array([0, 1, 1, 0, 0]), ["b", "a"]), info, "t.npz")
    # an .npz without class names ("0", "1", ...) is taken at its labels
    assert check_test_set(ImageSet(images, np.array([0, 1, 1, 0, 0]), ["0", "1"]), info, "t.npz") == "NCHW"


class _Stub:
    """A runtime returning fixed scores, to exercise what a broken export can do."""

    fmt, path = "onnx", "model.onnx"

    def __init__(self, scores):
        self.scores = scores

    def predict(self, pixels):
        return self.scores(len(pixels))


def test_an_export_that_returns_the_wrong_shape_or_nan_is_a_data_error():
    images = np.zeros((6, 28, 28, 1), np.uint8)
    with pytest.raises(DataError, match=r"model.onnx: the onnx model returned shape \[4, 3\] for 4 images; .* 10 classes"):
        predict_logits(_Stub(lambda n: np.zeros((n, 3))), images, "NCHW", 10, batch_size=4)

    def nan_in_image_five(n):
        out = np.zeros((n, 10))
        if n == 2:  # the second batch holds images 4 and 5
            out[1, 3] = np.nan
        return out

    with pytest.raises(DataError, match=r"test: the model gave NaN or infinite scores for image 5"):
        predict_logits(_Stub(nan_in_image_five), images, "NCHW", 10, batch_size=4)


def test_the_layout_reaches_the_model():
    seen = []
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)

    class Recorder(_Stub):
        def predict(self, pixels):
            seen.append(pixels)
            return np.zeros((len(pixels), 2))

    predict_logits(Recorder(None), images, "NCHW", 2)
    predict_logits(Recorder(None), images, "NHWC", 2)
    assert seen[0].shape == (2, 3, 4, 4) and seen[0].dtype == np.float32 and seen[0][1, 2, 3, 1] == images[1, 3, 1, 2]
    assert seen[1].shape == (2, 4, 4, 3)


# ---- the report -------------------------------------------------------------------------------


def _images(page: str) -> dict[str, bytes]:
    """alt text -> decoded PNG bytes of every inline image."""
    return {alt: base64.b64decode(data) for alt, data in re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', page)}


def test_report_holds_curves_confusion_matrix_recall_and_mistakes(untrained_dir, test_npz, tmp_path):
    from keel.components._common.deep_model.artifact import read_info

    out = tmp_path / "report.html"
    section = EvaluationSection(min={"accuracy": 0.99})
    result = evaluate_image_files(str(untrained_dir), str(test_npz), section, str(out))
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "http://" not in page and "https://" not in page
    images = _images(page)
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in images.values())
    assert {"Loss per epoch", "Accuracy per epoch", "Confusion matrix", "Recall per class"} <= set(images)
    # the grid: one captioned image per mistake, most confident first, true and predicted class named
    wrong = np.flatnonzero(result.y_pred != result.test.labels)
    assert f"{min(16, len(wrong))} of {len(wrong)} misclassified test images, most confident first" in page
    mistakes = [alt for alt in images if alt.startswith("#")]
    assert len(mistakes) == min(16, len(wrong))
    first = wrong[np.argmax(result.proba[wrong, result.y_pred[wrong]])]
    assert mistakes[0].startswith(f"#{first}: true {result.test.labels[first]}, predicted {result.y_pred[first]} (")
    assert all(int(alt[1:alt.index(":")]) in wrong for alt in mistakes)
    # the curves' numbers, from model.json's history, are in the epoch table under them
    for row in read_info(untrained_dir)["history"]:
        assert f"<td>{row['val_loss']:.4g}</td>" in page and f"<td>{row['val_accuracy']:.4g}</td>" in page
    for heading in ("Result", "Metrics", "Training curves", "Confusion matrix", "Per class", "Misclassified test images"):
        assert f"<h2>{heading}</h2>" in page
    assert 'class="fail">FAILED' in page and "accuracy" in page and "min 0.99" in page
    assert f"{result.images} test images, 10 classes" in page


def test_report_without_history_says_so(untrained_dir, mnist, tmp_path):
    import shutil

    from keel.components._common.deep_model.artifact import read_info, write_info

    bare = tmp_path / "bare"
    shutil.copytree(untrained_dir, bare)
    info = read_info(bare)
    info["history"] = []
    write_info(bare, info)
    test = tmp_path / "t.npz"
    write_npz(test, mnist["test"].take(np.arange(20)))
    evaluate_image_files(str(bare), str(test), NO_GATE, str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text()
    assert "no per-epoch history" in page and "Loss per epoch" not in page
    assert "Confusion matrix" in _images(page)


def test_report_renders_in_a_real_browser(untrained_dir, test_npz, tmp_path):
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        skip_unless("chromium")
    out = tmp_path / "report.html"
    evaluate_image_files(str(untrained_dir), str(test_npz), NO_GATE, str(out))
    probe = "<script>addEventListener('load',()=>{document.body.dataset.brokenImages=[...document.images].filter(i=>!i.naturalWidth).length})</script>"
    page = tmp_path / "page.html"
    page.write_text(out.read_text().replace("</body>", probe + "</body>"))
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "<h1>Image model evaluation: cnn (torchscript)</h1>" in result.stdout
    assert 'data-broken-images="0"' in result.stdout and result.stdout.count("<img") >= 5


# ---- the component ----------------------------------------------------------------------------


def test_component_logs_metrics_confusion_matrix_lineage_and_returns_the_gate(trained_dir, test_npz, tmp_path):
    from kfp import dsl

    from keel.components.evaluate_images.component import evaluate_image_model as component

    model = dsl.Model(uri=str(trained_dir), metadata={"content_hash": "sha256:model"})
    test = dsl.Dataset(uri=str(test_npz), metadata={"content_hash": "sha256:test"})

    def outputs(name):
        return {"metrics": dsl.Metrics(uri=str(tmp_path / name / "metrics")),
                "classification_metrics": dsl.ClassificationMetrics(uri=str(tmp_path / name / "cm")),
                "report": dsl.HTML(uri=str(tmp_path / name / "report"))}

    passing = outputs("pass")
    assert component.python_func(trained_model=model, test=test, evaluation={"min": {"accuracy": 0.8}}, **passing) is True
    metrics, cm, page = passing["metrics"], passing["classification_metrics"], passing["report"]
    assert metrics.metadata["accuracy"] > 0.8 and metrics.metadata["test_images"] == 500
    assert metrics.metadata["gate"] == {"passed": True, "failures": [], "min": {"accuracy": 0.8}, "max": {}}
    assert [p["content_hash"] for p in metrics.metadata["parents"]] == ["sha256:model", "sha256:test"]
    matrix = cm.metadata["confusionMatrix"]
    assert [s["displayName"] for s in matrix["annotationSpecs"]] == [str(d) for d in range(10)]
    assert sum(sum(r["row"]) for r in matrix["rows"]) == 500
    assert len(cm.metadata["per_class"]) == 10
    assert page.metadata["content_hash"] == lineage.file_sha256(page.path)
    assert json.loads(open(metrics.path).read())["accuracy"] == metrics.metadata["accuracy"]  # metadata-only artifact has a file

    failing = outputs("fail")
    assert component.python_func(trained_model=model, test=test, evaluation={"min": {"accuracy": 0.9999}}, **failing) is False
    assert failing["metrics"].metadata["gate"]["failures"][0].startswith("accuracy ")

    with pytest.raises(SystemExit) as exc:  # a bad config field is one line and exit 2
        component.python_func(trained_model=model, test=test, evaluation={"minimum": {}}, **outputs("bad"))
    assert exc.value.code == 2


def test_component_compiles_with_its_inputs_outputs_and_boolean_result(tmp_path):
    import yaml
    from kfp import compiler

    from keel.components._common.images import COMPONENT_IMAGES, TORCH_IMAGE
    from keel.components.evaluate_images import evaluate_image_model

    compiler.Compiler().compile(evaluate_image_model, str(tmp_path / "c.yaml"))
    document = yaml.safe_load((tmp_path / "c.yaml").read_text())
    spec = document["components"]["comp-evaluate-image-model"]
    assert set(spec["inputDefinitions"]["artifacts"]) == {"trained_model", "test"}
    assert set(spec["inputDefinitions"]["parameters"]) == {"evaluation"}
    outputs = spec["outputDefinitions"]
    assert {k: v["artifactType"]["schemaTitle"] for k, v in outputs["artifacts"].items()} == {
        "metrics": "system.Metrics", "classification_metrics": "system.ClassificationMetrics", "report": "system.HTML"}
    assert outputs["parameters"]["Output"]["parameterType"] == "BOOLEAN"
    assert COMPONENT_IMAGES["evaluate_image_model"] == TORCH_IMAGE  # scored with torch (TorchScript) and onnxruntime
