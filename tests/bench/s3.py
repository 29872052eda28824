"""S3 throughput of Keel's storage against the raw minio client, on nanio; `.venv/bin/python tests/bench/s3.py`.

A 500 MB bundle (4 files of 125 MB, seeded random bytes) goes up and comes
down, interleaved and repeated (median of REPEATS):

- `s3_upload_500mb`: storage.upload_dir (one XXH3-128 pass per file, then
  one multipart upload per file straight to its final key, parts in
  parallel, and a HEAD to check size and recorded checksum) against
  `Minio.fput_object` per file with the client's defaults;
- `s3_download_500mb`: storage.download_dir (one GET per file, xxh3 checked
  as it streams, staging directory renamed into place) against
  `Minio.fget_object` per file.

nanio is started the way the test fixtures start it (testing.start_nanio).
Prints one BENCH line per figure, exits 0 whatever the result, and removes
the server and its files.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from report import bench  # tests/bench is this script's directory

FILES = 4
FILE_BYTES = 125_000_000
REPEATS = 3
SEED = 0


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    from keel.components._common import storage
    from testkit import s3 as testing
    from minio import Minio

    work = Path(tempfile.mkdtemp(prefix="keel-bench-s3-"))
    proc = None
    try:
        proc, endpoint, why = testing.start_nanio(work)
        if proc is None:
            print(f"bench-s3: the S3 server did not start: {why}", file=sys.stderr)
            return
        os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": testing.ACCESS_KEY,
                           "AWS_SECRET_ACCESS_KEY": testing.SECRET_KEY, "AWS_REGION": "us-east-1"})
        raw = Minio(endpoint.split("://", 1)[1], access_key=testing.ACCESS_KEY, secret_key=testing.SECRET_KEY,
                    region="us-east-1", secure=False)  # what a user of the plain client gets
        bucket = "keel-bench"
        raw.make_bucket(bucket)
        bundle = work / "bundle"
        bundle.mkdir()
        rng = np.random.default_rng(SEED)
        for i in range(FILES):
            (bundle / f"part-{i}.bin").write_bytes(rng.bytes(FILE_BYTES))
        names = sorted(p.name for p in bundle.iterdir())
        megabytes = FILES * FILE_BYTES / 1e6

        def raw_up(prefix):
            for name in names:
                raw.fput_object(bucket, f"{prefix}/{name}", str(bundle / name))

        def raw_down(prefix, target):
            for name in names:
                raw.fget_object(bucket, f"{prefix}/{name}", str(target / name))

        def clear():
            for obj in raw.list_objects(bucket, recursive=True):
                raw.remove_object(bucket, obj.object_name)
            for path in work.glob("out-*"):
                shutil.rmtree(path)

        times: dict[str, list[float]] = {k: [] for k in ("raw_up", "keel_up", "raw_down", "keel_down")}
        for rep in range(REPEATS):
            # Alternate which side goes first, so neither always meets a warmer server or page cache.
            ups = [("raw_up", lambda: raw_up("raw")), ("keel_up", lambda: storage.upload_dir(bundle, f"s3://{bucket}/keel"))]
            for key, fn in ups if rep % 2 == 0 else ups[::-1]:
                times[key].append(timed(fn))
            downs = [("raw_down", lambda: raw_down("raw", work / "out-raw")),
                     ("keel_down", lambda: storage.download_dir(f"s3://{bucket}/keel", work / "out-keel"))]
            (work / "out-raw").mkdir()
            for key, fn in downs if rep % 2 == 0 else downs[::-1]:
                times[key].append(timed(fn))
            clear()
            print(f"# repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)

        med = {k: statistics.median(v) for k, v in times.items()}
        bench("s3_upload_500mb", megabytes / med["keel_up"], "MB/s", "minio_fput_object", megabytes / med["raw_up"], ">=0.9")
        bench("s3_download_500mb", megabytes / med["keel_down"], "MB/s", "minio_fget_object", megabytes / med["raw_down"],
              ">=0.9")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - a server that ignores SIGTERM is killed
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
