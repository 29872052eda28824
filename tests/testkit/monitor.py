"""keel-monitor for tests: KServe-shaped CloudEvents and the real receiver process (`python -m keel.components.monitor`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import requests
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from keel.components._common.payload_logging import REQUEST_TYPE, RESPONSE_TYPE

V1_REQUEST = {"instances": [{"loan_amount": 12000, "term": 36, "homeownership": "RENT"}]}
V1_RESPONSE = {"predictions": [1]}


def event(kind: str, event_id: str, body: dict, time: str = "2026-07-01T10:15:00Z", service: str = "loans") -> CloudEvent:
    attributes = {"type": REQUEST_TYPE if kind == "request" else RESPONSE_TYPE, "source": "http://localhost:9081/",
                  "id": event_id, "time": time, "inferenceservicename": service, "namespace": "keel-dev",
                  "endpoint": "default", "component": "predictor"}
    return CloudEvent(attributes, body)


def http_parts(cloud_event: CloudEvent, structured: bool = False) -> tuple[dict, bytes]:
    headers, body = (to_structured if structured else to_binary)(cloud_event)
    return {k.lower(): v for k, v in headers.items()}, body


def stored(store) -> list[dict]:
    root = Path(store) / "monitoring"
    if not root.exists():
        return []
    return ds.dataset(str(root), format="parquet", partitioning="hive").to_table().to_pylist()


class Server:
    """A running receiver on a free port, with its store and log under `tmp_path`; returns once it serves."""

    def __init__(self, tmp_path: Path, *args: str, command: tuple[str, ...] = (sys.executable, "-m", "keel.components.monitor")):
        self.store, self.wal = tmp_path / "store", tmp_path / "wal"
        cmd = [*command, "--port", "0", "--store", str(self.store),
               "--wal-dir", str(self.wal), "--flush-seconds", "3600", *args]
        self.process = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        seen = []
        while not seen or "listening on" not in seen[-1]:  # replay's log lines come first
            seen.append(self.process.stderr.readline())
            assert seen[-1], "".join(seen)  # exited before listening
        line = seen[-1]
        self.url = line.split("listening on ")[1].split()[0]
        self.replayed = int(line.rsplit("replayed=", 1)[1])
        self.session = requests.Session()

    def send(self, cloud_event: CloudEvent, query: str = "?model=loans&version=2", structured: bool = False):
        headers, body = http_parts(cloud_event, structured)
        return self.session.post(self.url + "/" + query, headers=headers, data=body, timeout=30)

    def stop(self, sig=signal.SIGTERM) -> str:
        self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=60)
        return err


# -- stored calls, for the monitoring pipeline's window reader --------------------------------------

COLUMNS = ["loan_amount", "term", "homeownership"]


def call(event_id, request, response, *, status="joined", when=None):
    """One stored call as the receiver writes it (keel.components.monitor.batches.schema)."""
    import datetime as dt

    when = when or dt.datetime(2026, 7, 1, 10, 0, tzinfo=dt.timezone.utc)
    return {"event_id": event_id, "model": "loans", "version": "1", "status": status, "request_time": when,
            "response_time": when, "received_at": when,
            "request": None if request is None else (request if isinstance(request, str) else json.dumps(request)),
            "response": None if response is None else (response if isinstance(response, str) else json.dumps(response)),
            "namespace": None, "inference_service": "loans", "endpoint": None}


def v1(*rows):
    """A V1 body of COLUMNS rows."""
    return {"instances": [dict(zip(COLUMNS, r)) for r in rows]}


def answered(*classes):
    """The predictor's V1 answer for classes low / high."""
    return {"predictions": list(classes),
            "probabilities": [{"low": 0.8, "high": 0.2} if c == "low" else {"low": 0.3, "high": 0.7} for c in classes]}



def logged_calls(frame, model: str, version: int | str, start, *, seconds: float = 60.0, classes=None,
                 predictions=None, probabilities=None, prefix: str = "call") -> list[dict]:
    """The receiver's stored rows (keel.components.monitor.batches.schema) for one V1 call per frame row,
    `seconds` apart from `start`, answered with `predictions` (and `probabilities`, [N, classes]) as the
    predictor answers. Written with batches.write_rows, they are a window the monitoring pipeline reads."""
    import datetime as dt
    import json

    import numpy as np

    records = frame.to_dict(orient="records")
    out = []
    for i, instance in enumerate(records):
        when = start + dt.timedelta(seconds=seconds * i)
        instance = {k: (None if isinstance(v, float) and np.isnan(v) else (v.item() if hasattr(v, "item") else v))
                    for k, v in instance.items()}
        response = {"predictions": [predictions[i].item() if hasattr(predictions[i], "item") else predictions[i]]}
        if probabilities is not None:
            response["probabilities"] = [dict(zip(map(str, classes), map(float, probabilities[i])))]
        out.append({"event_id": f"{prefix}-{i}", "model": model, "version": str(version), "status": "joined",
                    "request_time": when, "response_time": when, "received_at": when,
                    "request": json.dumps({"instances": [instance]}), "response": json.dumps(response),
                    "namespace": None, "inference_service": model, "endpoint": None})
    return out
