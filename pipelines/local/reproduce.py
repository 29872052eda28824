"""`keel reproduce MODEL_VERSION`: retrain a registered version from its lineage record, compare the metrics.

The lineage record of a version (its lineage.json) holds every config
section the run used, the hash of every artifact, the code version and,
from the register step that records them, the seeds and the environment
(package versions and their lock hash). Reproducing means running the same
pipeline again on exactly the same rows:

* the config is the recorded one, with `data.version` pinned to the dataset
  version the run ingested (from the config when the run pinned it, else from
  the raw artifact's `dataset` parent), so the source is never read again;
* everything is written to a scratch store in a work directory: the dataset
  version is copied there (re-hashed on the way), the registry and the
  pipeline root live there, deploy is disabled and approval is left to a
  human, so the original store is only ever read and nothing is deployed or
  approved;
* a tuned version is retrained with the search's recorded best parameters
  (the final fit is what made the model; the search itself is not rerun).

Then every metric in the original metrics.json is compared with the new one
(absolute difference within `--tolerance`), and so is the raw data hash (it
must be equal). The trained model's hash is shown for information; a
different code version or lock hash is reported as the likely explanation of
a mismatch, not as a failure by itself.

Exit codes: 0 reproduced (every recorded metric within the tolerance and
the same raw data); 1 not reproduced (a metric differs or is missing, the
raw data differs, or a step of the reproduction failed); 2 the version
cannot be reproduced as asked (bad MODEL_VERSION, no dataset version in the
record, the dataset version is gone from the store, a bad --work or
--tolerance).
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from keel.components._common.errors import ConfigError, KeelError, StorageError
from keel.pipelines.records.model_ref import ModelRef

EXIT_REPRODUCED = 0
EXIT_NOT_REPRODUCED = 1
DEFAULT_TOLERANCE = 1e-9
SCRATCH_STORE = "store"  # the scratch artifact store, inside the work directory
NO_DATASET = "the record holds no dataset version; the data cannot be reproduced"


@dataclass(frozen=True)
class MetricCheck:
    """One metric, recorded vs reproduced.

    status: "match" (within the tolerance), "differs", "missing" (recorded, not
    reproduced) or "new" (only the reproduction has it: newer code computes
    more metrics; it does not fail the reproduction).
    """

    name: str
    recorded: float | None
    reproduced: float | None
    diff: float | None
    status: str

    @property
    def ok(self) -> bool:
        return self.status in ("match", "new")


@dataclass(frozen=True)
class Check:
    """A non-metric comparison.

    kind: "required" (a difference fails the reproduction), "informational",
    or "explains" (a difference is a warning that explains a metric mismatch).
    matches is None when one side was not recorded.
    """

    name: str
    recorded: str | None
    reproduced: str | None
    matches: bool | None
    kind: str


@dataclass
class ReproduceResult:
    """What `reproduce` found.

    Attributes:
        ref: the version reproduced.
        metrics: every metric compared, in name order.
        checks: raw data hash (required), trained model hash (informational), code
            version and environment lock hash (explain a mismatch).
        warnings: sentences for the reader: what differs besides the metrics, and why it may matter.
        dataset: "name@sha256:..." the run was pinned to.
        tolerance: the largest absolute difference that counts as a match.
        registered: the version the reproduction registered in the scratch store, or None when
            its metrics gate failed (the metrics then come from the evaluate step).
        work_dir: the work directory when it was kept (--work), else None.
    """

    ref: ModelRef
    metrics: list[MetricCheck]
    checks: list[Check]
    warnings: list[str] = field(default_factory=list)
    dataset: str = ""
    tolerance: float = DEFAULT_TOLERANCE
    registered: str | None = None
    work_dir: Path | None = None

    @property
    def reproduced(self) -> bool:
        required = [c for c in self.checks if c.kind == "required"]
        return bool(self.metrics) and all(m.ok for m in self.metrics) and all(c.matches is not False for c in required)


def compare_metrics(recorded: Mapping[str, float], reproduced: Mapping[str, float], tolerance: float) -> list[MetricCheck]:
    """Every metric of either side, compared by absolute difference.

    Args:
        recorded: the original version's metrics.json.
        reproduced: the reproduction's metrics.
        tolerance: the largest absolute difference that still matches (>= 0).

    Returns:
        One MetricCheck per metric name, sorted by name. NaN on both sides matches
        (a metric undefined for this data, e.g. one class in the test split).
    """
    if not tolerance >= 0:  # also refuses NaN
        raise ConfigError(f"--tolerance: {tolerance} must be a number >= 0 (absolute difference allowed per metric)")
    checks = []
    for name in sorted(set(recorded) | set(reproduced)):
        old, new = recorded.get(name), reproduced.get(name)
        if new is None:
            checks.append(MetricCheck(name, float(old), None, None, "missing"))
        elif old is None:
            checks.append(MetricCheck(name, None, float(new), None, "new"))
        else:
            old, new = float(old), float(new)
            if math.isnan(old) and math.isnan(new):
                checks.append(MetricCheck(name, old, new, 0.0, "match"))
                continue
            diff = abs(new - old)
            checks.append(MetricCheck(name, old, new, diff, "match" if diff <= tolerance else "differs"))
    return checks


def recorded_dataset(record: Mapping, store: str) -> tuple[str, str]:
    """(dataset name, version) the recorded run ingested.

    In order: `data.version` when the run pinned one; the `dataset` parent of the
    raw artifact (what ingest stamps); a version in `store` whose hash is the raw
    artifact's own (the run ingested its source unchanged).

    Raises:
        KeelError: the record names no dataset version.
    """
    from keel.components._common import datasets
    from keel.components._common.config import DataSection

    data = DataSection.parse((record.get("config") or {}).get("data"), "lineage.json config.data")
    name = data.dataset_name()
    if data.version:
        return name, data.version
    raw = (record.get("artifacts") or {}).get("raw") or {}
    for parent in raw.get("parents") or []:
        if parent.get("name") == "dataset" and parent.get("content_hash"):
            return _name_from_uri(parent.get("uri", "")) or name, parent["content_hash"]
    if raw.get("content_hash"):
        for found in datasets.versions(store, name):
            if found["version"] == raw["content_hash"]:
                return name, found["version"]
    raise KeelError(f"{record.get('model_name', 'model')} v{record.get('version', '?')}: {NO_DATASET} "
                    "(it was registered before ingest recorded dataset versions)")


def _name_from_uri(uri: str) -> str | None:
    """The dataset name in `{store}/datasets/{name}/{hash}/data.parquet`."""
    parts = uri.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-4] == "datasets":
        return parts[-3]
    return None


def copy_dataset(source_store: str, scratch_store: str, name: str, version: str, tmp_dir: Path) -> dict:
    """Copies one dataset version into the scratch store, after re-hashing it; returns the scratch record.

    Raises:
        StorageError: the version is not in `source_store` (any more).
        DataError: the stored rows no longer hash to their version.
    """
    from keel.components._common import datasets

    path = tmp_dir / "dataset.parquet"
    try:
        _, record = datasets.load(source_store, name, version, out_path=str(path))
    except StorageError as err:
        raise StorageError(f"{err}; the run's data is gone from its store, so it cannot be reproduced") from None
    meta = {k: record[k] for k in ("rows", "columns", "schema")} | {"content_hash": record["version"]}
    # The record's `pii` says what was scrubbed before storing; without it ingest would scrub again.
    copied = datasets.publish(scratch_store, name, str(path), meta, record["source"], pii=record.get("pii"))
    path.unlink()
    return copied


def rebuild_config(record: Mapping, *, scratch_store: str, dataset: tuple[str, str], schema_uri: str | None = None):
    """The recorded run's config, pinned to its dataset version and writing only to `scratch_store`.

    Args:
        record: the version's lineage.json.
        scratch_store: registry.store for the reproduction.
        dataset: (name, version) from `recorded_dataset`.
        schema_uri: where the version's schema.json was copied; used when the run read its
            schema from validation.schema_uri (which may have changed since, or be written to).

    Returns:
        A TrainingConfig: deploy disabled, approval by a human, the search's best parameters in
        model.params for a tuned version, no tune section.
    """
    from keel.components._common.config import DataSection
    from keel.pipelines.config import parse_config

    sections = {name: dict(value) for name, value in (record.get("config") or {}).items()}
    sections.pop("tune", None)  # the search is not rerun: its result is merged below
    name, version = dataset
    sections["data"] = {**sections.get("data", {}), "version": version}
    if DataSection.parse(sections["data"], "data").dataset_name() != name:
        sections["data"]["name"] = name  # the stored name, where the recorded config no longer derives it
    best = (record.get("search") or {}).get("best_params") or {}
    if best:
        model = sections.get("model", {})
        sections["model"] = {**model, "params": {**(model.get("params") or {}), **{k: _intish(v) for k, v in best.items()}}}
    if schema_uri and (sections.get("validation") or {}).get("schema_uri"):
        sections["validation"] = {**sections["validation"], "schema_uri": schema_uri}
    sections["registry"] = {**sections.get("registry", {}), "store": scratch_store}
    sections["deploy"] = {**sections.get("deploy", {}), "enabled": False}
    sections["governance"] = {**sections.get("governance", {}), "approval": "human"}
    label = f"{record.get('model_name', 'model')}-v{record.get('version', 0)}"
    raw = {"name": f"reproduce-{label}", "description": f"Reproduction of {label} from its lineage record", **sections}
    return parse_config(raw, f"{label} lineage.json config")


def _intish(value):
    """KFP hands metadata numbers back as floats; an int hyperparameter (max_iter) must stay an int."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def reproduce(ref: ModelRef, *, work_dir: Path | None = None, tolerance: float = DEFAULT_TOLERANCE) -> ReproduceResult:
    """Retrains a registered version from its lineage record and compares the result.

    Args:
        ref: the version (keel.pipelines.records.model_ref.resolve).
        work_dir: where the scratch store goes; it must be new or empty. None: a temporary
            directory, removed afterwards (kept if a step fails, for its log).
        tolerance: the largest absolute metric difference that counts as a match.

    Returns:
        The comparison (see ReproduceResult.reproduced).

    Raises:
        KeelError: the record cannot be reproduced (no dataset version, the dataset is gone,
            an image model), or work_dir is not usable.
        PipelineFailed: a step of the reproduction failed.
    """
    from keel.components._common.registry.bundle import SCHEMA_FILE, load_bundle
    from keel.pipelines.local.runner import PipelineFailed

    compare_metrics({}, {}, tolerance)  # refuse a bad tolerance before any work
    bundle = load_bundle(ref.store, ref.model_name, ref.version)
    if bundle.modality != "tabular":
        raise KeelError(f"{ref.label}: is an {bundle.modality} model; keel reproduce retrains tabular models only "
                        "(the vision pipeline keeps no dataset versions to pin)")
    record = bundle.lineage
    keep = work_dir is not None
    work = _work_dir(work_dir, ref.store) if keep else Path(tempfile.mkdtemp(prefix="keel-reproduce-"))
    failed = False
    try:
        scratch = str((work / SCRATCH_STORE).resolve())
        name, version = recorded_dataset(record, ref.store)
        copied = copy_dataset(_dataset_store(record, ref.store, name, version), scratch, name, version, work)
        schema_path = work / SCHEMA_FILE
        schema_path.write_bytes(bundle.files[SCHEMA_FILE])
        cfg = rebuild_config(record, scratch_store=scratch, dataset=(name, copied["version"]), schema_uri=str(schema_path))
        try:
            new = _run(cfg)
        except PipelineFailed:
            failed = True
            raise
        result = _compare(ref, record, bundle.metrics, new, tolerance)
        result.dataset = f"{name}@{copied['version']}"
        result.work_dir = work if keep else None
        return result
    finally:
        if not keep and not failed:
            shutil.rmtree(work, ignore_errors=False)


