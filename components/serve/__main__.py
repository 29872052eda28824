"""`python -m keel.components.serve`: the Keel predictor, as the serving image starts it.

Takes KServe's own model-server flags (--model_name, --http_port, --workers,
--event_loop, ...) plus --model_dir (where KServe's storage initializer put
the bundle, or any registry URI) and --host. Secrets come from the
environment only; see manifests/README.md for every KEEL_SERVE_* variable.
"""

from __future__ import annotations

import argparse
import sys


def parser() -> argparse.ArgumentParser:
    from kserve.model_server import parser as kserve_parser

    p = argparse.ArgumentParser(prog="python -m keel.components.serve", parents=[kserve_parser], conflict_handler="resolve")
    p.add_argument("--model_dir", default="/mnt/models", help="bundle directory or registry URI (local or s3://)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0 in a pod)")
    return p


def main(argv: list[str] | None = None) -> int:
    from keel.components._common.errors import KeelError

    args = parser().parse_args(argv)
    try:
        return run(args.model_dir, args.model_name, args.host, args.http_port, args.workers, args.event_loop)
    except KeelError as err:
        print(f"keel: error: [serve] {err}", file=sys.stderr, flush=True)
        return 2


def run(model_uri: str, model_name: str | None, host: str, port: int, workers: int, event_loop: str = "uvloop",
        store: str | None = None, registry_name: str | None = None, on_ready=None) -> int:
    """Loads and verifies the bundle, binds, then serves until stopped (shared with `keel serve`)."""
    from keel.components.serve.server import ServeSettings, bind, configure_logging, load_model_bundle, serve, serving_model

    configure_logging()
    settings = ServeSettings.from_env()  # bad settings fail before the (slower) model load
    bundle = load_model_bundle(model_uri, store, registry_name)
    # One OpenMP/BLAS thread per process, set after unpickling loaded the libraries and
    # before anything predicts. A single-row request gains nothing from threads, and
    # under load (or a pod's CPU limit) they fight for cores: with two threads on a busy
    # 2-core machine HistGradientBoosting's predict took 600 ms instead of 2. Parallelism
    # comes from --workers and replicas. It also makes forking workers safe: an OpenMP
    # thread pool does not survive fork (predict hangs in the children).
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    # KServe's default --model_name is "model"; a bundle knows its own name.
    name = model_name if model_name and model_name != "model" else bundle.model_name
    model = serving_model(name, bundle, settings)  # KeelModel, or ImageModel for an image bundle
    model.load()
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    # The socket already listens, so a client may connect from here on (tests and
    # scripts wait for this line instead of polling).
    print(f"keel-serve: listening on http://{bound_host}:{bound_port} model={name}", file=sys.stderr, flush=True)
    if on_ready is not None:
        on_ready(model, sock)
    serve(model, sock, settings, workers=workers, event_loop=event_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
