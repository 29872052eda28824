"""`keel models|approve|reject|deploy|rollback`: registered versions through their stages.

A version moves candidate -> approved -> production -> archived
(keel.components._common.registry.stages). Registration records its automatic gates;
`approve` and `reject` record a named person's decision; `deploy` applies (or,
with --emit, writes for GitOps) the InferenceService of an approved version,
which then becomes the production one; `rollback` returns production to the
version that served before. Every move is an event in the registry's stage
log, with who, when and why, which `keel lineage` shows.

cli.py wires these in with `models_cli.add_parsers(sub)` and `COMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import os
import re

from keel.components._common.config import NAME_PATTERN
from keel.components._common.errors import KeelError

# Shown first when a bundle has them; any other metrics fill up to MAIN_METRICS.
PREFERRED_METRICS = ("roc_auc", "accuracy", "f1", "macro_f1", "r2", "rmse", "mae", "top1_accuracy")
MAIN_METRICS = 3
_MODEL_NAME = re.compile(NAME_PATTERN)  # registry.model_name's pattern


def add_parsers(sub) -> None:
    """Adds `models`, `approve`, `reject`, `deploy` and `rollback` to the `keel` subcommands."""
    models = sub.add_parser("models", help="registered versions: stage, metrics, gates, last decision", description=(
        "One line per registered version: its stage (candidate, approved, production, archived), when it was registered, "
        "its main metrics, the automatic gates recorded at registration and the last stage event (who, when)."))
    models.add_argument("model", nargs="?", metavar="MODEL", help="only this model (default: every model in the store)")
    models.add_argument("--json", action="store_true", help="one JSON record per version")

    approve = sub.add_parser("approve", help="approve a candidate version (its automatic gates must have passed)", description=(
        "Record a person's approval of a candidate version: who, why and when go into the registry's stage log. A version "
        "whose automatic gates (metrics, fairness, data validation) failed cannot be approved."))
    reject = sub.add_parser("reject", help="reject a candidate (or withdraw an approved) version: it is archived")
    for verb in (approve, reject):
        verb.add_argument("model_version", metavar="MODEL_VERSION", help="latest (the newest version in the store, any model), v<N>, NAME or NAME:v<N>")
        verb.add_argument("--by", required=True, metavar="NAME", help="who decides (recorded)")
        verb.add_argument("--reason", required=True, metavar="TEXT", help="why, in one line (recorded)")

    deploy = sub.add_parser("deploy", help="deploy an approved version: apply its InferenceService, or --emit it", description=(
        "Render the InferenceService of an approved version with the config's deploy section and apply it to the "
        "configured cluster (in-cluster service account, KUBECONFIG or ~/.kube/config; this explicit command does not "
        "need deploy.enabled), or write it to PATH with --emit for GitOps. Either way the version becomes the production "
        "one and the previous production version is archived."))
    deploy.add_argument("model_version", metavar="MODEL_VERSION", help="latest (the newest version in the store, any model), v<N>, NAME or NAME:v<N>")

    rollback = sub.add_parser("rollback", help="return production to the previous production version", description=(
        "Re-apply (or --emit) the InferenceService of the version that was in production before the current one; the "
        "current one is archived. Refused when no earlier version served."))
    rollback.add_argument("model", metavar="MODEL", help="the registered model name")
    for verb in (deploy, rollback):
        verb.add_argument("--emit", metavar="PATH", help="write the InferenceService YAML here instead of applying it")
        verb.add_argument("--by", metavar="NAME", help="who deploys (default: $KEEL_USER or the OS user)")
        verb.add_argument("--reason", metavar="TEXT", help="why, in one line (recorded)")
    for verb in (models, approve, reject, deploy, rollback):
        verb.add_argument("--store", metavar="URI", help="registry store (default: the config's registry.store)")
        verb.add_argument("--config", metavar="PATH", help="pipeline config (registry and deploy sections; default: the embedded default)")


def _config(args: argparse.Namespace):
    from keel.pipelines.config import DEFAULT_CONFIG, load_config

    return load_config(args.config or DEFAULT_CONFIG)


def _store(args: argparse.Namespace) -> str:
    return args.store or _config(args).registry.store


def _model_name(name: str) -> str:
    model = (name or "").strip()
    if not _MODEL_NAME.match(model):
        raise KeelError(f"MODEL {name!r}: is not a model name (lowercase letters, digits, '.', '_', '-'); give the name "
                        "without a version, e.g. loans-high-risk")
    return model


def bundle_metadata(store: str, model: str, version: int) -> dict:
    """What register_model hands the deploy step, read from the registry after checking every file's hash."""
    from keel.components._common.registry.registry import Registry

    registry = Registry(store)
    manifest = registry.verify(model, version)
    return {"registry_uri": registry.uri(model, version), "model_name": model, "version": f"v{version}",
            "bundle_hash": manifest["bundle_hash"]}


