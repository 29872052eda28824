"""make bench-pipeline: the local kfp pipeline vs the same stage functions in one process.

Both sides run the default config end to end, in this run, on this machine:
- pipeline: `keel run`'s path (pre-flight + kfp.local SubprocessRunner, one
  process per step, artifacts through the local pipeline root);
- baseline: every component's own Python function (`component.python_func`,
  the very code each step executes) called in sequence in this process, with
  the artifacts in a temporary directory.
Each side runs 3 times, interleaved, each from a cold interpreter; the
figures are medians. Prints one BENCH line per figure and exits 0 whether or
not targets are met.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from kfp import dsl

from report import bench as _bench  # tests/bench is this script's directory
from keel.pipelines.config import DEFAULT_CONFIG, load_config, with_overrides


def in_process(cfg, workdir: Path) -> float:
    """Runs every stage's component function in this process; returns seconds."""
    from keel.pipelines import training as t

    args = cfg.pipeline_arguments()
    counter = iter(range(1000))

    def art(cls, name):
        a = cls(name=name, uri=str(workdir / f"{next(counter):02d}-{name}"))
        return a

    started = time.perf_counter()
    raw = art(dsl.Dataset, "raw")
    t.ingest_data.python_func(data=args["data"], target=args["target"], registry=args["registry"], raw=raw)
    report, summary = art(dsl.HTML, "profile"), art(dsl.Artifact, "summary")
    t.profile_data.python_func(data=raw, target=args["target"], report=report, summary=summary)
    valid, vq, schema, vreport = art(dsl.Dataset, "valid"), art(dsl.Dataset, "vq"), art(dsl.Artifact, "schema"), art(dsl.HTML, "vr")
    t.validate_data.python_func(data=raw, target=args["target"], validation=args["validation"], valid=valid, quarantine=vq, schema=schema, report=vreport)
    cleaned, cq, stats = art(dsl.Dataset, "cleaned"), art(dsl.Dataset, "cq"), art(dsl.Metrics, "stats")
    t.clean_data.python_func(data=valid, target=args["target"], clean=args["clean"], cleaned=cleaned, quarantine=cq, stats=stats)
    train, val, test = art(dsl.Dataset, "train"), art(dsl.Dataset, "val"), art(dsl.Dataset, "test")
    t.split_data.python_func(data=cleaned, target=args["target"], split=args["split"], train=train, validation=val, test=test)
    transformer, tf, vf = art(dsl.Model, "transformer"), art(dsl.Dataset, "tf"), art(dsl.Dataset, "vf")
    t.engineer_features.python_func(train=train, validation=val, features=args["features"], transformer=transformer, train_features=tf, validation_features=vf)
    model, tmetrics = art(dsl.Model, "model"), art(dsl.Metrics, "tm")
    t.train_model.python_func(train_features=tf, validation_features=vf, transformer=transformer, target=args["target"], model=args["model"], trained_model=model, metrics=tmetrics)
    metrics, cm, ereport = art(dsl.Metrics, "metrics"), art(dsl.ClassificationMetrics, "cm"), art(dsl.HTML, "er")
    passed = t.evaluate_model.python_func(trained_model=model, test=test, target=args["target"], evaluation=args["evaluation"], metrics=metrics, classification_metrics=cm, report=ereport)
    fmetrics, freport = art(dsl.Metrics, "fairness"), art(dsl.HTML, "fr")
    fair = t.assess_fairness.python_func(trained_model=model, test=test, validation=val, target=args["target"], evaluation=args["evaluation"],
                                         fairness=args["fairness"], metrics=fmetrics, report=freport)
    explainer, xreport = art(dsl.Artifact, "explainer"), art(dsl.HTML, "xr")
    t.explain_model.python_func(trained_model=model, train=train, test=test, target=args["target"], explain=args["explain"],
                                explainer=explainer, report=xreport)
    md, html = art(dsl.Markdown, "md"), art(dsl.HTML, "card")
    t.write_model_card.python_func(raw=raw, profile_summary=summary, trained_model=model, metrics=metrics, target=args["target"], model_card=args["model_card"],
                                   registry=args["registry"], fairness=fmetrics, explainer=explainer, card_md=md, card_html=html)
    if passed and fair:  # the pipeline's two gates
        bundle = art(dsl.Model, "bundle")
        t.register_model.python_func(trained_model=model, schema=schema, metrics=metrics, fairness_metrics=fmetrics, explainer=explainer,
                                     card_md=md, card_html=html, raw=raw, valid=valid, cleaned=cleaned, train=train, test=test,
                                     transformer=transformer, bundle=bundle,
                                     **{k: args[k] for k in ("data", "target", "validation", "clean", "split", "features", "model", "evaluation",
                                                             "fairness", "explain", "registry", "governance")})
    return time.perf_counter() - started


def pipeline(cfg, warm_start: bool) -> float:
    """`keel run`'s own path: pre-flight, then kfp.local."""
    from keel.pipelines.local.runner import run_checked

    started = time.perf_counter()
    run_checked(cfg, warm_start=warm_start)
    return time.perf_counter() - started


REPEATS = 3


def _in_process_cold(store: Path, work: Path) -> float:
    """One in-process run in a fresh interpreter, so it pays its imports once, as a step does."""
    import subprocess

    done = subprocess.run([sys.executable, __file__, "--in-process", str(store), str(work)], capture_output=True, text=True)
    if done.returncode != 0:  # the baseline calls each component by hand: say where it fell behind the pipeline
        raise SystemExit(f"the in-process baseline failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _quiet(fn, log: Path):
    """Runs fn with this process's stdout (kfp.local's step logs) sent to `log`."""
    with open(log, "w") as handle:
        saved = os.dup(1)
        os.dup2(handle.fileno(), 1)
        try:
            return fn()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def main() -> int:
    import statistics

    if sys.argv[1:2] == ["--in-process"]:
        store, work = Path(sys.argv[2]), Path(sys.argv[3])
        work.mkdir(parents=True)
        cfg = with_overrides(load_config(DEFAULT_CONFIG), {"registry.store": str(store)})
        print(in_process(cfg, work))
        return 0
    os.environ.setdefault("KEEL_USER", "bench")
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        base = load_config(DEFAULT_CONFIG)
        baseline, warm, cold = [], [], []
        for i in range(REPEATS):  # interleaved, so drift on the machine hits both sides alike
            baseline.append(_in_process_cold(Path(tmp, f"inproc-store-{i}"), Path(tmp, f"inproc-{i}")))
            cfg = with_overrides(base, {"registry.store": str(Path(tmp, f"store-warm-{i}"))})
            warm.append(_quiet(lambda: pipeline(cfg, warm_start=True), Path(tmp, f"warm-{i}.log")))
            print(f"run {i + 1}: in-process {baseline[-1]:.1f} s, keel run {warm[-1]:.1f} s", file=sys.stderr)
        cfg = with_overrides(base, {"registry.store": str(Path(tmp, "store-cold"))})
        cold.append(_quiet(lambda: pipeline(cfg, warm_start=False), Path(tmp, "cold.log")))
        print(f"keel run --no-warm-start: {cold[0]:.1f} s", file=sys.stderr)
        base_median, warm_median = statistics.median(baseline), statistics.median(warm)
        _bench("pipeline_local_wall", warm_median, "s", "stage_functions_in_process", base_median, "<=2.0")
        _bench("pipeline_local_wall_cold_steps", cold[0], "s", "stage_functions_in_process", base_median, "informational")
        _bench("pipeline_local_wall_abs", warm_median, "s", "budget_90s", 90.0, "<=1.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
