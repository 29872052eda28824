"""`keel submit`: compile the config's pipeline and run it on a Kubeflow Pipelines cluster.

The pipeline is compiled by `keel compile`'s own code (the config's values become the
parameter defaults), uploaded once under a stable name (`keel-training`) with one version per
distinct compiled document (`<keel version>-<sha256[:12]>`), and run with the config's
sections as arguments through kfp.Client. `keel schedule` (keel.pipelines.kfp.schedule) uses
the connection, upload and error handling below.

kfp.Client, left alone, retries its health check 5 times 5 s apart logging a traceback each
time, waits forever on a host that accepts a connection and never answers, follows a login
redirect to an HTML page it then "parses", and reads and writes ~/.config/kfp. `_KeelClient`
bounds all of that, so every network or auth failure is one `keel: error:` line naming the
host within about 15 s.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from keel.components._common.errors import KeelError
from keel.pipelines.kfp.connection import (
    IN_CLUSTER_HOST, SA_TOKEN_AUDIENCE, SA_TOKEN_PATH, Session, _transient, as_keel_error, connect, connection_from_args,
    display_name, kfp_errors, one_line, poll_interval,
)


EXIT_RUN_FAILED = 1
EXIT_TIMEOUT = 124  # like timeout(1): the run goes on in the cluster, its outcome is unknown
# SKIPPED is terminal but trained nothing, so automation must see it as a failure.
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")

TRANSIENT_POLL_ERRORS = 3  # a restarting API server during a long --wait is not a failed run


# --------------------------------------------------------------------------- command line


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """The config positional and the flags that say where and as whom to talk to KFP (submit and schedule)."""
    parser.add_argument("config", nargs="?", help="pipeline config YAML (default: the embedded default config)")
    group = parser.add_argument_group("cluster and authentication")
    group.add_argument("--host", metavar="URL", help="KFP API endpoint, e.g. https://kf.example.com/pipeline "
                       f"(default: $KF_PIPELINES_ENDPOINT; in a pod with a pipelines token: {IN_CLUSTER_HOST})")
    group.add_argument("--namespace", metavar="NS", help="Kubeflow profile namespace (multi-user KFP)")
    group.add_argument("--experiment", metavar="NAME", help="experiment to run in, created if missing (default: the config name)")
    group.add_argument("--token-file", metavar="PATH", help="file holding a bearer token (default: $KF_PIPELINES_TOKEN); "
                       "a token is never a command-line value")
    group.add_argument("--cookie-file", metavar="PATH", help="cookies for a Dex/oauth2-proxy login: `name=value` lines "
                       "(e.g. authservice_session=...) or a Netscape cookie jar (curl -c)")
    group.add_argument("--in-cluster", action="store_true", help="authenticate with this pod's projected service-account "
                       f"token ({SA_TOKEN_PATH} or $KF_PIPELINES_SA_TOKEN_PATH, audience {SA_TOKEN_AUDIENCE}); "
                       "automatic without --host when that file exists")
    group.add_argument("--ca-cert", metavar="PATH", help="CA bundle for an endpoint whose TLS certificate a private CA signed")


def add_parser(sub) -> None:
    """Adds `submit` to the `keel` subcommands (dispatch: cmd_submit)."""
    sub_ = sub.add_parser(
        "submit", help="compile the config's pipeline and run it on a Kubeflow Pipelines cluster",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=(
            "Compile the config's pipeline (training, or training-tuned with a `tune` section) with its values as "
            "defaults, upload it as keel-<pipeline> (a new version only when the compiled pipeline changed) and start "
            "a run with the config's sections as arguments. Prints the run's URL."),
        epilog="Examples:\n  keel submit pipelines/configs/default.yaml --host http://localhost:8888\n"
               "  keel submit my.yaml --host https://kf.example.com/pipeline --cookie-file cookies.txt --namespace team-a --wait\n"
               "  keel submit my.yaml --in-cluster --wait --timeout 7200   # inside a pod\n"
               "Exit status with --wait: 0 succeeded, 1 failed/canceled/skipped, 124 still running at --timeout; "
               "2 for a usage, network or authentication error.")
    add_connection_flags(sub_)
    sub_.add_argument("--run-name", metavar="NAME", help="run name (default: <config name>-<UTC time>)")
    sub_.add_argument("--wait", action="store_true", help="follow the run until it ends, one line per state change")
    sub_.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                      help="with --wait: stop waiting after this long (default: 3600)")


def cmd_submit(args: argparse.Namespace) -> int:
    from keel.pipelines.config import DEFAULT_CONFIG, load_config

    cfg = load_config(args.config or DEFAULT_CONFIG)
    conn = connection_from_args(args)
    if args.timeout <= 0:
        raise KeelError(f"--timeout: {args.timeout:g}; give the seconds to wait, above 0")
    poll = poll_interval()
    experiment = display_name("--experiment", args.experiment or cfg.name)
    run_name = display_name("--run-name", args.run_name or f"{cfg.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}")

    session = connect(conn)  # before compiling: a wrong host or token fails in a second
    pipeline_id, version_id = upload_config_pipeline(session, cfg)
    experiment_id = ensure_experiment(session, experiment)
    with kfp_errors(session.host, f"starting run {run_name!r}"):
        run = session.client.run_pipeline(experiment_id, run_name, params=cfg.pipeline_arguments(),
                                          pipeline_id=pipeline_id, version_id=version_id)
    url = session.url(f"runs/details/{run.run_id}")
    print(f"keel: run {run_name} started in experiment {experiment}: {url}", flush=True)
    return wait_for_run(session, run.run_id, run_name, args.timeout, poll) if args.wait else 0


# --------------------------------------------------------------------------- flags -> connection


@dataclasses.dataclass(frozen=True)
class Compiled:
    name: str  # training or training-tuned
    path: Path
    digest: str

    @property
    def upload_name(self) -> str:
        return f"keel-{self.name}"

    @property
    def version_name(self) -> str:
        from keel.components._common.images import KEEL_VERSION

        return f"{KEEL_VERSION}-{self.digest[:12]}"


def compile_config_pipeline(cfg, out_dir: str | Path) -> Compiled:
    """cfg's pipeline, compiled exactly as `keel compile CONFIG` writes it."""
    import yaml
    from keel.pipelines.kfp.compile import compile_config

    path = {p.stem: p for p in compile_config(out_dir, cfg)}[cfg.pipeline_name]
    # kfp's header comment lists the parameter defaults in hash-seed order, so one config compiles to different
    # bytes in two processes: the version name hashes the parsed document, identical whenever the pipeline is.
    doc = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))  # the platform spec (Secrets, node pools) is a second document
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return Compiled(cfg.pipeline_name, path, digest)