# -- keel models --------------------------------------------------------------------------------------------------


def main_metrics(metrics: dict) -> dict:
    """Up to MAIN_METRICS numeric metrics, the usual headline ones first."""
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    names = [k for k in PREFERRED_METRICS if k in numeric] + sorted(k for k in numeric if k not in PREFERRED_METRICS)
    return {k: numeric[k] for k in names[:MAIN_METRICS]}


def describe_gates(gates: dict | None) -> str:
    """`metrics:pass fairness:FAIL ...`, the usual gates first; "not recorded" for a version registered without them."""
    from keel.components._common.registry.stages import GATE_NAMES

    if gates is None:
        return "not recorded"
    names = [n for n in GATE_NAMES if n in gates] + sorted(n for n in gates if n not in GATE_NAMES)
    return " ".join(f"{name}:{'pass' if gates[name].get('passed') else 'FAIL'}" for name in names)


def version_rows(store: str, model: str) -> list[dict]:
    """One record per registered version of `model`: stage, created_at, main metrics, gates, last event."""
    from keel.components._common.registry.bundle import INFO_FILE, METRICS_FILE
    from keel.components._common.registry.registry import Registry
    from keel.components._common.registry.stages import StageLog

    registry = Registry(store)
    state = StageLog(store, model).state()
    rows = []
    for version in registry.versions(model):
        files = registry.load_manifest(model, version)["files"]
        info = json.loads(registry.read_file(model, version, INFO_FILE)) if INFO_FILE in files else {}
        metrics = json.loads(registry.read_file(model, version, METRICS_FILE)) if METRICS_FILE in files else {}
        entry = state.of(version)
        last = entry.last
        rows.append({
            "model": model, "version": version, "stage": entry.stage, "created_at": info.get("created_at", ""),
            "metrics": main_metrics(metrics), "gates": entry.gates,
            "last_event": {k: last.get(k) for k in ("seq", "from", "to", "by", "reason", "at")} if last else None,
        })
    return rows


def cmd_models(args: argparse.Namespace) -> int:
    from keel.components._common.registry.registry import Registry

    store = _store(args)
    registry = Registry(store)
    if args.model:
        models = [_model_name(args.model)]
    else:
        models = registry.models()
    rows = [row for model in models for row in version_rows(registry.store, model)]
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    if not rows:
        print(f"no registered versions in {registry.root}" + (f" for model {models[0]!r}" if args.model else "")
              + "; `keel run` (or `make run`) trains and registers one")
        return 0
    table = [("model", "version", "stage", "created (UTC)", "metrics", "gates", "last event")]
    for row in rows:
        last = row["last_event"]
        table.append((
            row["model"], f"v{row['version']}", row["stage"], row["created_at"][:19],
            " ".join(f"{k}={v:.3g}" for k, v in row["metrics"].items()) or "-",
            describe_gates(row["gates"]),
            f"{'registered' if last['from'] is None else last['to']} by {last['by']} at {last['at'][:19]}" if last else "-",
        ))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1])
    return 0


# -- keel approve / reject ----------------------------------------------------------------------------------------