def _work_dir(path: Path, original_store: str) -> Path:
    from keel.components._common import storage

    path = Path(path).resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"--work {path}: is not an empty directory; give a new or empty one "
                          "(a reproduction must not mix with other files)")
    if not storage.is_s3(original_store):
        store = Path(original_store).resolve()
        if path == store or store in path.parents:
            raise ConfigError(f"--work {path}: is inside the original store {store}, which a reproduction never writes; "
                              "give a directory outside it")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _dataset_store(record: Mapping, store: str, name: str, version: str) -> str:
    """The store holding the dataset version: the registry's own, else the one the raw artifact's parent names."""
    from keel.components._common import datasets

    candidates = [store]
    marker = f"/datasets/{name}/"
    for parent in ((record.get("artifacts") or {}).get("raw") or {}).get("parents") or []:
        uri = str(parent.get("uri", ""))
        if parent.get("name") == "dataset" and marker in uri:
            candidates.append(uri[:uri.index(marker)])
    bare = version.removeprefix("sha256:")
    for candidate in candidates:
        if any(r["version"].removeprefix("sha256:").startswith(bare) for r in datasets.versions(candidate, name)):
            return candidate
    return store  # datasets.load then says what is missing where


@dataclass
class _Reproduction:
    metrics: dict
    lineage: dict  # the new version's record; {} when its gate failed
    raw_hash: str
    model_hash: str
    code_version: str
    registered: str | None


