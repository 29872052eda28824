"""The trained image model artifact: a directory with `model.json` and one file per export format.

`model.json` is the contract every later step reads (evaluate, compress,
register, the predictor):

    framework      "torch" | "tensorflow"
    architecture   "cnn" | "resnet18" | ...
    params         model.params as trained
    classes        class names, index = label
    input          {"layout": "NCHW" | "NHWC", "height", "width", "channels",
                    "dtype": "float32", "range": [0, 255]}: pixels as decoded
                    from an image; every export normalises inside the model
    normalize      {"mean": [...], "std": [...]} (per channel, 0..1 scale)
    files          format -> file name in the directory: "weights" (torch
                   state_dict), "torchscript", "onnx", "tflite", "saved_model"
                   (a zip of the SavedModel directory)
    serving_format the format the predictor loads
    history        one dict per epoch: epoch, train_loss, val_loss,
                   val_accuracy, seconds, learning_rate
    training       how it ran: device, precision, processes, epochs_run,
                   best_epoch, stopped_early, resumed_from_epoch, images_per_second

Files are written flat (no sub-directories) so the model registry can hash
and publish each one.
"""

from __future__ import annotations

import json
from pathlib import Path

from keel.components._common.errors import DataError

MODEL_INFO = "model.json"
FILE_NAMES = {"weights": "weights.pt", "torchscript": "model.pt", "onnx": "model.onnx",
              "tflite": "model.tflite", "saved_model": "saved_model.zip",
              # compress_model's variants (components/compress): each loads like the format it is named after.
              "torchscript_int8": "model_int8.pt", "torchscript_pruned": "model_pruned.pt",
              "onnx_int8": "model_int8.onnx", "onnx_int8_static": "model_int8_static.onnx",
              "tflite_int8": "model_int8.tflite"}
SERVING_FORMATS = ("torchscript", "onnx", "tflite", "saved_model",
                   "torchscript_int8", "torchscript_pruned", "onnx_int8", "onnx_int8_static", "tflite_int8")


def trained_info(*, framework: str, layout: str, spec, train, mean, std, files: tuple[str, ...], serving_format: str,
                 history: list, training: dict) -> dict:
    """The model.json a trainer writes: what both frameworks share (0..255 float32 input of the training images' shape)."""
    height, width, channels = train.shape
    return {
        "framework": framework, "architecture": spec.architecture, "params": spec.params, "task": "multiclass",
        "classes": train.classes,
        "input": {"layout": layout, "height": height, "width": width, "channels": channels, "dtype": "float32", "range": [0, 255]},
        "normalize": {"mean": mean, "std": std},
        "files": {name: FILE_NAMES[name] for name in files},
        "serving_format": serving_format,
        "history": history,
        "training": training,
    }


def write_info(directory: str | Path, info: dict) -> None:
    from keel.components._common.storage import atomic_write_local

    atomic_write_local(Path(directory) / MODEL_INFO, json.dumps(info, indent=2, sort_keys=True).encode())


def read_info(directory: str | Path) -> dict:
    """model.json of a trained image model directory, checked for the keys every step relies on."""
    path = Path(directory) / MODEL_INFO
    try:
        info = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path}: not found; {directory} is not a trained image model (train_image_model writes it)") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    missing = [k for k in ("framework", "architecture", "classes", "input", "files", "serving_format") if k not in info]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)}")
    return info


def file_path(directory: str | Path, info: dict, fmt: str) -> Path:
    name = info["files"].get(fmt)
    if not name:
        raise DataError(f"{directory}: the model has no {fmt} export (has {', '.join(sorted(info['files']))})")
    return Path(directory) / name


def load_torch_model(directory: str | Path, info: dict | None = None):
    """The trained torch module (eval mode, CPU), rebuilt from model.json and weights.pt."""
    import torch

    from keel.components._common.deep_model.models import build_image_model

    info = info or read_info(directory)
    if info["framework"] != "torch":
        raise DataError(f"{directory}: a {info['framework']} model has no torch weights")
    shape = (info["input"]["height"], info["input"]["width"], info["input"]["channels"])
    model = build_image_model(info["architecture"], shape, len(info["classes"]), info.get("params", {}),
                              info["normalize"]["mean"], info["normalize"]["std"])
    state = torch.load(file_path(directory, info, "weights"), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
