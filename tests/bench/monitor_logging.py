"""make bench-monitor, serving part: the same Keel predictor with payload logging on and off, same model,
same run.

Two `python -m keel.components.serve` processes on the server core, one with KEEL_SERVE_LOG_TO pointing at a
receiver, one without; the clients (and the receiver) on the other core. The receiver is the bench's bare one
(monitor_bare.py: keel-monitor's app and CloudEvent parsing, nothing written), so what is measured is what
logging costs the predictor: building the two CloudEvents per call, the bounded queue and the sending thread,
all inside the predictor's own process. Latency is single-row calls over one keep-alive connection, V1 and V2,
the two servers interleaved in rounds; throughput is wrk with 8 connections (serve.py's). Afterwards the
logged server's /metrics must show every call's events sent and none dropped, or the figure would flatter it.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import serve as s  # tests/bench is this script's directory
from report import bench as _bench

CALLS = 2_000  # per server, protocol and round split in s.ROUNDS


def _sink(core: int) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, str(s.HERE / "monitor_bare.py")], stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=s._pin(core))
    for line in process.stderr:
        if "listening on" in line:
            return process, line.split("listening on ")[1].split()[0]
    raise RuntimeError("the bench's receiver exited before listening")


def _latency(servers: dict, bodies: dict) -> dict:
    route = s.paths()
    clients = {label: s.Client(server) for label, server in servers.items()}
    samples = {(label, proto): [] for label in servers for proto in s.PROTOCOLS}
    try:
        for client in clients.values():  # warm both alike
            for proto in s.PROTOCOLS:
                for i in range(s.WARMUP_MIN_CALLS * 5):
                    client.post(route[proto], bodies[proto][i % s.ROWS])
        order = list(clients)
        for r in range(s.ROUNDS):
            for proto in s.PROTOCOLS:
                for label in (order if r % 2 == 0 else order[::-1]):
                    done = len(samples[(label, proto)])
                    for i in range(done, done + CALLS // s.ROUNDS):
                        samples[(label, proto)].append(clients[label].post(route[proto], bodies[proto][i % s.ROWS]))
    finally:
        for client in clients.values():
            client.close()
    return {key: s.percentiles_ms(values)[0] for key, values in samples.items()}


def _events(server) -> tuple[float, float]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    sent = sum(float(v) for v in re.findall(r"^keel_serve_payload_events_sent_total(?:\{[^}]*\})? (\S+)$", text, re.M))
    dropped = sum(float(v) for v in re.findall(r"^keel_serve_payload_events_dropped_total\{[^}]*\} (\S+)$", text, re.M))
    return sent, dropped


def main() -> int:
    client_core, server_core = s.pick_cores()
    os.environ.setdefault("KEEL_USER", "bench")
    from keel.components._common.registry.bundle import load_bundle_dir
    from testkit.models import make_bundle

    with tempfile.TemporaryDirectory(prefix="keel-bench-logging-") as tmp:
        work = Path(tmp)
        uri = make_bundle(str(work / "store"), family="gradient_boosting", rows=None, model_name=s.MODEL_NAME)
        _, rows, types = s.request_rows(load_bundle_dir(uri))
        bodies = {"v1": [s.v1_body(r) for r in rows], "v2": [s.v2_body(r, types) for r in rows]}
        sink, sink_url = _sink(client_core)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_SERVE_")}
        servers = {}
        try:
            for label, extra in (("off", {}), ("on", {"KEEL_SERVE_LOG_TO": sink_url})):
                port = s.free_port()
                servers[label] = s.Server(label, [sys.executable, "-m", "keel.components.serve", "--model_dir", uri,
                                                  "--model_name", s.MODEL_NAME, "--host", "127.0.0.1", "--http_port", str(port)],
                                          port, {**env, **extra}, work / f"{label}.log", server_core, {})
            os.sched_setaffinity(0, {client_core})
            for server in servers.values():
                server.wait_ready()
            p50 = _latency(servers, bodies)
            wrk = shutil.which("wrk")
            tput = s.throughput(wrk, client_core, servers, bodies, work) if wrk else None
            sent, dropped = _events(servers["on"])
        finally:
            for server in servers.values():
                server.stop()
            os.killpg(sink.pid, signal.SIGTERM)
            sink.wait(timeout=30)
    for proto in s.PROTOCOLS:
        _bench(f"monitor_logging_on_p50_ms_{proto}", p50[("on", proto)], "ms", "same_predictor_logging_off",
               p50[("off", proto)], "ratio <= 1.10")
        if tput:
            _bench(f"monitor_logging_on_rps_{proto}", tput[("on", proto)]["rps"], "req/s", "same_predictor_logging_off",
                   tput[("off", proto)]["rps"], "ratio >= 0.90")
    for proto in s.PROTOCOLS:
        line = (f"{proto}: p50 {p50[('on', proto)]:.2f} ms logged vs {p50[('off', proto)]:.2f} ms not "
                f"(ratio {p50[('on', proto)] / p50[('off', proto)]:.2f})")
        if tput:
            on, off = tput[("on", proto)]["rps"], tput[("off", proto)]["rps"]
            line += f"; {on:.0f} vs {off:.0f} req/s with 8 connections (ratio {on / off:.2f})"
        s._say(line)
    s._say(f"payload events: {sent:.0f} sent, {dropped:.0f} dropped by the logged predictor"
           + ("" if dropped == 0 else " (dropped events flatter its figures: the receiver did not keep up)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
