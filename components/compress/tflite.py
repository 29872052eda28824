"""TFLite with dynamic-range quantization from a trained TensorFlow SavedModel (the `saved_model` zip)."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from keel.components._common.errors import DataError


def convert_tflite_int8(saved_model_zip: Path, dst: Path) -> None:
    """Writes a TFLite model with int8 weights and float activations (tf.lite.Optimize.DEFAULT, no calibration).

    Raises:
        DataError: the zip is not a SavedModel the converter reads.
    """
    from keel.components._common.tf_import import tensorflow

    tf = tensorflow()

    with tempfile.TemporaryDirectory(prefix="keel-savedmodel-") as tmp:
        try:
            with zipfile.ZipFile(io.BytesIO(Path(saved_model_zip).read_bytes())) as archive:
                archive.extractall(tmp)
        except zipfile.BadZipFile:
            raise DataError(f"{saved_model_zip}: not a zip of a SavedModel directory") from None
        try:
            converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            flatbuffer = converter.convert()
        except (OSError, ValueError, RuntimeError) as err:
            raise DataError(f"{saved_model_zip}: TFLite conversion failed ({str(err).splitlines()[0]}); "
                            "set compression.quantize: false to skip it") from None
    dst.write_bytes(flatbuffer)
