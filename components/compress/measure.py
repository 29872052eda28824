"""The trade-off of every variant: accuracy, CPU latency and throughput with a fixed thread count, file size."""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path

import numpy as np

from keel.components._common.deep_model.runtime import RUNTIMES, Runtime

WARMUP_CALLS = 3
# Timing runs round-robin over the variants (one batch call and a few batch-1 calls
# each, per round), so load from other processes that comes and goes hits every
# variant alike instead of whichever was measured at that moment. Throughput is the
# best round (timeit's advice: the minimum is the least disturbed); p50 is a median.
ROUNDS = 5


def open_runtime(fmt: str, path: Path, info: dict, threads: int) -> Runtime:
    """runtime.RUNTIMES[fmt] on `threads` CPU threads (torch's are set by `torch_threads`)."""
    cls = RUNTIMES[fmt]
    if cls.fmt == "onnx":
        return cls(path, info, threads=threads)
    runtime = cls(path, info)
    if cls.fmt == "tflite":
        from keel.components._common.tf_import import tensorflow

        tf = tensorflow()

        # TFLiteRuntime lets TFLite pick its thread count; a measurement needs a fixed one.
        runtime.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
        runtime._input = runtime.interpreter.get_input_details()[0]
        runtime._output = runtime.interpreter.get_output_details()[0]
    return runtime


@contextlib.contextmanager
def torch_threads(threads: int):
    """torch's intra-op threads for the block, restored afterwards (they are process-wide)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def accuracy(runtime: Runtime, pixels: np.ndarray, labels: np.ndarray, batch: int) -> float:
    """Top-1 accuracy, scored in batches of `batch` (dynamic int8 scales activations per call)."""
    predictions = np.concatenate([runtime.predict(pixels[i:i + batch]).argmax(axis=1) for i in range(0, len(pixels), batch)])
    return float((predictions == labels).mean())


def timing(runtimes: dict[str, Runtime], pixels: np.ndarray, batch: int, runs: int) -> dict[str, dict]:
    """Per runtime: p50 ms of `runs` batch-1 calls and images/s of a `batch`-image call, timed round-robin."""
    one, block = pixels[:1], _batch_of(pixels, batch)
    for runtime in runtimes.values():
        for _ in range(WARMUP_CALLS):
            runtime.predict(one)
        runtime.predict(block)
    latencies = {name: [] for name in runtimes}
    seconds = {name: [] for name in runtimes}
    per_round = -(-runs // ROUNDS)
    for _ in range(ROUNDS):
        for name, runtime in runtimes.items():
            for _ in range(per_round):
                started = time.perf_counter()
                runtime.predict(one)
                latencies[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            runtime.predict(block)
            seconds[name].append(time.perf_counter() - started)
    return {name: {"latency_p50_ms": 1000 * statistics.median(latencies[name]), "images_per_second": batch / min(seconds[name])}
            for name in runtimes}


def _batch_of(pixels: np.ndarray, batch: int) -> np.ndarray:
    # A test set smaller than the batch is repeated: the figure is about batch size, not data.
    reps = -(-batch // len(pixels))
    return np.ascontiguousarray(np.concatenate([pixels] * reps)[:batch]) if reps > 1 else pixels[:batch]


def compare(rows: list[dict], reference: str) -> list[dict]:
    """Adds accuracy_drop (reference - variant, 0..1), speedup and size_ratio against the `reference` row."""
    base = next(r for r in rows if r["variant"] == reference)
    for row in rows:
        row["accuracy_drop"] = base["accuracy"] - row["accuracy"]
        row["speedup"] = row["images_per_second"] / base["images_per_second"]
        row["size_ratio"] = row["size_bytes"] / base["size_bytes"]
    return rows


def table_markdown(rows: list[dict], served: str, batch: int, threads: int) -> str:
    """The trade-off as a Markdown table for the model card; the served variant is marked."""
    lines = [f"| variant | accuracy | vs fp32 (points) | p50 batch 1 (ms) | img/s (batch {batch}) | speedup | size (MB) | size ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = f"**{r['variant']}** (served)" if r["variant"] == served else r["variant"]
        lines.append(f"| {name} | {100 * r['accuracy']:.2f}% | {-100 * r['accuracy_drop']:+.2f} | {r['latency_p50_ms']:.2f} "
                     f"| {r['images_per_second']:.0f} | {r['speedup']:.2f}x | {r['size_bytes'] / 1e6:.3f} | {r['size_ratio']:.2f} |")
    notes = [f"- {r['variant']}: {r['note']}" for r in rows if r.get("note")]
    footer = f"\nCPU, {threads} thread(s); accuracy on {rows[0]['test_images']} test images; drop is against fp32 {rows[0]['variant']}."
    return "\n".join(lines) + "\n" + footer + ("\n\n" + "\n".join(notes) if notes else "") + "\n"
