"""Starting the predictor: settings from the environment, the bundle from a URI, KServe's REST server.

The same function runs in the serving image (`python -m keel.components.serve`,
host 0.0.0.0, the bundle in /mnt/models where KServe's storage initializer put
it) and behind `keel serve` (127.0.0.1, a local or s3:// registry URI).

Workers are forked after the model is loaded and share one listening socket,
so N workers cost one copy of the model (copy-on-write) and one port.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from keel.components._common.errors import ConfigError, StorageError
from keel.components.serve.auth import Authenticator, authenticator_from_env
from keel.components.serve.inputs import POLICIES, Policy

log = logging.getLogger("keel.serve")

_VERSION_URI = re.compile(r"^(?P<store>.+)/registry/(?P<name>[a-z0-9][a-z0-9._-]*)/v(?P<version>[1-9][0-9]*)/?$")
_MODEL_URI = re.compile(r"^(?P<store>.+)/registry/(?P<name>[a-z0-9][a-z0-9._-]*)/?$")


@dataclass(frozen=True)
class ServeSettings:
    """The predictor's knobs; every one comes from an environment variable (see manifests/README.md)."""

    policy: Policy
    max_body_bytes: int
    log_payloads: bool
    authenticator: Authenticator
    log_to: str | None = None  # keel-monitor's URL: post payload CloudEvents there (payload_events.py)

    @classmethod
    def from_env(cls, environ=os.environ) -> "ServeSettings":
        def integer(name: str, default: int) -> int:
            raw = environ.get(name, "").strip()
            if not raw:
                return default
            if not raw.isdigit() or int(raw) < 1:
                raise ConfigError(f"{name}: {raw!r} is not a positive whole number")
            return int(raw)

        def choice(name: str, default: str, allowed=POLICIES) -> str:
            raw = environ.get(name, "").strip().lower() or default
            if raw not in allowed:
                raise ConfigError(f"{name}: {raw!r} is not one of {', '.join(allowed)}")
            return raw

        return cls(
            policy=Policy(
                unseen_category=choice("KEEL_SERVE_UNSEEN_CATEGORY", "reject"),
                out_of_range=choice("KEEL_SERVE_OUT_OF_RANGE", "reject"),
                max_rows=integer("KEEL_SERVE_MAX_ROWS", 1000),
            ),
            max_body_bytes=integer("KEEL_SERVE_MAX_BODY_BYTES", 1 << 20),
            log_payloads=choice("KEEL_SERVE_LOG_PAYLOADS", "false", ("true", "false")) == "true",
            authenticator=authenticator_from_env(environ),
            log_to=_log_to(environ.get("KEEL_SERVE_LOG_TO", "").strip()),
        )


def load_model_bundle(uri: str, store: str | None = None, model_name: str | None = None):
    """A verified bundle from a version directory, a registry URI, or `latest`.

    Accepts `<store>/registry/<name>/v<N>` (local or s3://), `<store>/registry/<name>`
    (its latest version), a local copy of a version directory (KServe's /mnt/models),
    or `latest` (the latest version of `model_name` in `store`).

    Raises:
        StorageError / DataError: nothing to load there, or a file fails its hash check.
    """
    from keel.components._common.registry.bundle import load_bundle, load_bundle_dir

    uri = uri.rstrip("/") if uri not in ("/",) else uri
    if uri == "latest":
        if not store or not model_name:
            raise ConfigError("'latest' needs a registry store and model name (registry.store / registry.model_name in the config)")
        return load_bundle(store, model_name, "latest")
    if not uri.startswith("s3://") and Path(uri).is_dir() and (Path(uri) / "MANIFEST.json").is_file():
        return load_bundle_dir(uri)
    match = _VERSION_URI.match(uri)
    if match:
        return load_bundle(match["store"], match["name"], int(match["version"]))
    match = _MODEL_URI.match(uri)
    if match:
        return load_bundle(match["store"], match["name"], "latest")
    raise StorageError(
        f"{uri}: not a model bundle; give <store>/registry/<model>/v<N>, <store>/registry/<model>, "
        "a directory holding MANIFEST.json, or 'latest'"
    )


def _log_to(url: str) -> str | None:
    from keel.components.serve.payload_events import check_url

    return check_url(url) if url else None


