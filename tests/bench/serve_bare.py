"""The framework floor for `make bench-serve`: a bare kserve.Model around the registered Pipeline.

It does only what the smallest KServe predictor a user could write does:
build a DataFrame from the V1 instances or the V2 per-column inputs and call
`model.predict` on it. It has no bundle verification, validation, auth,
compiled transform, probabilities, request logs or metrics middleware.
Everything Keel's predictor adds is therefore measured against this server.

It is served the way `keel.components.serve.server.serve` serves Keel's model:
kserve's own RESTServer (the same FastAPI app, uvicorn, event loop and
TimingMiddleware) on a socket bound before the server starts, one worker.
Only the model and Keel's extra layers differ between the two servers.

    python tests/bench/serve_bare.py --model_dir <bundle version dir> --model_name <name> --port <port>
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import uuid
from pathlib import Path

import joblib
import kserve
import pandas as pd
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.utils.numpy_codec import from_np_dtype


class BareModel(kserve.Model):
    """DataFrame in, `Pipeline.predict` out; nothing else."""

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = Path(model_dir)

    def load(self) -> bool:
        # A plain joblib.load of the same file Keel serves (Keel verifies its hash first; this
        # baseline does not, because that is part of what Keel adds).
        self.model = joblib.load(self.model_dir / "model.joblib")
        # The Pipeline's ColumnTransformer rejects frames whose columns are not in the fitted
        # order, so even the barest predictor has to know the order.
        self.columns = json.loads((self.model_dir / "bundle.json").read_text())["input_columns"]
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            frame = pd.DataFrame({i.name: i.data for i in payload.inputs}, columns=self.columns)
            predictions = self.model.predict(frame)
            output = InferOutput("predictions", list(predictions.shape), from_np_dtype(predictions.dtype), predictions.tolist())
            # kserve's REST layer validates the response against a model whose `id` is a required
            # string, though a V2 request's id is optional: any working V2 predictor supplies one.
            return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id or str(uuid.uuid4()))
        frame = pd.DataFrame(payload["instances"], columns=self.columns)
        return {"predictions": self.model.predict(frame).tolist()}


def main(argv: list[str] | None = None) -> int:
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    p = argparse.ArgumentParser(prog="serve_bare.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", required=True, help="a registered bundle's version directory (holds model.joblib)")
    p.add_argument("--model_name", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--event_loop", default="auto", help="as kserve's --event_loop (Keel's predictor uses the same default)")
    args = p.parse_args(argv)

    model = BareModel(args.model_name, args.model_dir)
    model.load()
    repository = ModelRepository()
    repository.update(model)
    dataplane = DataPlane(model_registry=repository)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    rest = RESTServer(FASTAPI_APP_IMPORT_STRING, dataplane, ModelRepositoryExtension(model_registry=repository),
                      args.port, workers=1, event_loop=args.event_loop)
    rest.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
