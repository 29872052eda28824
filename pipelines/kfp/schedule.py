"""`keel schedule`: a recurring run of the config's pipeline, on Kubeflow Pipelines or in Git.

Without --emit, a KFP recurring run is created through the API (same upload, experiment and
authentication as `keel submit`). KFP recurring runs are API objects, not manifests: the
ScheduledWorkflow the backend creates embeds an Argo Workflow only the backend's compiler
produces. So the GitOps form (--emit) is a `batch/v1` CronJob plus a ConfigMap holding the
config: the CronJob runs `keel submit --in-cluster --wait` on the schedule, authenticated by a
projected service-account token for audience pipelines.kubeflow.org.

Cron: KFP's has six fields, seconds first (`0 0 3 * * *` is 03:00 daily). A five-field
Kubernetes-style cron is accepted and gets "0 " prepended (same times, said on stdout); the
CronJob needs five fields, so --emit drops the seconds and refuses a non-zero seconds field.
"""

from __future__ import annotations

import argparse
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import yaml
from keel.components._common.errors import KeelError
from keel.pipelines.kfp.connection import (
    SA_TOKEN_AUDIENCE, SA_TOKEN_PATH, check_host, check_namespace, connect, connection_from_args, display_name, kfp_errors,
)
from keel.pipelines.kfp.submit import add_connection_flags, ensure_experiment, name_filter, upload_config_pipeline

MAX_CONCURRENCY = 10  # the KFP API server's limit for a recurring run
DEFAULT_SERVICE_ACCOUNT = "keel-pipeline-runner"
# Without catch-up a schedule missed by more than this (controller down, cluster upgrade) is skipped.
NO_CATCHUP_DEADLINE_S = 300
RUN_AS_USER = 1000  # the base image's non-root user (images/base/Dockerfile), as in manifests/

