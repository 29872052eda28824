"""`make bench-images`: image sizes, build time cold and cached, and the serving image's start-to-ready time.

- size_base / size_serving: bytes as podman reports them, against the issue's
  budgets (base <= 1.2 GB, serving <= 1.5 GB without CUDA); ratio = size / budget.
- build_cached_base: a rebuild after a source change (the dependency layers
  come from the cache), against the cold build (--no-cache) of the same
  image measured in this run.
- serve_ready_container: `podman run` of keel-serving until the predictor
  listens, against the same predictor started as a process of this venv
  (median of 5 each, same model bundle).

Prints one BENCH line per figure and exits 0 whether or not targets are met.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import tempfile
import time

from report import bench  # tests/bench is this script's directory

from keel.components._common.images import SERVING_IMAGE
from keel.images.build import REPO, build
from keel.images.podman import CONTAINERS_CONF

GB = 1e9
TRIALS = 5


def ready_seconds(uri: str, container: bool) -> float:
    from testkit.predictor import start_predictor

    launcher = ("podman", "run", "--rm", "-i", "--network", "host", "-v", f"{uri}:/mnt/models:ro", SERVING_IMAGE, "python3")
    started = time.perf_counter()
    predictor = start_predictor("/mnt/models" if container else uri, env={"CONTAINERS_CONF": str(CONTAINERS_CONF)},
                                python=launcher if container else ())
    seconds = time.perf_counter() - started
    predictor.stop()
    return seconds


@contextlib.contextmanager
def source_changed():
    """A one-line source change the cached build must pick up (a module every image copies), undone afterwards."""
    marker = REPO / "components" / "_common" / "__init__.py"
    text = marker.read_text()
    marker.write_text(text + f"# bench-images {time.time()}\n")
    try:
        yield
    finally:
        marker.write_text(text)


def main() -> int:
    from testkit.models import make_bundle

    cold = {name: build(name, cache=False) for name in ("base", "serving")}
    with source_changed():
        cached = build("base")
    build("base")  # back to the committed source
    bench("size_base", cold["base"]["bytes"] / GB, "GB", "budget_base", 1.2, "<=1.0")
    bench("size_serving", cold["serving"]["bytes"] / GB, "GB", "budget_serving", 1.5, "<=1.0")
    bench("build_cold_serving", cold["serving"]["seconds"], "s", "build_cold_base", cold["base"]["seconds"], "report")
    bench("build_cached_base", cached["seconds"], "s", "build_cold_base", cold["base"]["seconds"], "<=0.25")

    with tempfile.TemporaryDirectory(prefix="keel-bench-images-") as tmp:
        uri = make_bundle(tmp, rows=2000, model_name="loans-bench")
        subprocess.run(["chmod", "-R", "a+rX", tmp], check=True)  # the container's uid 1000 reads the mount
        process = statistics.median(ready_seconds(uri, container=False) for _ in range(TRIALS))
        container = statistics.median(ready_seconds(uri, container=True) for _ in range(TRIALS))
    bench("serve_ready_container", container, "s", "serve_ready_process", process, "report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