def _run(cfg) -> _Reproduction:
    from keel.components._common import lineage
    from keel.components._common.registry.bundle import load_bundle
    from keel.components.register.register import numeric_metrics
    from keel.pipelines.local.runner import run_local

    summary = run_local(cfg, cache=False)
    raw = (summary.artifact("ingest-data", "raw") or {}).get("metadata", {})
    trained = (summary.artifact("train-model", "trained_model") or {}).get("metadata", {})
    if summary.registered:
        bundle = load_bundle(cfg.registry.store, cfg.registry.model_name, summary.registered["version"])
        artifacts = bundle.lineage.get("artifacts", {})
        return _Reproduction(dict(bundle.metrics), bundle.lineage, artifacts.get("raw", {}).get("content_hash", ""),
                             artifacts.get("trained_model", {}).get("content_hash", ""),
                             bundle.lineage.get("code_version", ""), summary.registered["version"])
    # The gate failed, so nothing was registered: evaluate's metrics are the reproduction's.
    return _Reproduction(numeric_metrics(summary.metrics), {}, str(raw.get("content_hash", "")),
                         str(trained.get("content_hash", "")), str(trained.get("code_version") or lineage.code_version()), None)


def _compare(ref: ModelRef, record: Mapping, recorded_metrics: Mapping, new: _Reproduction, tolerance: float) -> ReproduceResult:
    from keel.components._common import lineage

    artifacts = record.get("artifacts") or {}
    old_env = record.get("environment") or {}
    new_env = new.lineage.get("environment") or lineage.environment()
    checks = [
        _check("raw data hash", (artifacts.get("raw") or {}).get("content_hash"), new.raw_hash, "required"),
        _check("trained model hash", (artifacts.get("trained_model") or {}).get("content_hash"), new.model_hash, "informational"),
        _check("code version", record.get("code_version"), new.code_version, "explains"),
        _check("environment lock hash", old_env.get("lock_hash"), new_env.get("lock_hash"), "explains"),
    ]
    result = ReproduceResult(ref, compare_metrics(recorded_metrics, new.metrics, tolerance), checks,
                             tolerance=tolerance, registered=new.registered)
    result.warnings = _warnings(record, result, old_env, new_env)
    return result