def serving_model(name: str, bundle, settings: ServeSettings):
    """The kserve.Model for a bundle's modality: ImageModel for image bundles, KeelModel for tabular ones."""
    if bundle.modality == "image":
        from keel.components.serve.image_model import ImageModel

        return ImageModel(name, bundle, settings.policy, settings.log_payloads)
    from keel.components.serve.model import KeelModel

    sender = None
    if settings.log_to:
        from keel.components.serve.payload_events import EventSender

        sender = EventSender(settings.log_to, bundle.model_name, str(bundle.version))
    model = KeelModel(name, bundle, settings.policy, settings.log_payloads, sender=sender)
    import gc

    # The model, pandas and scikit-learn are loaded for good: out of the collector's sight, its full passes
    # walk only what requests allocate (with payload logging, what waits in the queue), not the whole heap.
    gc.freeze()
    return model


def configure_logging(level: str = "INFO") -> None:
    """JSON request/payload lines and Keel's own messages on stderr."""
    import warnings

    # Raised by kserve 0.21's own routes on every first call; nothing a Keel user can act on.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("keel.serve.requests", "keel.serve.payloads"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(level)
    logging.getLogger("keel.serve").setLevel(level)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before workers fork (port 0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        raise ConfigError(f"--port: cannot listen on {host}:{port} ({err.strerror}); pick another port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


GRACE_PERIOD_S = 30  # KServe's default grace period for a stopping server


def _drain_on_exit(model) -> None:
    """Queued payload events are delivered before a SIGTERM/SIGINT ends the process.

    uvicorn shuts down on the signal, then raises it again with the handler it found, so the
    default one would end the process before any `finally` or atexit: this handler delivers
    what is queued, then ends the process by the same signal.
    """
    sender = getattr(model, "sender", None)
    if sender is None:
        return

    def deliver_then_exit(signum, _frame):
        sender.close()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, deliver_then_exit)
    signal.signal(signal.SIGINT, deliver_then_exit)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def serve(model, sock: socket.socket, settings: ServeSettings, workers: int = 1, event_loop: str = "uvloop") -> None:
    """Runs KServe's REST server for a loaded model on `sock` until SIGTERM/SIGINT."""
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    from kserve.errors import InvalidInput

    from fastapi.exceptions import RequestValidationError

    from starlette.exceptions import HTTPException as StarletteHTTPException

    from keel.components.serve.http import Gateway
    from keel.components.serve.http import http_error_response as _http_error
    from keel.components.serve.http import invalid_input_response as _invalid_input
    from keel.components.serve.http import request_validation_response as _invalid_v2

    repository = ModelRepository()
    repository.update(model)
    dataplane = DataPlane(model_registry=repository)

    class KeelRESTServer(RESTServer):
        def _add_middlewares(self, app):
            # kserve's TimingMiddleware matches the route a second time and formats a
            # log line per request even when tracing is off; the Gateway below records
            # latency (Prometheus) and logs each request once.
            pass

        def create_application(self):
            super().create_application()
            import kserve.model_server

            # Added last, so it is the outermost layer: rejected calls stop here.
            # kserve's own handler logs a traceback per bad request; one line is enough,
            # and it names only the field, never the value that was sent.
            kserve.model_server.app.add_exception_handler(InvalidInput, _invalid_input)
            kserve.model_server.app.add_exception_handler(RequestValidationError, _invalid_v2)
            kserve.model_server.app.add_exception_handler(StarletteHTTPException, _http_error)
            kserve.model_server.app.add_middleware(
                Gateway, authenticator=settings.authenticator, max_body_bytes=settings.max_body_bytes
            )

    rest = KeelRESTServer(
        FASTAPI_APP_IMPORT_STRING, dataplane, ModelRepositoryExtension(model_registry=repository),
        sock.getsockname()[1], workers=1, event_loop=event_loop,
    )
    if workers <= 1:
        _drain_on_exit(model)
        rest.run(sockets=[sock])
        return
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                _drain_on_exit(model)
                rest.run(sockets=[sock])
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum, _frame):
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        # A worker stuck in native code never sees the signal: after KServe's grace
        # period the parent kills what is left instead of waiting forever.
        import threading

        timer = threading.Timer(GRACE_PERIOD_S, lambda: [_kill(pid) for pid in list(alive)])
        timer.daemon = True
        timer.start()

    alive = set(children)  # only unreaped workers: a reaped pid may belong to another process by then
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for pid in children:
        os.waitpid(pid, 0)
        alive.discard(pid)