def _decide(args: argparse.Namespace, to: str) -> int:
    from keel.components._common.registry import stages
    from keel.pipelines.records.model_ref import resolve

    ref = resolve(args.model_version, store=args.store, config=args.config)
    events = stages.transition(ref.store, ref.model_name, ref.version, to, args.by, args.reason)
    event = events[-1]
    print(f"{ref.label}: {event['from']} -> {event['to']} by {event['by']} at {event['at']} ({event['reason']})")
    if to == stages.APPROVED:
        print(f"  deploy it: keel deploy {ref.label} --store {ref.store}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from keel.components._common.registry.stages import APPROVED

    return _decide(args, APPROVED)


def cmd_reject(args: argparse.Namespace) -> int:
    from keel.components._common.registry.stages import ARCHIVED

    return _decide(args, ARCHIVED)


# -- keel deploy / rollback ---------------------------------------------------------------------------------------


def _emit(manifest: dict, path: str) -> str:
    import yaml

    from keel.components._common import storage

    storage.write_bytes(path, yaml.safe_dump(manifest, sort_keys=False).encode(), content_type="application/yaml")
    return f"manifest {path}"


def _no_cluster(what: str) -> KeelError:
    return KeelError(f"{what}: no cluster configured (no in-cluster service account, KUBECONFIG or ~/.kube/config); "
                     "write the InferenceService for GitOps with --emit PATH, or point KUBECONFIG at the cluster")


def cmd_deploy(args: argparse.Namespace) -> int:
    from keel.components._common import lineage
    from keel.components._common.k8s_schema import check_manifest
    from keel.components._common.kube import cluster_source
    from keel.components.deploy import inference_service as isvc
    from keel.components._common.registry import stages
    from keel.pipelines.records.model_ref import resolve

    ref = resolve(args.model_version, store=args.store, config=args.config)
    section = _config(args).deploy
    current = stages.stage(ref.store, ref.model_name, ref.version)
    if current not in isvc.DEPLOYABLE:
        raise KeelError(isvc.held_reason(ref, current))
    bundle = bundle_metadata(ref.store, ref.model_name, ref.version)
    by = args.by or lineage.actor()
    if args.emit:
        manifest = isvc.render(bundle, section)
        check_manifest(manifest)
        target = _emit(manifest, args.emit)
        after = isvc.record_production(ref, current, target, by, args.reason or f"emitted {target} for GitOps")
        print(f"{ref.label}: wrote the InferenceService to {args.emit}; stage {after}")
        return 0
    if cluster_source(os.environ) is None:
        raise _no_cluster(f"keel deploy {ref.label}")
    result = isvc.deploy_model(bundle, section, os.environ, require_enabled=False, by=by, reason=args.reason)
    if not result.applied:  # the stage changed between the check above and the apply
        raise KeelError(result.reason)
    meta = result.manifest["metadata"]
    print(f"{ref.label}: InferenceService {meta['namespace']}/{meta['name']} {result.action} ({result.reason}); stage {result.stage}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from keel.components._common import lineage
    from keel.components._common.k8s_schema import check_manifest
    from keel.components._common.kube import cluster_source
    from keel.components.deploy import inference_service as isvc
    from keel.components._common.registry import stages
    from keel.components._common.registry.registry import Registry

    store, model = Registry(_store(args)).store, _model_name(args.model)
    section = _config(args).deploy
    current, previous = stages.rollback_plan(store, model)
    bundle = bundle_metadata(store, model, previous)
    manifest = isvc.render(bundle, section)
    check_manifest(manifest)
    if args.emit:
        target = _emit(manifest, args.emit)
    else:
        source = cluster_source(os.environ)
        if source is None:
            raise _no_cluster(f"keel rollback {model}")
        isvc.require_remote(bundle)
        action = isvc.apply(manifest, source)
        target = f"InferenceService {manifest['metadata']['namespace']}/{manifest['metadata']['name']}"
        print(f"{target} {action} with {model}:v{previous} via {source}")
    by, reason = args.by or lineage.actor(), args.reason or "rollback"
    try:
        stages.rollback(store, model, by, reason, target=target, expected=(current, previous))
    except KeelError as err:
        # Already applied or written: say so, or the stage log and what serves would disagree unnoticed.
        raise KeelError(f"{target} now has {model}:v{previous}, but the rollback could not be recorded: {err}") from err
    print(f"{model}: v{previous} is back in production ({target}); v{current} is archived")
    return 0


COMMANDS = {"models": cmd_models, "approve": cmd_approve, "reject": cmd_reject, "deploy": cmd_deploy, "rollback": cmd_rollback}