def name_filter(name: str) -> str:
    """kfp.Client.get_pipeline_id's filter: display_name EQUALS name."""
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def upload_config_pipeline(session: Session, cfg) -> tuple[str, str]:
    """(pipeline id, version id) of cfg's compiled pipeline on the cluster, uploading only what is not there yet."""
    with tempfile.TemporaryDirectory(prefix="keel-submit-") as tmp:
        compiled = compile_config_pipeline(cfg, tmp)
        with kfp_errors(session.host, f"uploading pipeline {compiled.upload_name}"):
            pipeline_id, version_id, how = _ensure_version(session, compiled)
    print(f"keel: pipeline {compiled.upload_name} version {compiled.version_name} ({how}) at {session.host}", flush=True)
    return pipeline_id, version_id


def _ensure_version(session: Session, compiled: Compiled) -> tuple[str, str, str]:
    client = session.client
    # list_pipelines rather than get_pipeline_id: only it takes the namespace a multi-user upload lands in.
    found = client.list_pipelines(filter=name_filter(compiled.upload_name), namespace=session.namespace, page_size=2).pipelines or []
    if len(found) > 1:
        raise KeelError(f"{session.host} has {len(found)} pipelines named {compiled.upload_name}; delete the extra ones")
    description = f"Keel {compiled.name} pipeline, sha256 {compiled.digest}"
    if found:
        pipeline_id = found[0].pipeline_id
        versions = client.list_pipeline_versions(pipeline_id, filter=name_filter(compiled.version_name), page_size=1).pipeline_versions
        if versions:
            return pipeline_id, versions[0].pipeline_version_id, "already uploaded"
        how = "new version"
    else:
        # The upload's own first version is named after the pipeline; every run refers to a content-named version.
        pipeline_id = client.upload_pipeline(str(compiled.path), compiled.upload_name, description=description,
                                             namespace=session.namespace).pipeline_id
        how = "new pipeline"
    version = client.upload_pipeline_version(str(compiled.path), compiled.version_name, pipeline_id=pipeline_id, description=description)
    return pipeline_id, version.pipeline_version_id, how


def ensure_experiment(session: Session, name: str) -> str:
    with kfp_errors(session.host, f"finding or creating experiment {name!r}"):
        return session.client.create_experiment(name, namespace=session.namespace).experiment_id  # kfp: get by name, else create


def wait_for_run(session: Session, run_id: str, name: str, timeout: float, poll: float) -> int:
    """Follows the run to a terminal state: one line per run or task state change."""
    started = time.monotonic()
    url = session.url(f"runs/details/{run_id}")
    state, seen, failures = None, {}, 0
    while True:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                run = session.client.get_run(run_id)
            failures = 0
        except Exception as err:
            failures += 1
            if not _transient(err) or failures > TRANSIENT_POLL_ERRORS:
                raise as_keel_error(err, session.host, f"following run {name!r}") from None
            time.sleep(poll)
            continue
        if (run.state or "PENDING") != state:
            state = run.state or "PENDING"
            if state not in TERMINAL_STATES:  # the end gets its own line below
                print(f"keel: run {name}: {state} ({_duration(time.monotonic() - started)})", flush=True)
        for task in (run.run_details.task_details if run.run_details else None) or []:
            key = task.task_id or task.display_name
            if task.display_name and task.state and seen.get(key) != task.state:
                seen[key] = task.state
                print(f"keel:   {task.display_name}: {task.state}", flush=True)
        if state in TERMINAL_STATES:
            return _finished(run, name, state, url, time.monotonic() - started)
        left = started + timeout - time.monotonic()
        if left <= 0:
            print(f"keel: error: run {name} is still {state} after --timeout {timeout:g} s; it goes on in the cluster: {url}",
                  file=sys.stderr)
            return EXIT_TIMEOUT
        time.sleep(min(poll, left))


def _finished(run, name: str, state: str, url: str, elapsed: float) -> int:
    if state == "SUCCEEDED":
        print(f"keel: run {name} SUCCEEDED in {_duration(elapsed)}: {url}")
        return 0
    error = one_line(run.error.message) if run.error is not None and run.error.message else ""
    print(f"keel: error: run {name} {state}{': ' + error if error else ''}; details: {url}", file=sys.stderr)
    return EXIT_RUN_FAILED


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
