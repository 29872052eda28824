"""Running an exported image model, whatever its format: one `predict` for evaluate, compress and the predictor.

A runtime takes float32 pixels in 0..255 in the model's layout (model.json
`input.layout`) and returns class scores (logits) as a numpy array. Each
format needs only its own library, so the serving image can run ONNX
without torch or TensorFlow.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from keel.components._common.errors import DataError
from keel.components._common.deep_model.artifact import SERVING_FORMATS, file_path, read_info


class Runtime:
    """Scores batches of pixels with one exported model file."""

    fmt = ""

    def __init__(self, path: Path, info: dict):
        self.path, self.info = path, info

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TorchScriptRuntime(Runtime):
    fmt = "torchscript"

    def __init__(self, path, info):
        super().__init__(path, info)
        import torch

        self._torch = torch
        self.model = torch.jit.load(str(path), map_location="cpu").eval()

    def predict(self, pixels):
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))).float().numpy()


class OnnxRuntime(Runtime):
    fmt = "onnx"

    def __init__(self, path, info, threads: int | None = None):
        super().__init__(path, info)
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, pixels):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(pixels, dtype=np.float32)})[0]


class TFLiteRuntime(Runtime):
    fmt = "tflite"

    def __init__(self, path, info):
        super().__init__(path, info)
        from keel.components._common.tf_import import tensorflow

        tf = tensorflow()

        self.interpreter = tf.lite.Interpreter(model_path=str(path))
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]

    def predict(self, pixels):
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        self.interpreter.resize_tensor_input(self._input["index"], list(pixels.shape))
        self.interpreter.allocate_tensors()
        self.interpreter.set_tensor(self._input["index"], pixels)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"])


class SavedModelRuntime(Runtime):
    fmt = "saved_model"

    def __init__(self, path, info):
        super().__init__(path, info)
        from keel.components._common.tf_import import tensorflow

        tf = tensorflow()

        # A SavedModel is a directory; the bundle keeps it as one zip so the registry can hash it.
        self._dir = tempfile.TemporaryDirectory(prefix="keel-savedmodel-")
        with zipfile.ZipFile(io.BytesIO(Path(path).read_bytes())) as archive:
            archive.extractall(self._dir.name)
        self.model = tf.saved_model.load(self._dir.name)
        self._serve = self.model.signatures["serving_default"]
        self._tf = tf

    def predict(self, pixels):
        out = self._serve(self._tf.constant(np.ascontiguousarray(pixels, dtype=np.float32)))
        return next(iter(out.values())).numpy()


RUNTIMES = {cls.fmt: cls for cls in (TorchScriptRuntime, OnnxRuntime, TFLiteRuntime, SavedModelRuntime)}
# compress_model's variants are plain files of their base format.
RUNTIMES.update({"torchscript_int8": TorchScriptRuntime, "torchscript_pruned": TorchScriptRuntime,
                 "onnx_int8": OnnxRuntime, "onnx_int8_static": OnnxRuntime, "tflite_int8": TFLiteRuntime})


def load_runtime(directory: str | Path, fmt: str | None = None, info: dict | None = None, threads: int | None = None) -> Runtime:
    """The runtime for `fmt` (default: model.json's serving_format) of the model in `directory`.

    `threads` caps an ONNX session's intra-op pool (default: one thread per
    core, which oversubscribes a pod's CPU limit or several server workers).

    Raises:
        DataError: the directory has no such export, or the file does not load.
    """
    info = info or read_info(directory)
    fmt = fmt or info["serving_format"]
    if fmt not in SERVING_FORMATS:
        raise DataError(f"{directory}: unknown model format {fmt!r}; use one of {', '.join(SERVING_FORMATS)}")
    path = file_path(directory, info, fmt)
    runtime = RUNTIMES[fmt]
    options = {"threads": threads} if threads and issubclass(runtime, OnnxRuntime) else {}
    try:
        return runtime(path, info, **options)
    except ImportError as err:
        raise DataError(f"{path}: serving {fmt} needs {err.name}, which this image does not have") from None
    except Exception as err:  # noqa: BLE001 (onnxruntime's and TensorFlow's load errors share no base class but Exception)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"{path}: cannot load the {fmt} model ({first})") from None


def to_layout(images: np.ndarray, layout: str) -> np.ndarray:
    """uint8 `[N, H, W, C]` images as float32 pixels in the model's layout."""
    pixels = images.astype(np.float32)
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)) if layout == "NCHW" else pixels