def _check(name: str, recorded, reproduced, kind: str) -> Check:
    recorded, reproduced = (str(v) if v else None for v in (recorded, reproduced))
    matches = None if recorded is None or reproduced is None else recorded == reproduced
    return Check(name, recorded, reproduced, matches, kind)


def _warnings(record: Mapping, result: ReproduceResult, old_env: Mapping, new_env: Mapping) -> list[str]:
    out = []
    checks = {c.name: c for c in result.checks}
    if checks["raw data hash"].matches is False:
        out.append("the reproduction ingested different rows than the recorded run, although both read the same dataset "
                   "version: ingest's sampling or column handling changed (see the code version)")
    if checks["code version"].matches is False:
        out.append(f"the code differs: recorded {checks['code version'].recorded}, now {checks['code version'].reproduced}; "
                   "a changed step can explain a metric difference")
    if checks["environment lock hash"].matches is False:
        changed = [f"{name} {old_env.get('packages', {}).get(name, '-')} -> {new_env.get('packages', {}).get(name, '-')}"
                   for name in sorted(set(old_env.get("packages", {})) | set(new_env.get("packages", {})))
                   if old_env.get("packages", {}).get(name) != new_env.get("packages", {}).get(name)]
        if old_env.get("python") != new_env.get("python"):
            changed.insert(0, f"python {old_env.get('python', '-')} -> {new_env.get('python', '-')}")
        detail = "; ".join(changed) if changed else "no model package changed, other installed packages did"
        out.append(f"the installed packages differ ({detail}); a library upgrade can change the numbers")
    elif checks["environment lock hash"].matches is None:
        out.append("the record has no environment lock hash (registered before Keel recorded it), so a package "
                   "difference cannot be ruled out")
    if record.get("search"):
        out.append("a tuned version: the final fit used the search's recorded best parameters; the search was not rerun")
    if result.registered is None:
        out.append("the reproduction missed the evaluation gate, so nothing was registered; its metrics come from the "
                   "evaluate step")
    return out


