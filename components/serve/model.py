"""KeelModel: a registered Keel bundle behind KServe's V1 and V2 protocols.

The bundle is verified (every file against MANIFEST.json) before anything is
unpickled; requests carry raw feature values by column name and are checked
against the training schema; the fitted feature transform runs compiled to
numpy (see transform.py) and the estimator answers with predictions and
class probabilities. `:explain` adds shap attributions per raw column, with the
explainer registered in the bundle (explainer.json) when it has one.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import uuid
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from keel.components._common.registry.bundle import Bundle
from keel.components.serve.inputs import InputSchema, Policy
from keel.components.serve.predictors import serving_predictor
from keel.components._common.compiled_features import ServingFeatures, request_frame

log = logging.getLogger("keel.serve")
payload_log = logging.getLogger("keel.serve.payloads")

def _v2_datatype(values: list) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    return "BYTES"


class KeelModel(kserve.Model):
    """A Keel model bundle served over KServe's V1 and V2 protocols.

    Args:
        name: the name the model is served under (the InferenceService name in a cluster).
        bundle: a verified bundle from `load_bundle` / `load_bundle_dir`.
        policy: what to do with unseen categories and out-of-range numbers, and the row limit.
        log_payloads: log feature values and predictions (off by default; drift monitoring turns it on).
        sender: posts each call's request and response as CloudEvents (keel serve --log-to); None: off.
    """

    def __init__(self, name: str, bundle: Bundle, policy: Policy | None = None, log_payloads: bool = False, sender=None):
        super().__init__(name)
        self.sender = sender
        self.bundle = bundle
        self.policy = policy or Policy()
        self.log_payloads = log_payloads
        self.enable_latency_logging = False
        self.task = bundle.info.get("task", "binary")
        self.classes = bundle.classes if self.task != "regression" else None
        self._explainer = None
        self._explainer_error = ""

    # -- loading ----------------------------------------------------------------------------

    def load(self) -> bool:
        pipeline = self.bundle.model
        steps = getattr(pipeline, "steps", None)
        if not steps or len(steps) != 2:
            raise ValueError(f"{self.bundle.uri}: model.joblib is not a [features, model] Pipeline")
        features, estimator = steps[0][1], steps[1][1]
        self.schema = InputSchema(self.bundle.schema, self.bundle.input_columns, self.policy)
        probe = self.schema.probe()
        self.features = ServingFeatures(features, self.bundle.input_columns, probe)
        self.feature_names = [str(n) for n in features.get_feature_names_out()]
        # The estimator was fitted on a DataFrame; the compiled features are a numpy
        # array in the same column order (proved by the self-check), so the
        # per-call feature-name check is dropped on a private copy.
        self.estimator = copy.copy(estimator)
        if "feature_names_in_" in vars(self.estimator):  # scikit-learn's; XGBoost's is a read-only property
            del self.estimator.feature_names_in_
        self.predictor = serving_predictor(self.estimator, classification=self.classes is not None)
        problem = self._check_against_pipeline(probe)
        if problem:
            log.warning("serving falls back to the registered Pipeline end to end (slower): %s", problem)
            self.features.reason = problem
            self._fast = False
        else:
            self._fast = True
        log.info(
            "loaded %s v%s (%s, %s features, compiled transform: %s)",
            self.bundle.model_name, self.bundle.version, self.task, len(self.feature_names), self.features.compiled,
        )
        # Built now, not on the first :explain call: importing shap takes about two seconds.
        _ = self.explainer
        self.ready = True
        return self.ready

    def _check_against_pipeline(self, probe: dict[str, list]) -> str:
        """'' when the fast path predicts exactly what the registered Pipeline predicts on the probe rows."""
        try:
            fast = self._infer(probe, fast=True)
        except Exception as err:  # noqa: BLE001 - any failure means: use the Pipeline
            return f"fast path failed on probe rows ({type(err).__name__}: {err})"
        exact = self._infer(probe, fast=False)
        if fast[0] != exact[0]:
            return "fast path predictions differ from the Pipeline's on probe rows"
        if fast[1] is not None and not np.array_equal(fast[1], exact[1]):
            return "fast path probabilities differ from the Pipeline's on probe rows"
        return ""

    @property
    def explainer(self):
        if self._explainer is None and not self._explainer_error:
            from keel.components._common.explainer_spec import SPEC_FILE, Attributions, NoExplainer, parse_spec

            spec = self.bundle.files.get(SPEC_FILE)
            if spec is not None:
                # The explainer the explain step registered: a spec that does not fit the
                # model is a DataError here, so load() fails instead of serving wrong answers.
                where = f"{self.bundle.uri}/{SPEC_FILE}"
                self._explainer = Attributions.from_spec(parse_spec(spec, where), self.estimator, self.feature_names,
                                                         self.classes, where)
                return self._explainer
            try:
                self._explainer = Attributions(self.estimator, len(self.feature_names), self.features.sources, self.feature_names)
            except NoExplainer as err:
                self._explainer_error = str(err)
        return self._explainer

    # -- metadata ---------------------------------------------------------------------------

    def get_input_types(self) -> list[dict]:
        return self.schema.metadata()

    def get_output_types(self) -> list[dict]:
        if self.classes is None:
            return [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]
        return [
            {"name": "predictions", "datatype": _v2_datatype(self.classes), "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(self.classes)]},
        ]

    # -- inference --------------------------------------------------------------------------

    def _infer(self, columns: dict[str, list], fast: bool | None = None) -> tuple[list, np.ndarray | None]:
        """columns -> (predictions as JSON-ready values, probabilities or None)."""
        fast = self._fast if fast is None else fast
        if fast:
            # Column-major, as scikit-learn gets it from the Pipeline's DataFrame: the same
            # memory order makes BLAS sum in the same order, so linear models match to the bit.
            values, proba = self.predictor.predict(np.asfortranarray(self.features.transform(columns)))
        else:
            X = request_frame(columns, self.bundle.input_columns)
            values = self.bundle.model.predict(X)
            proba = self.bundle.model.predict_proba(X) if self.classes is not None else None
        if self.classes is None:
            return [float(v) for v in values], None
        return [self.classes[int(c)] for c in values], proba

    def _columns(self, payload: Any) -> tuple[dict[str, list], str]:
        if isinstance(payload, InferRequest):
            columns = self.schema.from_v2(payload)
            locate = lambda column, row: f"inputs[{column}][{row}]"  # noqa: E731
        else:
            columns = self.schema.from_v1(payload)
            locate = lambda column, row: f"instances[{row}].{column}"  # noqa: E731
        warnings = self.schema.check(columns, locate)
        if warnings:
            from keel.components.serve.http import record_input_warnings

            record_input_warnings(self.name, warnings)
        return columns, ("v2" if isinstance(payload, InferRequest) else "v1")

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        columns, protocol = self._columns(payload)
        predictions, proba = self._infer(columns)
        self._log_payload(headers, columns, predictions)
        if protocol == "v1":
            body = {"predictions": predictions}
            if proba is not None:
                body["probabilities"] = [dict(zip(map(str, self.classes), map(float, row))) for row in proba]
            if self.sender:
                self.sender.send(payload, body, (headers or {}).get("x-request-id"))
            return body
        outputs = [InferOutput("predictions", [len(predictions)], _v2_datatype(predictions) if self.classes else "FP64", predictions)]
        if proba is not None:
            outputs.append(InferOutput("probabilities", list(proba.shape), "FP64", proba.ravel().tolist()))
        # V2 responses must carry an id: the request's, else a fresh one.
        response = InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or str(uuid.uuid4()))
        if self.sender:  # the sender serializes both here, in the request (payload_events._flat says why)
            self.sender.send(payload, response, response.id)
        return response

    def explain(self, payload: Any, headers: dict[str, str] | None = None) -> dict:
        if isinstance(payload, dict) and "inputs" in payload and "instances" not in payload:
            raise InvalidInput("explain takes V1 bodies: {\"instances\": [{column: value, ...}]}")
        columns, _ = self._columns(payload)
        explainer = self.explainer
        if explainer is None:
            raise InvalidInput(f"model {self.name!r} cannot be explained: {self._explainer_error}")
        predictions, proba = self._infer(columns)
        X = self.features.transform(columns)
        explanations = explainer.explain(X, self.classes)
        for i, item in enumerate(explanations):
            item["prediction"] = predictions[i]
            if proba is not None:
                item["probabilities"] = dict(zip(map(str, self.classes), map(float, proba[i])))
        self._log_payload(headers, columns, predictions)
        return {"explanations": explanations, "method": explainer.method, "output_space": self._output_space()}

    def _output_space(self) -> str:
        """What `output` (= base_value + sum of attributions) is measured in."""
        registered = getattr(self._explainer, "output", None)  # set when the bundle has explainer.json
        if registered == "probability":
            return "probability"
        if self.classes is None:
            return "prediction"
        if self.bundle.info.get("family") == "random_forest":
            return "probability"
        return "log-odds" if len(self.classes) == 2 else "log-odds per class (softmax input)"

    def _log_payload(self, headers, columns, predictions) -> None:
        if not self.log_payloads:
            return
        safe = {k: [None if isinstance(v, float) and not math.isfinite(v) else v for v in vs] for k, vs in columns.items()}
        payload_log.info(json.dumps({
            "event": "payload", "model": self.name, "version": self.bundle.version,
            "request_id": (headers or {}).get("x-request-id"), "inputs": safe, "predictions": predictions,
        }, default=str))
