"""The backfill pipeline's pre-flight, `keel check` line, command-line flags and summary."""

from __future__ import annotations

import json

from keel.components._common import storage
from keel.pipelines.backfill_config import BackfillConfig
from keel.pipelines.descriptor import Checked, Outcome, refuse_flags


def preflight_backfill(cfg: BackfillConfig) -> list[dict]:
    """Plans the partitions and asks the source for zero rows of the first one.

    A bad range, an unreachable server, wrong credentials, a SQL error or a
    missing date column fail here in a second, naming the field, not inside
    the first partition's step.
    """
    from keel.components._common import postgres
    from keel.components.backfill.partition import partition_query
    from keel.components.backfill.plan import plan

    partitions = plan(cfg.backfill, cfg.execution_date)
    probe = partition_query(cfg.data, cfg.backfill.date_column, partitions[0])
    for _ in postgres.stream(cfg.data.source, f"SELECT * FROM ({probe}) AS probe LIMIT 0"):
        pass
    return partitions


def summary_lines(cfg: BackfillConfig, partitions: list[dict], seconds: float, run_dir) -> list[str]:
    """One line per partition from its _partition.json: rows in, out and quarantined."""
    from keel.components.backfill.partition import MANIFEST, output_root, partition_dir

    root = output_root(cfg.backfill, cfg.data, cfg.registry.store)
    lines = [f"keel: {cfg.name} finished in {seconds:.1f} s: {len(partitions)} {cfg.backfill.partition} partition(s) "
             f"-> {root} (run log: {run_dir})",
             f"  {'partition':12} {'ingested':>9} {'written':>9} {'quarantined':>12}  content hash"]
    totals = [0, 0, 0]
    for partition in partitions:
        uri = storage.join(partition_dir(root, cfg.backfill, partition), MANIFEST)
        if not storage.exists(uri):
            lines.append(f"  {partition['key']:12} {'missing':>9}")
            continue
        manifest = json.loads(storage.read_bytes(uri))
        quarantined = sum(manifest["rows_quarantined"].values())
        counts = (manifest["rows_ingested"], manifest["rows"], quarantined)
        totals = [a + b for a, b in zip(totals, counts)]
        lines.append(f"  {partition['key']:12} {counts[0]:>9,} {counts[1]:>9,} {counts[2]:>12,}  {manifest['content_hash'][:19]}")
    lines.append(f"  {'total':12} {totals[0]:>9,} {totals[1]:>9,} {totals[2]:>12,}")
    if cfg.backfill.write_back is not None:
        lines.append(f"  written back to Postgres table {cfg.backfill.write_back.table} (one transaction per partition)")
    return lines


def check(cfg: BackfillConfig) -> str:
    partitions = preflight_backfill(cfg)
    return (f"{len(partitions)} {cfg.backfill.partition} partition(s) {partitions[0]['key']} .. {partitions[-1]['key']} "
            f"of {cfg.data.dataset_name()} ({cfg.backfill.date_column}); source answers")


def checked_run(cfg: BackfillConfig) -> Checked:
    partitions = preflight_backfill(cfg)
    return Checked(cfg, f"{len(partitions)} {cfg.backfill.partition} partition(s) {partitions[0]['key']} .. "
                        f"{partitions[-1]['key']} from {cfg.data.source}; running the backfill pipeline",
                   loop_iterations=len(partitions), detail=partitions)


def outcome(checked: Checked, run, seconds: float) -> Outcome:
    return Outcome(summary_lines(checked.config, checked.detail, seconds, run.run_dir))


def cli_overrides(cfg: BackfillConfig, flags: dict) -> dict:
    """--store and --execution-date; the training flags are refused."""
    refuse_flags(flags, ("--store", "--execution-date"), "backfill", "data/backfill sections")
    fields = {"--store": "registry.store", "--execution-date": "execution_date"}
    return {fields[flag]: value for flag, value in flags.items() if flag in fields and value is not None}
