"""make bench-monitor: the payload receiver's throughput with durable writes, beside the same app answering
without writing, same machine, same run.

Both servers are pinned to core 0 and wrk (8 connections) to core 1. Every request is a distinct KServe-shaped
binary CloudEvent (request and response halves alternate, one ce-id per pair, a one-row V1 loans body), so the
durable receiver really appends, fsyncs (group commit), joins and writes Parquet. Rounds are interleaved.
The durable server's store is checked afterwards: every acknowledged pair must be there once.

Then the serving part (monitor_logging.py: the predictor with payload logging on vs off) and the drift part
(monitor_drift.py: Keel's monitoring steps on a million logged rows against Evidently on the full frames).
Prints BENCH lines (stdout) and a table (stderr); exits 0 whether or not a target is met.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from report import bench as _bench  # tests/bench is this script's directory

HERE = Path(__file__).resolve().parent
ROUNDS, SECONDS, CONNECTIONS = 3, 5, 8
BODY = {"instances": [{"loan_amount": 12000, "term": 36, "interest_rate": 11.2, "homeownership": "RENT",
                       "annual_income": 65000, "debt_to_income": 18.4, "emp_length": 4}]}
RESPONSE = {"predictions": [0], "probabilities": [{"0": 0.81, "1": 0.19}]}


def start(command: list[str], env: dict) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(["taskset", "-c", "0", *command], stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    for line in process.stderr:
        if "listening on" in line:
            return process, line.split("listening on ")[1].split()[0]
    raise RuntimeError(f"{command} exited before listening")


def lua(path: Path, thread_tag: str) -> None:
    body, response = json.dumps(BODY), json.dumps(RESPONSE)
    path.write_text(f"""
local n = 0
request = function()
  n = n + 1
  local pair = math.floor((n + 1) / 2)
  local kind = (n % 2 == 1) and "request" or "response"
  local body = (n % 2 == 1) and [[{body}]] or [[{response}]]
  local headers = {{}}
  headers["ce-specversion"] = "1.0"
  headers["ce-id"] = "{thread_tag}-" .. tostring(pair)
  headers["ce-source"] = "bench"
  headers["ce-type"] = "org.kubeflow.serving.inference." .. kind
  headers["ce-time"] = "2026-07-01T10:15:00Z"
  headers["content-type"] = "application/json"
  return wrk.format("POST", "/?model=loans-bench&version=1", headers, body)
end
""")


def run_wrk(url: str, script: Path) -> float:
    done = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "-s", str(script), url],
                          capture_output=True, text=True, timeout=SECONDS * 4 + 30)
    out = done.stdout
    if done.returncode != 0 or done.stderr.strip():
        raise RuntimeError(f"wrk failed on {url}:\n{out}\n{done.stderr}")
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"non-2xx answers from {url} (the bench is broken):\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> int:
    if not shutil.which("wrk") or not shutil.which("taskset"):
        print("bench-monitor needs Debian's wrk (apt-get install wrk); nothing measured", file=sys.stderr)
        return 0
    work = Path(tempfile.mkdtemp(prefix="keel-bench-monitor-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    durable, durable_url = start([sys.executable, "-m", "keel.components.monitor", "--port", "0", "--store", str(work / "store"),
                                  "--wal-dir", str(work / "wal"), "--batch-rows", "10000"], env)
    bare, bare_url = start([sys.executable, str(HERE / "monitor_bare.py")], env)
    figures = {"durable": [], "bare": []}
    try:
        for r in range(ROUNDS):
            for label, url in (("durable", durable_url), ("bare", bare_url)):
                script = work / f"{label}-{r}.lua"
                lua(script, f"{label}{r}")
                figures[label].append(run_wrk(url, script))
    finally:
        for process in (durable, bare):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=120)
    import statistics

    import pyarrow.dataset as ds

    table = ds.dataset(str(work / "store" / "monitoring"), format="parquet", partitioning="hive").to_table(columns=["event_id", "status"])
    ids = table.column("event_id").to_pylist()
    duplicates = len(ids) - len(set(ids))
    durable_rps, bare_rps = statistics.median(figures["durable"]), statistics.median(figures["bare"])
    _bench("monitor_receiver_events_per_s", durable_rps, "events/s", "same_app_without_writing", bare_rps, "informational (report the ratio)")
    print(f"durable receiver: {durable_rps:.0f} events/s (rounds {', '.join(f'{v:.0f}' for v in figures['durable'])}); "
          f"without writing: {bare_rps:.0f} events/s (rounds {', '.join(f'{v:.0f}' for v in figures['bare'])}); "
          f"ratio {durable_rps / bare_rps:.2f}; stored rows {len(ids)} ({duplicates} duplicate ids)", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    import monitor_drift  # tests/bench is this script's directory
    import monitor_logging

    return monitor_logging.main() or monitor_drift.main()


if __name__ == "__main__":
    sys.exit(main())