# (name, lowest, highest) of KFP's six fields.
_FIELDS = (("seconds", 0, 59), ("minutes", 0, 59), ("hours", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 6))
_MONTHS = {m: i for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)}
_DAYS = {d: i for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_MACROS = {"@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *", "@weekly": "0 0 0 * * 0",
           "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *", "@hourly": "0 0 * * * *"}
_CRON_EXAMPLE = "six fields, seconds first: 'S M H DoM Mon DoW', e.g. '0 0 3 * * *' for 03:00 UTC daily"


def add_schedule_parser(sub) -> None:
    parser = sub.add_parser(
        "schedule", help="run the config's pipeline on a cron schedule (a KFP recurring run, or a CronJob for GitOps)",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=(
            "Create a Kubeflow Pipelines recurring run of the config's pipeline (uploaded as `keel submit` does), or, with "
            "--emit, write a CronJob + ConfigMap manifest that runs `keel submit --in-cluster --wait` on the schedule, for "
            "a GitOps repository. KFP's cron has six fields, seconds first; a five-field cron gets seconds 0."),
        epilog="Examples:\n  keel schedule my.yaml --host http://localhost:8888 --cron '0 0 3 * * *'\n"
               "  keel schedule my.yaml --host https://kf.example.com/pipeline --cookie-file c.txt --namespace team-a \\\n"
               "      --cron '0 30 2 * * MON-FRI' --max-concurrency 2 --start 2025-01-01T00:00:00Z\n"
               "  keel schedule my.yaml --cron '0 3 * * *' --namespace team-a --emit deploy/keel-schedule.yaml")
    add_connection_flags(parser)
    parser.add_argument("--cron", required=True, metavar="EXPR", help="when to run, in UTC: " + _CRON_EXAMPLE + "; or @daily, @hourly...")
    parser.add_argument("--catchup", action=argparse.BooleanOptionalAction, default=False,
                        help="run the schedules missed while paused or down (default: --no-catchup, skip them)")
    parser.add_argument("--max-concurrency", type=int, default=1, metavar="N", help=f"runs at once, 1-{MAX_CONCURRENCY} (default: 1)")
    parser.add_argument("--start", metavar="TIME", help="ISO 8601 time of the first possible run (UTC when no offset is given)")
    parser.add_argument("--end", metavar="TIME", help="ISO 8601 time after which nothing runs")
    parser.add_argument("--run-name", metavar="NAME", help="the recurring run's name (default: the config name)")
    emit = parser.add_argument_group("GitOps (--emit)")
    emit.add_argument("--emit", metavar="PATH", help="write a CronJob + ConfigMap manifest here instead of calling the KFP API")
    emit.add_argument("--service-account", metavar="NAME", help=f"the CronJob's service account (default: {DEFAULT_SERVICE_ACCOUNT})")
    emit.add_argument("--timeout", type=float, metavar="SECONDS", help="the CronJob's `keel submit --wait --timeout` (default: 3600)")


def cmd_schedule(args: argparse.Namespace) -> int:
    from keel.pipelines.config import DEFAULT_CONFIG, load_config

    config_path = Path(args.config or DEFAULT_CONFIG)
    cfg = load_config(config_path)
    cron, note = kfp_cron(args.cron)
    if not 1 <= args.max_concurrency <= MAX_CONCURRENCY:
        raise KeelError(f"--max-concurrency: {args.max_concurrency}; KFP allows 1 to {MAX_CONCURRENCY}")
    experiment = display_name("--experiment", args.experiment or cfg.name)
    name = display_name("--run-name", args.run_name or cfg.name)
    if args.emit:
        return emit(args, cfg, config_path, cron, experiment, name)
    for flag, value in (("--service-account", args.service_account), ("--timeout", args.timeout)):
        if value is not None:
            raise KeelError(f"{flag}: only with --emit (it configures the CronJob)")
    start, end = iso_time(args.start, "--start"), iso_time(args.end, "--end")
    if start and end and end <= start:
        raise KeelError(f"--end: {args.end} is not after --start {args.start}")
    if note:
        print(f"keel: {note}")

    session = connect(connection_from_args(args))
    pipeline_id, version_id = upload_config_pipeline(session, cfg)
    experiment_id = ensure_experiment(session, experiment)
    with kfp_errors(session.host, f"creating recurring run {name!r}"):
        client = session.client
        # A second `keel schedule` of the same name would double every run.
        existing = client.list_recurring_runs(experiment_id=experiment_id, filter=name_filter(name), page_size=1).recurring_runs
        if existing:
            raise KeelError(f"--run-name: experiment {experiment!r} already has a recurring run {name!r} "
                            f"({session.url('recurringrun/details/' + existing[0].recurring_run_id)}); delete it or pick another name")
        recurring = client.create_recurring_run(
            experiment_id, name, cron_expression=cron, max_concurrency=args.max_concurrency, no_catchup=not args.catchup,
            start_time=_rfc3339(start), end_time=_rfc3339(end), params=cfg.pipeline_arguments(), pipeline_id=pipeline_id,
            version_id=version_id, enabled=True)
    print(f"keel: recurring run {name} at '{cron}' UTC (max concurrency {args.max_concurrency}, catch-up "
          f"{'on' if args.catchup else 'off'}) in experiment {experiment}: "
          f"{session.url('recurringrun/details/' + recurring.recurring_run_id)}")
    return 0


# --------------------------------------------------------------------------- cron and times


def kfp_cron(text: str) -> tuple[str, str | None]:
    """The six-field KFP cron for --cron, and a note when it was rewritten."""
    spec = " ".join(text.split())
    if spec.lower() in _MACROS:
        return _MACROS[spec.lower()], None
    fields = spec.split(" ") if spec else []
    note = None
    if len(fields) == 5:
        fields = ["0", *fields]
        note = f"--cron: '{spec}' has five fields; KFP's cron has seconds first, so it runs as '{' '.join(fields)}'"
    elif len(fields) != 6:
        raise KeelError(f"--cron: {text!r} has {len(fields)} fields; KFP's cron has {_CRON_EXAMPLE}")
    for field, limits in zip(fields, _FIELDS):
        _check_field(field, *limits)
    return " ".join(fields), note


def _check_field(field: str, name: str, low: int, high: int) -> None:
    names = _MONTHS if name == "month" else _DAYS if name == "day of week" else {}
    named = f", or names like {next(iter(names))}" if names else ""
    bad = KeelError(f"--cron: {field!r} is not a valid {name} field ({low}-{high}{named}, *, ?, ranges a-b, lists a,b and steps /n); "
                    f"KFP's cron has {_CRON_EXAMPLE}")
    for part in field.split(","):
        base, slash, step = part.partition("/")
        if slash and not (step.isdigit() and int(step) > 0):
            raise bad
        if base in ("*", "?"):
            continue
        bounds = [names.get(v.upper(), int(v) if v.isdigit() else None) for v in base.split("-")]
        if len(bounds) > 2 or any(b is None or not low <= b <= high for b in bounds) or bounds != sorted(bounds):
            raise bad


def kubernetes_cron(cron: str) -> str:
    """The five-field CronJob schedule for a six-field KFP cron (a CronJob has no seconds)."""
    seconds, *rest = cron.split(" ")
    if seconds != "0":
        raise KeelError(f"--cron: a Kubernetes CronJob cannot run at second {seconds!r}; with --emit use seconds 0 ('0 {' '.join(rest)}')")
    return " ".join(rest)


def iso_time(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise KeelError(f"{flag}: {text!r} is not an ISO 8601 time, e.g. 2025-01-31T02:00:00Z") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _rfc3339(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


# --------------------------------------------------------------------------- --emit


def emit(args: argparse.Namespace, cfg, config_path: Path, cron: str, experiment: str, name: str) -> int:
    """Writes the CronJob + ConfigMap for `keel submit --in-cluster --wait` on the schedule (atomically)."""
    from keel.components._common.k8s_schema import check_manifest

    for flag, value in (("--token-file", args.token_file), ("--cookie-file", args.cookie_file), ("--ca-cert", args.ca_cert),
                        ("--start", args.start), ("--end", args.end)):
        if value is not None:
            raise KeelError(f"{flag}: not with --emit: the CronJob authenticates with its projected service-account token "
                            "and runs from its schedule alone")
    check_namespace(args.namespace)
    timeout = 3600.0 if args.timeout is None else args.timeout
    if timeout <= 0:
        raise KeelError(f"--timeout: {timeout:g}; give the seconds to wait, above 0")
    host = check_host(args.host) if args.host else None
    schedule = kubernetes_cron(cron)
    docs = cronjob_manifest(cfg, config_path.read_text(encoding="utf-8"), name=name, schedule=schedule, kfp_cron=cron,
                            experiment=experiment, namespace=args.namespace, host=host, catchup=args.catchup,
                            max_concurrency=args.max_concurrency, timeout=timeout,
                            service_account=args.service_account or DEFAULT_SERVICE_ACCOUNT)
    for doc in docs:
        check_manifest(doc)
    text = _header(docs[1], args.max_concurrency, args.catchup) + yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, width=120)
    _write_atomically(Path(args.emit), text)
    print(f"keel: wrote {args.emit}: CronJob {docs[1]['metadata']['name']} ('{schedule}' UTC) and ConfigMap "
          f"{docs[0]['metadata']['name']}; apply with kubectl apply -f {args.emit}")
    return 0


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"keel-{slug}"[:52].rstrip("-")  # a CronJob's name leaves 11 characters for its Jobs' suffix


def cronjob_manifest(cfg, config_text: str, *, name: str, schedule: str, kfp_cron: str, experiment: str, namespace: str | None,
                     host: str | None, catchup: bool, max_concurrency: int, timeout: float, service_account: str) -> list[dict]:
    """[ConfigMap, CronJob]: the config, and a Job that submits it and follows the run."""
    from keel.components._common.images import BASE_IMAGE

    job = _slug(name)
    config_key = f"{job}.yaml"
    labels = {"app.kubernetes.io/name": "keel", "app.kubernetes.io/component": "schedule", "keel.ml/schedule": job}
    meta = {"name": job, "labels": labels, **({"namespace": namespace} if namespace else {})}
    command = ["python", "-m", "keel.pipelines", "submit", f"/config/{config_key}", "--in-cluster", "--experiment", experiment,
               "--wait", "--timeout", f"{timeout:g}"]
    command += ["--host", host] if host else []
    command += ["--namespace", namespace] if namespace else []
    container = {
        "name": "submit", "image": BASE_IMAGE, "command": command,
        # HOME: the image's home is on the read-only root; libraries imported by the compile want a writable one.
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True},
        "volumeMounts": [{"name": "config", "mountPath": "/config", "readOnly": True},
                         {"name": "kfp-token", "mountPath": os.path.dirname(SA_TOKEN_PATH), "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {
        "restartPolicy": "Never",
        "serviceAccountName": service_account,
        # Only the audience-bound KFP token below is mounted, not a Kubernetes API token.
        "automountServiceAccountToken": False,
        # fsGroup: the projected token is readable by the pod's group, whatever the image's uid.
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "fsGroup": RUN_AS_USER,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": f"{job}-config"}},
            {"name": "kfp-token", "projected": {"sources": [{"serviceAccountToken": {
                "path": os.path.basename(SA_TOKEN_PATH), "audience": SA_TOKEN_AUDIENCE, "expirationSeconds": 7200}}]}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    spec = {
        "schedule": schedule,
        "timeZone": "Etc/UTC",  # KFP's cron is UTC too
        # A CronJob can only forbid overlapping runs or allow any number of them.
        "concurrencyPolicy": "Forbid" if max_concurrency == 1 else "Allow",
        **({} if catchup else {"startingDeadlineSeconds": NO_CATCHUP_DEADLINE_S}),
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": {"metadata": {"labels": labels}, "spec": {
            "backoffLimit": 0,  # a retried Job would submit a second run
            "activeDeadlineSeconds": int(timeout) + 600,  # --wait's timeout plus the compile and upload
            "template": {"metadata": {"labels": labels}, "spec": pod}}},
    }
    annotations = {"keel.ml/kfp-cron": kfp_cron, "keel.ml/config": cfg.name,
                   "keel.ml/max-concurrency": str(max_concurrency) if max_concurrency == 1 else
                   f"{max_concurrency} (not enforced: concurrencyPolicy Allow runs any number at once)"}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {**meta, "name": f"{job}-config"}, "data": {config_key: config_text}}
    cron_job = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {**meta, "annotations": annotations}, "spec": spec}
    return [config_map, cron_job]


def _header(cron_job: dict, max_concurrency: int, catchup: bool) -> str:
    spec = cron_job["spec"]
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    lines = [
        "Generated by `keel schedule --emit`: runs `keel submit --in-cluster --wait` on a schedule.",
        f"Schedule '{spec['schedule']}' UTC (KFP cron '{cron_job['metadata']['annotations']['keel.ml/kfp-cron']}').",
        f"Needs ServiceAccount {pod['serviceAccountName']} allowed to create KFP runs (multi-user Kubeflow: a RoleBinding",
        "to ClusterRole kubeflow-pipelines-edit in the profile namespace) and the image " + pod["containers"][0]["image"] + ".",
        f"No token or secret is stored here: the pod gets a projected service-account token for audience {SA_TOKEN_AUDIENCE}.",
        "With Istio sidecar injection, use native sidecars so that the Job can complete.",
    ]
    if max_concurrency > 1:
        lines.append(f"max concurrency {max_concurrency} is NOT enforced: a CronJob only forbids (1) or allows any overlap.")
    lines.append("Catch-up: a CronJob starts at most the latest missed schedule, late; it never backfills each one." if catchup else
                 f"No catch-up: a schedule missed by more than {NO_CATCHUP_DEADLINE_S} s is skipped.")
    return "".join(f"# {line}\n" for line in lines)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the config) as literal blocks, readable in a diff; no &anchors for shared labels."""

    def ignore_aliases(self, data) -> bool:
        return True


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def _write_atomically(path: Path, text: str) -> None:
    if not path.parent.is_dir():
        raise KeelError(f"--emit: {path.parent} is not a directory")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise KeelError(f"--emit: cannot write {path}: {err.strerror or err}") from None
