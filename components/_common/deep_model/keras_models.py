"""Keras 3 (TensorFlow backend) model builders: the same architectures as models.py, for framework tensorflow.

Image models take float32 pixels in 0..255, `[N, H, W, C]` (channels last,
TensorFlow's native layout), and normalise inside the model, so the exported
SavedModel has the same input contract as the torch exports: decoded pixels,
nothing else.

The CNN mirrors `models.SmallCNN` layer for layer; batch norm uses PyTorch's
momentum (0.1, which is Keras' 0.9) and epsilon so the two frameworks train
alike from the same config.
"""

from __future__ import annotations

from keel.components._common.errors import ConfigError

IMAGE_ARCHITECTURES = ("cnn",)
CNN_PARAMS = {"width_mult": 1, "dropout": 0.25, "batch_norm": True}
MLP_PARAMS = {"hidden": (128, 64), "dropout": 0.1}


def check_image_params(architecture: str, shape: tuple[int, int, int], params: dict) -> dict:
    """The CNN's parameters with defaults filled in, checked before TensorFlow is imported.

    Raises:
        ConfigError: an architecture TensorFlow does not have here, an unknown
            parameter, or an image size the two poolings cannot halve twice.
    """
    if architecture not in IMAGE_ARCHITECTURES:
        raise ConfigError(f"model.architecture: {architecture!r} is not available with model.framework tensorflow; "
                          f"use {', '.join(IMAGE_ARCHITECTURES)} (or framework torch)")
    _check_params(params, set(CNN_PARAMS))
    height, width, _ = shape
    if height % 4 or width % 4:
        raise ConfigError(f"model.architecture: cnn pools twice by 2 and needs height and width divisible by 4, got {height}x{width}")
    full = {**CNN_PARAMS, **params}
    if int(full["width_mult"]) < 1 or float(full["width_mult"]) != int(full["width_mult"]):
        raise ConfigError(f"model.params.width_mult: must be a whole number >= 1 (got {full['width_mult']})")
    if not 0 <= float(full["dropout"]) < 1:
        raise ConfigError(f"model.params.dropout: must be in [0, 1) (got {full['dropout']})")
    return {"width_mult": int(full["width_mult"]), "dropout": float(full["dropout"]), "batch_norm": bool(full["batch_norm"])}


def build_keras_image_model(architecture: str, shape: tuple[int, int, int], n_outputs: int, params: dict,
                            mean: list[float], std: list[float], dtype_policy: str = "float32"):
    """A Keras image classifier for `shape` = (height, width, channels) that takes 0..255 pixels NHWC.

    Args:
        architecture: "cnn".
        shape: one image's (height, width, channels).
        n_outputs: number of classes; the model returns logits.
        params: model.params (width_mult, dropout, batch_norm).
        mean: per-channel mean on the 0..1 scale (as model.json `normalize`).
        std: per-channel standard deviation on the 0..1 scale.
        dtype_policy: "float32", "mixed_bfloat16" or "mixed_float16". Normalisation
            and the logits stay float32 under mixed precision (bf16 cannot hold
            pixel / 255 finely enough, and a float16 softmax overflows).

    Raises:
        ConfigError: see `check_image_params`.
    """
    from keel.components._common.tf_import import keras as _keras

    keras = _keras()

    p = check_image_params(architecture, shape, params)
    height, width, channels = shape
    policy = keras.DTypePolicy(dtype_policy)
    c1, c2 = 32 * p["width_mult"], 64 * p["width_mult"]

    inputs = keras.Input((height, width, channels), dtype="float32", name="pixels")
    x = keras.layers.Normalization(mean=[255.0 * m for m in mean], variance=[(255.0 * s) ** 2 for s in std],
                                   dtype="float32", name="normalize")(inputs)
    for block, filters in enumerate((c1, c2), start=1):
        for conv in (1, 2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=not p["batch_norm"], dtype=policy,
                                    name=f"block{block}_conv{conv}")(x)
            if p["batch_norm"]:
                x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=policy,
                                                    name=f"block{block}_bn{conv}")(x)
            x = keras.layers.ReLU(dtype=policy)(x)
        x = keras.layers.MaxPooling2D(2, dtype=policy, name=f"block{block}_pool")(x)
    x = keras.layers.Flatten(dtype=policy)(x)
    x = keras.layers.Dropout(p["dropout"], dtype=policy)(x)
    x = keras.layers.Dense(128, activation="relu", dtype=policy, name="hidden")(x)
    x = keras.layers.Dropout(p["dropout"], dtype=policy)(x)
    logits = keras.layers.Dense(n_outputs, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=f"keel_{architecture}")


def check_mlp_params(params: dict) -> dict:
    """MLP parameters (hidden, dropout) with defaults filled in.

    Raises:
        ConfigError: an unknown parameter or a bad value, named as model.params.<name>.
    """
    _check_params(params, set(MLP_PARAMS))
    full = {**MLP_PARAMS, **params}
    hidden = full["hidden"]
    if isinstance(hidden, (int, float)):
        hidden = [hidden]
    try:
        hidden = [int(h) for h in hidden]
    except (TypeError, ValueError):
        raise ConfigError(f"model.params.hidden: must be a list of layer widths (got {full['hidden']!r})") from None
    if not hidden or min(hidden) < 1:
        raise ConfigError(f"model.params.hidden: needs at least one layer of width >= 1 (got {full['hidden']!r})")
    if not 0 <= float(full["dropout"]) < 1:
        raise ConfigError(f"model.params.dropout: must be in [0, 1) (got {full['dropout']})")
    return {"hidden": hidden, "dropout": float(full["dropout"])}


def build_keras_mlp(n_features: int, n_outputs: int, params: dict):
    """Fully connected layers with ReLU and dropout over engineered tabular features; outputs logits
    (or the regression value when n_outputs is 1 and the caller trains on squared error).

    Raises:
        ConfigError: see `check_mlp_params`.
    """
    from keel.components._common.tf_import import keras as _keras

    keras = _keras()

    p = check_mlp_params(params)
    inputs = keras.Input((n_features,), dtype="float32", name="features")
    x = inputs
    for i, size in enumerate(p["hidden"], start=1):
        x = keras.layers.Dense(size, activation="relu", name=f"dense{i}")(x)
        x = keras.layers.Dropout(p["dropout"])(x)
    outputs = keras.layers.Dense(n_outputs, name="output")(x)
    return keras.Model(inputs, outputs, name="keel_mlp")


def _check_params(params: dict, allowed: set[str]) -> None:
    # Same message as models._check_params, without importing torch into a TensorFlow image.
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"model.params: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed)) or 'none'}")
