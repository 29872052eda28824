"""make bench-hpo: how fast each Katib algorithm (run locally by Optuna) finds a good model, and what parallel trials buy.

On the default data (all 10,000 loans) and a gradient-boosting search space:
1. random, tpe and multivariate-tpe, 5 seeds each, TRIALS trials per run:
   the number of trials each run needs to reach 99% of the best objective
   any run found (median over seeds; a run that never gets there counts as
   TRIALS + 1). Target: tpe needs <= 0.6x the trials random needs.
2. The same random search (seed 0) with 1 and with 2 parallel trials:
   trials per second. Target: 2 parallel trials give >= 1.7x the throughput.

The features are prepared once, in-process, exactly as `keel tune` does;
every trial is a real `python -m keel.components.tune.trial` process.
Prints BENCH lines (one per figure) and exits 0 whether or not targets are met.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from report import bench  # tests/bench is this script's directory

TRIALS = 20
SEEDS = range(5)
ALGORITHMS = ("random", "tpe", "multivariate-tpe")
THROUGHPUT_TRIALS = 10
# Wide, as a first search over an unfamiliar model is: bad regions exist
# (too slow a learning rate for the iterations, leaves too small or too large).
SPACE = {
    "learning_rate": {"type": "double", "min": 0.001, "max": 0.5, "log": True},
    "max_iter": {"type": "int", "min": 10, "max": 200, "step": 10},
    "max_leaf_nodes": {"type": "int", "min": 2, "max": 128},
    "min_samples_leaf": {"type": "int", "min": 2, "max": 400},
    "l2_regularization": {"type": "double", "min": 0.0, "max": 10.0},
}


def main() -> int:
    from keel.components._common.config import TuneSection
    from keel.components._common.images import COMPONENT_IMAGES
    from keel.components.tune.experiment import TrialData
    from keel.components.tune.search import run_search
    from keel.pipelines.config import DEFAULT_CONFIG, load_config, with_overrides
    from keel.pipelines.training_tune import prepare_features

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="keel-bench-hpo-"))
    cfg = with_overrides(load_config(DEFAULT_CONFIG), {"registry.store": str(work / "store"),
                                                      "model.params": {"early_stopping": False}})
    tf, vf, transformer = prepare_features(cfg, str(work / "features"))
    classes = next((a.metadata["classes"] for a in (tf, vf, transformer) if a.metadata.get("classes")), None)
    data = TrialData(tf.path, vf.path, transformer.path, classes)
    print(f"features ready in {time.perf_counter() - started:.1f} s ({tf.metadata.get('rows')} training rows)", file=sys.stderr)

    def search(algorithm, seed, trials, parallel, tag):
        tune = TuneSection.parse({"algorithm": algorithm, "parameters": SPACE, "max_trials": trials, "parallel_trials": parallel,
                                  "max_failed_trials": 0, "seed": seed, "objective": {"metric": "roc_auc"}}, "tune")
        t0 = time.perf_counter()
        outcome = run_search(f"bench-{tag}", data, tune, cfg.model, cfg.target, work / "journals" / tag,
                             image=COMPONENT_IMAGES["tune_trial"])
        seconds = time.perf_counter() - t0
        values = [t["value"] for t in sorted(outcome.trials, key=lambda t: t["number"]) if t["state"] == "COMPLETE"]
        return values, seconds

    runs = {}
    for seed in SEEDS:
        for algorithm in ALGORITHMS:  # interleaved, so machine drift hits every algorithm alike
            values, seconds = search(algorithm, seed, TRIALS, 2, f"{algorithm}-{seed}")
            runs[(algorithm, seed)] = values
            print(f"{algorithm:>17} seed {seed}: best {max(values):.4f} in {seconds:5.1f} s", file=sys.stderr)
    best = max(max(v) for v in runs.values())
    threshold = 0.99 * best

    def needed(values):
        return next((i + 1 for i, v in enumerate(values) if v >= threshold), TRIALS + 1)

    medians = {a: statistics.median(needed(runs[(a, s)]) for s in SEEDS) for a in ALGORITHMS}
    for algorithm in ALGORITHMS:
        print(f"{algorithm:>17}: trials to reach {threshold:.4f} (99% of {best:.4f}): "
              f"{[needed(runs[(algorithm, s)]) for s in SEEDS]} median {medians[algorithm]}", file=sys.stderr)
    bench("hpo_trials_to_99pct_random", medians["random"], "trials", None, None, "informational")
    bench("hpo_trials_to_99pct_tpe", medians["tpe"], "trials", "hpo_trials_to_99pct_random", medians["random"], "<=0.6")
    bench("hpo_trials_to_99pct_multivariate_tpe", medians["multivariate-tpe"], "trials", "hpo_trials_to_99pct_random",
          medians["random"], "<=0.6")

    rates = {}
    for parallel in (1, 2, 1, 2):  # twice each, interleaved; the faster of each pair
        _, seconds = search("random", 0, THROUGHPUT_TRIALS, parallel, f"throughput-{parallel}-{time.time_ns()}")
        rates[parallel] = max(rates.get(parallel, 0.0), THROUGHPUT_TRIALS / seconds)
        print(f"random, {parallel} parallel: {THROUGHPUT_TRIALS} trials in {seconds:.1f} s", file=sys.stderr)
    bench("hpo_trials_per_s_parallel_1", rates[1], "trials/s", None, None, "informational")
    bench("hpo_trials_per_s_parallel_2", rates[2], "trials/s", "hpo_trials_per_s_parallel_1", rates[1], ">=1.7")
    print(f"bench took {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
