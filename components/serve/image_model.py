"""ImageModel: a registered image bundle behind KServe's V1 and V2 protocols.

The bundle was verified file by file (_common/registry/bundle.py) before this runs.
Its model.json and the exported file for its serving format (TorchScript,
ONNX, TFLite or a SavedModel zip) are written into a private directory and
opened with keel.components._common.deep_model.runtime, the same runtime evaluate and
compress score with, so the predictor answers exactly what those steps
measured. Requests are decoded and checked by image_inputs.py; the answer is
the class name and the softmax of the model's scores per image, in the same
shape as the tabular predictor's (`predictions` and `probabilities`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from keel.components._common.errors import DataError
from keel.components._common.registry.bundle import Bundle, image_model_files
from keel.components.serve.image_inputs import ImageSpec, from_v1, from_v2
from keel.components.serve.inputs import Policy

log = logging.getLogger("keel.serve")
payload_log = logging.getLogger("keel.serve.payloads")

INPUT_NAME = "images"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from scores, per row (float32, computed in float64)."""
    from scipy.special import softmax as _softmax

    return _softmax(np.asarray(logits, dtype=np.float64), axis=1).astype(np.float32)


class ImageModel(kserve.Model):
    """A Keel image classifier bundle served over KServe's V1 and V2 protocols.

    Args:
        name: the name the model is served under (the InferenceService name in a cluster).
        bundle: a verified image bundle from `load_bundle` / `load_bundle_dir` (modality "image").
        policy: only `max_rows` applies: the most images one request may carry.
        log_payloads: log each request's image count and predictions (never pixels).
    """

    def __init__(self, name: str, bundle: Bundle, policy: Policy | None = None, log_payloads: bool = False):
        super().__init__(name)
        if bundle.modality != "image":
            raise DataError(f"{bundle.uri}: is a {bundle.modality} bundle; serve it with KeelModel")
        self.bundle = bundle
        self.policy = policy or Policy()
        self.log_payloads = log_payloads
        self.enable_latency_logging = False
        self.task = bundle.info.get("task", "multiclass")
        self.classes: list[str] = []
        self._runtime = None
        self._pid = None

    # -- loading ----------------------------------------------------------------------------

    def load(self) -> bool:
        """Opens the serving runtime and proves it answers with one score per class.

        Raises:
            DataError: the format's library is missing from this image, the file does not
                load, or the model's output does not match the bundle's classes.
        """
        self.format, self.model_info, files = image_model_files(self.bundle.uri, self.bundle.info, self.bundle.files)
        self.classes = [str(c) for c in self.model_info["classes"]]
        self.layout = self.model_info["input"]["layout"]
        self.spec = ImageSpec.from_info(self.model_info["input"], self.policy.max_rows)
        # Private (mode 0700) and kept for the process's life: forked workers reopen from it.
        self._dir = tempfile.TemporaryDirectory(prefix="keel-image-model-")
        for filename, data in files.items():
            (Path(self._dir.name) / filename).write_bytes(data)
        _ = self.runtime  # opens it: a missing library or a bad file fails the start, not a request
        # The runtime's native libraries load only now, after __main__ limited the thread
        # pools it knew about: one thread per process here too (see __main__.run).
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        blank = np.zeros((1, self.spec.height, self.spec.width, self.spec.channels), dtype=np.float32)
        scores = self._scores(blank)
        if scores.shape != (1, len(self.classes)):
            raise DataError(f"{self.bundle.uri}: the {self.format} model returns scores of shape {list(scores.shape[1:])} "
                            f"per image, but the bundle has {len(self.classes)} classes; the bundle is inconsistent")
        # Runtimes keep native thread pools (onnxruntime's, TensorFlow's) that do not survive
        # fork(2): a forked worker that used, or even destroyed, an inherited session would wait
        # forever on threads that only exist in the parent. So the runtime is closed just before
        # a fork (its threads are joined in the parent) and each process opens its own.
        os.register_at_fork(before=self._close, after_in_child=self._reopen)
        log.info("loaded %s v%s (image %s, %s, %d classes, input %sx%sx%s %s)", self.bundle.model_name, self.bundle.version,
                 self.task, self.format, len(self.classes), self.spec.height, self.spec.width, self.spec.channels, self.layout)
        self.ready = True
        return self.ready

    @property
    def runtime(self):
        """This process's runtime, opened on first use (see the fork note in `load`)."""
        if self._pid != os.getpid():
            from keel.components._common.deep_model.runtime import load_runtime

            # One thread per worker: server workers are the parallelism (load_runtime turns any load error into a DataError).
            self._runtime = load_runtime(self._dir.name, self.format, self.model_info, threads=1)
            self._pid = os.getpid()
        return self._runtime

    def _close(self) -> None:
        self._runtime, self._pid = None, None

    def _reopen(self) -> None:
        _ = self.runtime  # now, so a worker's first request does not pay for it

    def _scores(self, images: np.ndarray) -> np.ndarray:
        from keel.components._common.deep_model.runtime import to_layout

        return np.asarray(self.runtime.predict(to_layout(images, self.layout)))

    # -- metadata ---------------------------------------------------------------------------

    def get_input_types(self) -> list[dict]:
        # One input; BYTES (base64 PNG/JPEG, shape [-1]) is accepted under any name too.
        return [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, self.spec.height, self.spec.width, self.spec.channels]}]

    def get_output_types(self) -> list[dict]:
        return [
            {"name": "predictions", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(self.classes)]},
        ]

    # -- inference --------------------------------------------------------------------------

    def infer(self, images: np.ndarray) -> tuple[list[str], np.ndarray]:
        """float32 `[N, H, W, C]` pixels -> (class names, probabilities `[N, classes]`)."""
        scores = self._scores(images)
        return [self.classes[int(i)] for i in scores.argmax(axis=1)], softmax(scores)

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        v2 = isinstance(payload, InferRequest)
        images = from_v2(payload, self.spec) if v2 else from_v1(payload, self.spec)
        predictions, proba = self.infer(images)
        self._log_payload(headers, predictions, proba)
        if not v2:
            return {"predictions": predictions,
                    "probabilities": [dict(zip(self.classes, map(float, row))) for row in proba]}
        outputs = [InferOutput("predictions", [len(predictions)], "BYTES", predictions),
                   InferOutput("probabilities", list(proba.shape), "FP32", proba.ravel().tolist())]
        # V2 responses must carry an id: the request's, else a fresh one.
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or str(uuid.uuid4()))

    def explain(self, payload: Any, headers: dict[str, str] | None = None) -> dict:
        raise InvalidInput(f"model {self.name!r} is an image model and has no :explain; use :predict")

    def _log_payload(self, headers, predictions: list[str], proba: np.ndarray) -> None:
        if not self.log_payloads:
            return
        # Pixels are never logged: too large, and images may show people.
        payload_log.info(json.dumps({
            "event": "payload", "model": self.name, "version": self.bundle.version,
            "request_id": (headers or {}).get("x-request-id"), "inputs": {"images": len(predictions)},
            "predictions": predictions, "confidence": [round(float(p), 6) for p in proba.max(axis=1)],
        }))
