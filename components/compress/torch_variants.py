"""Compressed variants of a trained torch image model: pruned, int8 dynamic, ONNX fp32 and int8.

Every variant keeps the model's input contract (float32 0..255 pixels, NCHW,
normalised inside the model), so the predictor serves any of them the same way.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path

import numpy as np

from keel.components._common.errors import DataError

# onnxruntime vs torch on the same pixels: fp32 kernels differ in summation order only.
ONNX_TOLERANCE = 1e-3


def save_torchscript(model, example, path: Path) -> None:
    """Traces `model` on `example` and saves it where runtime.TorchScriptRuntime loads it."""
    import torch

    with warnings.catch_warnings(), torch.inference_mode():
        # torch 2.14 marks torch.jit deprecated (FutureWarning), but TorchScript is the
        # predictor's torch format; the warning is not something a user can act on.
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(model.eval(), example).save(str(path))


def prunable(model) -> list:
    """(module, "weight") of every Conv2d and Linear: the weights magnitude pruning ranks together."""
    from torch import nn

    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def prune_model(model, sparsity: float):
    """A copy of `model` with the `sparsity` fraction of its conv and linear weights set to zero, permanently.

    Global L1 unstructured: the smallest weights across all layers go first, so a
    layer with many redundant weights loses more of them than a thin one.
    """
    from torch.nn.utils import prune

    pruned = copy.deepcopy(model).eval()
    params = prunable(pruned)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    for module, name in params:
        prune.remove(module, name)  # drop the mask and keep the zeros in `weight`
    return pruned


def sparsity_of(model) -> float:
    """Fraction of zero weights over the Conv2d and Linear layers."""
    weights = [m.weight.detach() for m, _ in prunable(model)]
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / total) if total else 0.0


def quantize_int8(model, convs: bool = True):
    """Dynamic int8 quantization: int8 weights, activations quantized per batch at run time (no calibration).

    torch's default dynamic mapping covers nn.Linear (and RNNs) only; in a CNN the
    convolutions hold nearly all the compute, so with `convs` the Conv2d layers are
    quantized too (torch.ao.nn.quantized.dynamic.Conv2d, per-channel weights), after
    folding each BatchNorm into its conv so that no float op sits between them.
    """
    import torch
    import torch.ao.nn.quantized.dynamic as nnqd
    from torch import nn
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    model = copy.deepcopy(model).eval()
    if not convs:
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    from torch.fx.experimental.optimization import fuse

    folded = fuse(model)  # symbolic trace, then Conv2d+BatchNorm2d folded into one Conv2d
    qconfig = {nn.Linear: default_dynamic_qconfig, nn.Conv2d: per_channel_dynamic_qconfig}
    return quantize_dynamic(folded, qconfig, mapping={nn.Linear: nnqd.Linear, nn.Conv2d: nnqd.Conv2d})


def export_onnx(model, example, path: Path) -> None:
    """fp32 ONNX (torch.export + onnxscript) with a dynamic batch dimension, one self-contained file."""
    import torch

    batch = torch.export.Dim("batch", min=1)
    try:
        torch.onnx.export(model.eval(), (example,), str(path), input_names=["pixels"], output_names=["logits"],
                          dynamic_shapes=({0: batch},), external_data=False, verbose=False)
    except Exception as err:  # the exporter raises many types; the model is what the user can change
        raise DataError(f"{path.name}: torch.onnx.export failed ({str(err).splitlines()[0]}); "
                        "set compression.onnx: false to skip ONNX") from None


def onnx_difference(path: Path, model, pixels: np.ndarray) -> float:
    """Largest |onnxruntime - torch| logit on `pixels`, relative to the largest logit (at least 1).

    Raises:
        DataError: above ONNX_TOLERANCE, so a wrong export is never served.
    """
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: pixels})[0]
    with torch.inference_mode():
        want = model(torch.from_numpy(pixels)).numpy()
    diff = float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))
    if diff > ONNX_TOLERANCE:
        raise DataError(f"{path.name}: onnxruntime differs from torch by {diff:.2g} (relative, > {ONNX_TOLERANCE}); "
                        "set compression.onnx: false to skip ONNX")
    return diff


def quantize_onnx_dynamic(src: Path, dst: Path) -> None:
    """onnxruntime dynamic int8: Conv/MatMul weights to int8, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="keel-onnx-") as tmp:
        prepared = _preprocess(src, Path(tmp))
        # uint8 weights: onnxruntime's x86 ConvInteger with int8 weights ran ~4x slower
        # than with uint8 on the Fashion-MNIST CNN (measured for issue 6).
        quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QUInt8)


def quantize_onnx_static(src: Path, dst: Path, calibration: np.ndarray, batch: int = 32) -> None:
    """onnxruntime static int8 (QDQ): activation ranges calibrated on `calibration` pixels, per-channel weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self, name):
            self._batches = iter([{name: calibration[i:i + batch]} for i in range(0, len(calibration), batch)])

        def get_next(self):
            return next(self._batches, None)

    with tempfile.TemporaryDirectory(prefix="keel-onnx-") as tmp:
        prepared = _preprocess(src, Path(tmp))
        import onnx

        name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
        quantize_static(str(prepared), str(dst), Batches(name), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _preprocess(src: Path, tmp: Path) -> Path:
    # onnxruntime's recommended step before quantizing: shape inference and graph
    # optimisation, so the quantizer sees Conv+Relu etc. as the kernels that will run.
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmp / "prepared.onnx"
    quant_pre_process(str(src), str(out))
    return out
