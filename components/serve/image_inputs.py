"""Image requests: decoding V1/V2 bodies into one pixel batch, and checking every image.

Every accepted request becomes one float32 array `[N, H, W, C]` of pixels in
0..255, the form model.json's input contract describes (the runtime moves it
to the model's layout). Each problem is one line naming the image
(`instances[2]` or `inputs[images][2]`) and raises kserve's InvalidInput,
which the server answers with HTTP 400.

Accepted images:
  - V1 `{"instances": [...]}`, each a nested array of pixels (`[H][W]` or
    `[H][W][C]`, numbers 0..255) or `{"b64": "<base64 PNG or JPEG>"}`;
  - V2, one input: BYTES (each element a base64 PNG/JPEG, or its raw bytes),
    or a numeric tensor (UINT8, FP32, INT64, ...) of shape `[N, H, W]` or
    `[N, H, W, C]`.

Colour modes are never converted: a PNG must already have the model's
channels (mode L for one channel, RGB for three). Pillow's convert("L")
would weight R, G and B into a luminance the model never saw in training
(and drop alpha against an unknown background), so a silently converted
image could be classified confidently and wrongly. The client knows what
its image means; the error tells it which mode to send.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve.errors import InvalidInput

from keel.components.serve.inputs import v1_instances

# Pillow modes that hold exactly the pixels a model with that many channels takes.
MODES = {1: "L", 3: "RGB"}
FORMATS = ("PNG", "JPEG")
_DATA_URL = re.compile(r"^data:image/[a-z+.-]+;base64,", re.IGNORECASE)
_NUMERIC_V2 = {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
_INTEGER_V2 = {t for t in _NUMERIC_V2 if "INT" in t}


@dataclass(frozen=True)
class ImageSpec:
    """What the model takes: one image's height, width and channels (from model.json's `input`)."""

    height: int
    width: int
    channels: int
    max_images: int = 1000

    @classmethod
    def from_info(cls, model_input: dict, max_images: int) -> "ImageSpec":
        return cls(int(model_input["height"]), int(model_input["width"]), int(model_input["channels"]), max_images)

    @property
    def size(self) -> str:
        return f"{self.height}x{self.width}"


# -- V1 ---------------------------------------------------------------------------------------------

def from_v1(payload: Any, spec: ImageSpec) -> np.ndarray:
    """V1 `{"instances": [...]}` -> float32 pixels `[N, H, W, C]`, every image checked."""
    instances = v1_instances(payload, "[image, ...]", "a non-empty list of images (pixel arrays or {\"b64\": \"<base64 PNG>\"})")
    _check_count(len(instances), "instances", spec)
    images = np.empty((len(instances), spec.height, spec.width, spec.channels), dtype=np.float32)
    for i, instance in enumerate(instances):
        where = f"instances[{i}]"
        if isinstance(instance, dict):
            if set(instance) != {"b64"}:
                raise InvalidInput(f"{where}: an encoded image is {{\"b64\": \"<base64 PNG or JPEG>\"}}, got keys {sorted(instance)}")
            images[i] = decode_image(_base64(instance["b64"], where), spec, where)
        elif isinstance(instance, list):
            images[i] = _pixels(instance, spec, where)
        else:
            raise InvalidInput(f"{where}: expected a pixel array or {{\"b64\": ...}}, got {type(instance).__name__}")
    return images


def _pixels(instance: list, spec: ImageSpec, where: str) -> np.ndarray:
    try:
        array = np.asarray(instance)
    except ValueError:  # ragged rows
        raise InvalidInput(f"{where}: pixel rows differ in length; send a rectangular [H][W] or [H][W][C] array") from None
    if array.dtype.kind not in "iuf":
        raise InvalidInput(f"{where}: pixels must be numbers 0..255, got {_kind(array)}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise InvalidInput(f"{where}: pixels must be [H][W] or [H][W][C], got {array.ndim} dimension(s) {list(array.shape)}")
    check_pixels(array, spec, where)
    return array


def _kind(array: np.ndarray) -> str:
    return {"b": "true/false", "U": "strings", "O": "nulls or mixed values"}.get(array.dtype.kind, str(array.dtype))


# -- V2 ---------------------------------------------------------------------------------------------

def from_v2(request, spec: ImageSpec) -> np.ndarray:
    """A V2 InferRequest with one input (BYTES images or a numeric pixel tensor) -> float32 `[N, H, W, C]`."""
    inputs = request.inputs
    if len(inputs) != 1:
        raise InvalidInput(f"inputs: the model takes one image input, got {len(inputs)}")
    tensor = inputs[0]
    name, datatype, shape, data = tensor.name, tensor.datatype, list(tensor.shape or []), tensor.data
    where = f"inputs[{name}]"
    if hasattr(data, "tolist"):
        data = data.tolist()
    if not isinstance(data, list):
        raise InvalidInput(f"{where}: data must be a list")
    if datatype == "BYTES":
        return _v2_bytes(data, shape, spec, where)
    if datatype not in _NUMERIC_V2:
        raise InvalidInput(f"{where}: datatype {datatype} is not an image; use BYTES (encoded PNG/JPEG) or UINT8 pixels")
    return _v2_pixels(data, datatype, shape, spec, where)


def _v2_bytes(data: list, shape: list, spec: ImageSpec, where: str) -> np.ndarray:
    if len(shape) == 2 and shape[1] == 1:
        data = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in data]
    elif len(shape) != 1:
        raise InvalidInput(f"{where}: shape {shape} is not supported for BYTES; send shape [N], one encoded image each")
    if shape[0] != len(data):
        raise InvalidInput(f"{where}: shape says {shape[0]} images but data has {len(data)}")
    if not data:
        raise InvalidInput(f"{where}: no images")
    _check_count(len(data), where, spec)
    images = np.empty((len(data), spec.height, spec.width, spec.channels), dtype=np.float32)
    for i, value in enumerate(data):
        at = f"{where}[{i}]"
        if isinstance(value, (bytes, bytearray)):
            # Raw bytes arrive from gRPC or in-process callers; text is base64 (JSON has no bytes).
            raw = bytes(value) if _looks_encoded(value) else _base64(bytes(value).decode("ascii", "replace"), at)
        elif isinstance(value, str):
            raw = _base64(value, at)
        else:
            raise InvalidInput(f"{at}: expected a base64 PNG or JPEG string, got {type(value).__name__}")
        images[i] = decode_image(raw, spec, at)
    return images


def _v2_pixels(data: list, datatype: str, shape: list, spec: ImageSpec, where: str) -> np.ndarray:
    if len(shape) not in (3, 4) or any(not isinstance(d, int) or d < 0 for d in shape):
        raise InvalidInput(f"{where}: shape {shape} is not supported; send [N, H, W] or [N, H, W, C] pixels")
    try:
        array = np.asarray(data)
    except ValueError:
        raise InvalidInput(f"{where}: data is ragged; send {int(np.prod(shape))} numbers (flat or nested as the shape)") from None
    if array.size != int(np.prod(shape)):
        raise InvalidInput(f"{where}: shape {shape} needs {int(np.prod(shape))} values but data has {array.size}")
    if array.size and array.dtype.kind not in "iuf":
        raise InvalidInput(f"{where}: pixels must be numbers 0..255, got {_kind(array)}")
    array = array.reshape(shape)
    if len(shape) == 3:
        array = array[..., None]
    if len(array) == 0:
        raise InvalidInput(f"{where}: no images")
    _check_count(len(array), where, spec)
    for i in range(len(array)):
        at = f"{where}[{i}]"
        if datatype in _INTEGER_V2 and array.dtype.kind == "f":
            image = array[i]
            finite = image[np.isfinite(image)]
            if not np.array_equal(finite, np.round(finite)):
                raise InvalidInput(f"{at}: datatype {datatype} takes whole numbers; send FP32 for fractional pixels")
        check_pixels(array[i], spec, at)
    return array.astype(np.float32)


# -- shared checks ----------------------------------------------------------------------------------

def _check_count(count: int, where: str, spec: ImageSpec) -> None:
    if count > spec.max_images:
        raise InvalidInput(f"{where}: {count} images is over the limit of {spec.max_images} per request (KEEL_SERVE_MAX_ROWS)")


def check_pixels(image: np.ndarray, spec: ImageSpec, where: str) -> None:
    """Raises InvalidInput when one `[H, W, C]` image does not fit the model or holds bad values."""
    height, width, channels = image.shape
    if (height, width) != (spec.height, spec.width):
        raise InvalidInput(f"{where}: image is {height}x{width} (height x width), the model takes {spec.size}")
    if channels != spec.channels:
        raise InvalidInput(f"{where}: image has {channels} channel(s), the model takes {spec.channels}")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise InvalidInput(f"{where}: holds NaN or infinite pixels; send numbers 0..255")
    low, high = image.min(), image.max()
    if low < 0 or high > 255:
        bad = low if low < 0 else high
        raise InvalidInput(f"{where}: pixel value {bad.item():g} is outside 0..255")


def _base64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput(f"{where}: b64 must be a base64 string, got {type(text).__name__}")
    text = _DATA_URL.sub("", text.strip(), count=1)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: is not valid base64 (standard alphabet, with padding)") from None
    if not raw:
        raise InvalidInput(f"{where}: the image is empty")
    return raw


def _looks_encoded(raw: bytes) -> bool:
    return raw.startswith(b"\x89PNG\r\n\x1a\n") or raw.startswith(b"\xff\xd8\xff")


def decode_image(raw: bytes, spec: ImageSpec, where: str) -> np.ndarray:
    """PNG or JPEG bytes -> uint8 `[H, W, C]`, refused unless size and colour mode fit the model.

    The size is checked from the header, before the pixels are decompressed, so a
    small body cannot expand into a huge image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(raw), formats=FORMATS)
    except UnidentifiedImageError:
        raise InvalidInput(f"{where}: is not a PNG or JPEG image") from None
    width, height = image.size
    if (height, width) != (spec.height, spec.width):
        raise InvalidInput(f"{where}: image is {height}x{width} (height x width), the model takes {spec.size}")
    wanted = MODES.get(spec.channels)
    if image.mode != wanted:
        raise InvalidInput(
            f"{where}: {image.format} has colour mode {image.mode}, the model takes {spec.channels}-channel {wanted} images; "
            f"convert it before sending (Pillow: image.convert({wanted!r}))"
        )
    try:
        image.load()  # decodes now: a damaged stream fails here, not inside numpy
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise InvalidInput(f"{where}: the {image.format} image is damaged and cannot be decoded ({err})") from None
    return np.asarray(image).reshape(spec.height, spec.width, spec.channels)