def format_result(result: ReproduceResult) -> str:
    """The comparison as a table, the other checks, the warnings and a one-line verdict."""
    lines = [f"reproduce {result.ref.label} (dataset {result.dataset or '?'}, tolerance {result.tolerance:g})", ""]
    lines.append(f"  {'metric':<28} {'recorded':>14} {'reproduced':>14} {'diff':>10}  match")
    for m in result.metrics:
        lines.append(f"  {m.name:<28} {_num(m.recorded):>14} {_num(m.reproduced):>14} "
                     f"{'' if m.diff is None else f'{m.diff:.2e}':>10}  {_MATCH[m.status]}")
    lines.append("")
    for c in result.checks:
        lines.append(f"  {c.name + ':':<24} {_STATE[c.kind][c.matches]}")
        if c.matches is False:
            lines.append(f"    recorded   {c.recorded}\n    reproduced {c.reproduced}")
    lines += [f"  warning: {w}" for w in result.warnings]
    lines.append("")
    bad = [m for m in result.metrics if not m.ok]
    if result.reproduced:
        lines.append(f"REPRODUCED: all {sum(m.recorded is not None for m in result.metrics)} recorded metrics within "
                     f"{result.tolerance:g}")
    else:
        why = [f"{len(bad)} of {len(result.metrics)} metrics differ or are missing ({', '.join(m.name for m in bad)})"] if bad else []
        if any(c.kind == "required" and c.matches is False for c in result.checks):
            why.append("the raw data differs")
        lines.append(f"NOT REPRODUCED: {'; '.join(why) or 'no metric was recorded'}")
    if result.work_dir is not None:
        lines.append(f"the reproduction's store and run are in {result.work_dir}")
    return "\n".join(lines)


_STATE = {
    "required": {True: "same", False: "DIFFERS", None: "not recorded"},
    "informational": {True: "same", False: "differs (informational)", None: "not recorded"},
    "explains": {True: "same", False: "differs (can explain a metric mismatch)", None: "not recorded in the original"},
}
_MATCH = {"match": "yes", "differs": "NO", "missing": "NO (missing)", "new": "new (not recorded)"}


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def add_parser(sub) -> None:
    """Adds `keel reproduce` to the CLI's subcommands."""
    rep = sub.add_parser("reproduce", help="retrain a registered version from its lineage record and compare its metrics",
                         description=(
                             "Rerun the training pipeline of MODEL_VERSION from its lineage record: the same config, pinned "
                             "to the dataset version it ingested, in a scratch store (the original store is only read; "
                             "nothing is deployed or approved). Prints recorded vs reproduced metrics. Exit 0: every "
                             "metric within --tolerance and the same raw data; 1: not reproduced (or a step failed); "
                             "2: the record cannot be reproduced (e.g. it holds no dataset version)."),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    rep.add_argument("model_version", metavar="MODEL_VERSION", help="latest (the newest version in the store, any model), v<N>, NAME, or NAME:v<N>")
    rep.add_argument("--store", metavar="URI", help="registry store (default: the config's registry.store)")
    rep.add_argument("--config", help="config whose registry section MODEL_VERSION refers to (default: the embedded default config)")
    rep.add_argument("--work", metavar="DIR", type=Path,
                     help="keep the reproduction's scratch store and run here (a new or empty directory; default: a "
                     "temporary directory, removed afterwards)")
    rep.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                     help=f"largest absolute metric difference that matches (default: {DEFAULT_TOLERANCE:g})")


def cmd_reproduce(args: argparse.Namespace) -> int:
    """`keel reproduce`: 0 reproduced, 1 not; user errors raise KeelError (the CLI exits 2)."""
    from keel.pipelines.records.model_ref import resolve

    ref = resolve(args.model_version, store=args.store, config=args.config)
    print(f"reproducing {ref.label} from {ref.store}", flush=True)
    result = reproduce(ref, work_dir=args.work, tolerance=args.tolerance)
    print(format_result(result), flush=True)
    return EXIT_REPRODUCED if result.reproduced else EXIT_NOT_REPRODUCED
