"""Compress a trained image model: build the configured variants, measure each, pick the one to serve.

The output is a new model directory (artifact.py's contract): the input's
files, one file per new variant, and model.json with `files` extended,
`serving_format` set to the chosen variant and a `compression` record (the
measured table as rows and as Markdown, for the model card).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keel.components._common.errors import ConfigError, DataError
from keel.components._common.image_data import ImageSet, read_npz
from keel.components._common.vision_config import TENSORFLOW_VARIANTS, TORCH_VARIANTS, CompressionSection
from keel.components._common.deep_model import artifact
from keel.components._common.deep_model.runtime import to_layout

REFERENCE = {"torch": "torchscript", "tensorflow": "saved_model"}
NOTES = {
    "torchscript": "fp32 reference (TorchScript)",
    "saved_model": "fp32 reference (SavedModel)",
    "torchscript_pruned": "fp32, global L1 magnitude pruning, no fine-tuning; dense kernels, so neither faster nor smaller",
    "onnx": "fp32 ONNX, onnxruntime",
    "onnx_int8": "onnxruntime dynamic int8 (weights int8, activations quantized per call)",
    "onnx_int8_static": "onnxruntime static int8 (QDQ, per-channel weights, activations calibrated)",
    "tflite_int8": "TFLite dynamic-range quantization (int8 weights, float activations)",
}


@dataclass
class Compressed:
    info: dict  # the output's model.json
    rows: list[dict]  # one measured row per variant, the reference first
    served: str
    markdown: str


def planned_variants(info: dict, cfg: CompressionSection) -> list[str]:
    """The variants this config builds for this model, the fp32 reference first.

    Raises:
        ConfigError: `serve` names a variant that this config or framework does not build.
    """
    framework = info["framework"]
    if framework == "torch":
        wanted = {"torchscript": True, "torchscript_pruned": cfg.prune_sparsity > 0, "torchscript_int8": cfg.quantize,
                  "onnx": cfg.onnx, "onnx_int8": cfg.onnx and cfg.quantize and "dynamic" in cfg.onnx_int8,
                  "onnx_int8_static": cfg.onnx and cfg.quantize and "static" in cfg.onnx_int8}
        known = TORCH_VARIANTS
    elif framework == "tensorflow":
        wanted = {"saved_model": True, "tflite_int8": cfg.quantize}
        known = TENSORFLOW_VARIANTS
    else:
        raise DataError(f"model.json: framework {framework!r} cannot be compressed; use a torch or tensorflow model")
    variants = [v for v in known if wanted[v]]
    if cfg.serve != "auto" and cfg.serve not in variants:
        why = (f"a {framework} model has no {cfg.serve} variant (it has {', '.join(known)})" if cfg.serve not in known
               else "this config does not build it (check quantize, prune_sparsity, onnx, onnx_int8)")
        raise ConfigError(f"compression.serve: {cfg.serve!r}: {why}")
    return variants


def read_test(path: str | Path, info: dict) -> ImageSet:
    """The test ImageSet, checked against the model's input shape and classes.

    Raises:
        DataError: naming the file and what does not match model.json.
    """
    test = read_npz(path)
    want = (info["input"]["height"], info["input"]["width"], info["input"]["channels"])
    if test.shape != tuple(want):
        raise DataError(f"{path}: images are {'x'.join(map(str, test.shape))} (HxWxC) but the model takes "
                        f"{'x'.join(map(str, want))} (model.json input); use the test split the model was trained with")
    if len(test.classes) != len(info["classes"]):
        raise DataError(f"{path}: {len(test.classes)} classes but the model has {len(info['classes'])} (model.json classes)")
    return test


def compress(model_dir: str | Path, test_path: str | Path, out_dir: str | Path, cfg: CompressionSection) -> Compressed:
    """Builds, measures and chooses the variants of the model in `model_dir` into `out_dir`.

    Raises:
        ConfigError: an unknown serve variant, or the chosen one loses more than max_accuracy_drop.
        DataError: the model directory, the test set or an export is unusable (named).
    """
    info = artifact.read_info(model_dir)
    variants = planned_variants(info, cfg)
    test = read_test(test_path, info)
    out = Path(out_dir)
    _copy_model(Path(model_dir), out)
    info = dict(info, files=dict(info["files"]))
    if not cfg.enabled:
        info["compression"] = {"enabled": False}
        artifact.write_info(out, info)
        return Compressed(info, [], info["serving_format"], "Compression disabled (compression.enabled: false).\n")

    pixels = to_layout(test.images, info["input"]["layout"])
    calibration = None
    if "onnx_int8_static" in variants:
        if len(test) <= cfg.calibration_images:
            raise DataError(f"{test_path}: {len(test)} test images, but compression.calibration_images takes "
                            f"{cfg.calibration_images} of them and accuracy needs the rest; lower it or use a larger test set")
        # Calibration images are left out of every accuracy so that no variant is scored on data it was fitted to.
        calibration, pixels, labels = pixels[:cfg.calibration_images], pixels[cfg.calibration_images:], test.labels[cfg.calibration_images:]
    else:
        labels = test.labels

    build = _build_torch if info["framework"] == "torch" else _build_tensorflow
    extra = build(Path(model_dir), info, out, variants, cfg, pixels, calibration)
    rows = _measure_all(out, info, variants, cfg, pixels, labels, extra)
    served = choose(rows, cfg)
    from keel.components.compress.measure import table_markdown

    markdown = table_markdown(rows, served, cfg.latency_batch, cfg.threads)
    info["serving_format"] = served
    info["compression"] = {"enabled": True, "served": served, "reference": variants[0], "table": rows,
                           "markdown": markdown, "config": cfg.model_dump(), **extra.get("record", {})}
    artifact.write_info(out, info)
    return Compressed(info, rows, served, markdown)


def choose(rows: list[dict], cfg: CompressionSection) -> str:
    """The variant to serve: `serve`, or with auto the highest throughput within max_accuracy_drop.

    Raises:
        ConfigError: the asked variant loses more accuracy than max_accuracy_drop allows.
    """
    if cfg.serve == "auto":
        allowed = [r for r in rows if r["accuracy_drop"] <= cfg.max_accuracy_drop]
        return max(allowed, key=lambda r: r["images_per_second"])["variant"]
    row = next(r for r in rows if r["variant"] == cfg.serve)
    if row["accuracy_drop"] > cfg.max_accuracy_drop:
        raise ConfigError(
            f"compression.serve: {cfg.serve} loses {100 * row['accuracy_drop']:.2f} points of accuracy "
            f"({100 * (row['accuracy'] + row['accuracy_drop']):.2f}% -> {100 * row['accuracy']:.2f}%), more than "
            f"compression.max_accuracy_drop {cfg.max_accuracy_drop}; serve another variant (or auto) or raise the limit")
    return cfg.serve


def _copy_model(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and item.name != artifact.MODEL_INFO:
            shutil.copy2(item, out / item.name)


def _build_torch(src: Path, info: dict, out: Path, variants: list[str], cfg: CompressionSection,
                 pixels: np.ndarray, calibration: np.ndarray | None) -> dict:
    """Writes the torch variants into `out` and adds them to info["files"]; returns notes and checks to record."""
    import torch

    from keel.components.compress import torch_variants as tv

    model = artifact.load_torch_model(src, info)
    example = torch.from_numpy(pixels[:2])  # batch 2: a traced/exported batch of 1 could be specialised to 1
    files, notes, record = info["files"], {}, {}

    def add(variant: str, write) -> Path:
        path = out / artifact.FILE_NAMES[variant]
        write(path)
        files[variant] = path.name
        return path

    if not files.get("torchscript"):
        add("torchscript", lambda p: tv.save_torchscript(model, example, p))
    if "torchscript_pruned" in variants:
        pruned = tv.prune_model(model, cfg.prune_sparsity)
        add("torchscript_pruned", lambda p: tv.save_torchscript(pruned, example, p))
        record["sparsity"] = tv.sparsity_of(pruned)
        notes["torchscript_pruned"] = f"{NOTES['torchscript_pruned']}; {100 * record['sparsity']:.1f}% of conv+linear weights are zero"
    if "torchscript_int8" in variants:
        quantized = tv.quantize_int8(model, convs=cfg.quantize_convs)
        add("torchscript_int8", lambda p: tv.save_torchscript(quantized, example, p))
        layers = "Conv2d (BatchNorm folded) and Linear" if cfg.quantize_convs else "Linear only (convolutions stay fp32)"
        notes["torchscript_int8"] = f"torch dynamic int8 of {layers}: int8 weights, activations quantized per call"
    if "onnx" in variants:
        onnx_path = out / files["onnx"] if files.get("onnx") else add("onnx", lambda p: tv.export_onnx(model, example, p))
        record["onnx_max_relative_difference"] = tv.onnx_difference(onnx_path, model, pixels[:64])
        if "onnx_int8" in variants:
            add("onnx_int8", lambda p: tv.quantize_onnx_dynamic(onnx_path, p))
        if "onnx_int8_static" in variants:
            add("onnx_int8_static", lambda p: tv.quantize_onnx_static(onnx_path, p, calibration))
            notes["onnx_int8_static"] = f"{NOTES['onnx_int8_static']} on {len(calibration)} test images"
    return {"notes": notes, "record": record}


def _build_tensorflow(src: Path, info: dict, out: Path, variants: list[str], cfg: CompressionSection,
                      pixels: np.ndarray, calibration: np.ndarray | None) -> dict:
    from keel.components.compress.tflite import convert_tflite_int8

    if "tflite_int8" in variants:
        dst = out / artifact.FILE_NAMES["tflite_int8"]
        convert_tflite_int8(artifact.file_path(src, info, "saved_model"), dst)
        info["files"]["tflite_int8"] = dst.name
    return {"notes": {}, "record": {}}


def _measure_all(out: Path, info: dict, variants: list[str], cfg: CompressionSection,
                 pixels: np.ndarray, labels: np.ndarray, extra: dict) -> list[dict]:
    import contextlib

    from keel.components.compress.measure import accuracy, compare, open_runtime, timing, torch_threads

    if info["framework"] == "tensorflow":
        from keel.components._common.tf_import import tensorflow

        tf = tensorflow()

        with contextlib.suppress(RuntimeError):  # TF fixes its pools at first use; too late is only less exact
            tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
            tf.config.threading.set_inter_op_parallelism_threads(cfg.threads)
    rows, runtimes = [], {}
    with torch_threads(cfg.threads) if info["framework"] == "torch" else contextlib.nullcontext():
        for variant in variants:
            path = artifact.file_path(out, info, variant)
            try:
                runtimes[variant] = open_runtime(variant, path, info, cfg.threads)
            except (RuntimeError, ValueError, OSError) as err:
                raise DataError(f"{path}: cannot load the {variant} variant ({str(err).splitlines()[0]})") from None
            rows.append({"variant": variant, "file": path.name, "size_bytes": path.stat().st_size,
                         "accuracy": accuracy(runtimes[variant], pixels, labels, cfg.latency_batch),
                         "test_images": int(len(labels)), "batch": cfg.latency_batch, "threads": cfg.threads,
                         "note": extra["notes"].get(variant, NOTES.get(variant, ""))})
        times = timing(runtimes, pixels, cfg.latency_batch, cfg.latency_runs)
    for row in rows:
        row.update(times[row["variant"]])
    return compare(rows, variants[0])
