"""A whole local run with data.pii: no raw PII value in any file it leaves, nor in its log or terminal output."""

import contextlib
import gzip
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from keel.components._common import datasets, privacy
from keel.pipelines.config import parse_config
from keel.pipelines.local.runner import run_checked

pytestmark = pytest.mark.slow
KEY = "keel-test-pii-run-key-0123456789"
ROWS = 400
# Every raw PII value carries one of these, so a leak of any of them (or of part of one) is found.
EMAIL_MARK, NAME_MARK = "zq-person-", "zqfull"
# The dropped column's name may appear only where the policy names it: `full_name: drop` in the
# config, the dataset record and lineage, in whatever quoting JSON, Python or YAML gives it.
POLICY = re.compile(rb"""full_name[\\"']*\s*:\s*[\\"']*drop""")


def _people(path: Path) -> None:
    rng = np.random.default_rng(7)
    x1, x2 = rng.normal(size=ROWS), rng.normal(size=ROWS)
    frame = pd.DataFrame({
        "email": [None if i % 50 == 0 else f"{EMAIL_MARK}{i:04d}@example.org" for i in range(ROWS)],
        "full_name": [f"Zqfull Person{i:04d}" for i in range(ROWS)],
        "x1": x1.round(4),
        "x2": x2.round(4),
        "region": rng.choice(["north", "south", "east"], ROWS),
        "y": (x1 + 0.7 * x2 + rng.normal(scale=0.5, size=ROWS) > 0).astype(int),
    })
    frame.to_csv(path, index=False)


def _readable(path: Path) -> bytes:
    """The file's bytes, plus what they decode to where the format compresses (Parquet, gzip, zip)."""
    raw = path.read_bytes()
    parts = [raw]
    if raw[:4] == b"PAR1":
        table = pq.read_table(path)
        parts += [" ".join(table.column_names).encode(), table.to_pandas().to_csv().encode()]
    elif raw[:2] == b"\x1f\x8b":
        parts.append(gzip.decompress(raw))
    elif raw[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            parts += [archive.read(name) for name in archive.namelist()]
    return b"\n".join(parts)


def _leaks(text: bytes) -> list[str]:
    lower = text.lower()
    found = [mark for mark in (EMAIL_MARK, NAME_MARK) if mark.encode() in lower]
    if b"full_name" in POLICY.sub(b"", text):
        found.append("full_name")
    return found


@pytest.fixture(scope="module")
def pii_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pii-run")
    (root / "source").mkdir()
    source = root / "source" / "people.csv"
    _people(source)
    cfg = parse_config({
        "name": "pii-run",
        "data": {"source": str(source), "pii": {"email": "hash", "full_name": "drop"}},
        "target": {"column": "y", "task": "binary"},
        "model": {"family": "logistic_regression"},
        "evaluation": {"min": {}},
        "fairness": {"sensitive": ["region"]},
        "explain": {"sample_rows": 50, "background_rows": 10},
        "registry": {"store": str(root / "store"), "model_name": "pii-run"},
    }, "pii-run config")
    terminal = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(terminal), contextlib.redirect_stderr(terminal):
        patch.setenv(privacy.KEY_ENV, KEY)  # the steps (subprocesses, warm-start forks) inherit it
        patch.delenv(privacy.KEY_FILE_ENV, raising=False)
        run = run_checked(cfg)  # with kfp.local's cache on, so its files are scanned too
    return root, source, cfg, run, terminal.getvalue()


def test_the_run_succeeds_on_scrubbed_data(pii_run):
    _, _, cfg, run, _ = pii_run
    # Every step that ran succeeded (new steps, such as fairness and explain, are scanned below as they come).
    assert {s: r.status for s, r in run.steps.items() if r.status != "SUCCESS"} == {}
    assert {"ingest-data", "profile-data", "validate-data", "train-model", "evaluate-model", "register-model"} <= set(run.steps)
    assert run.passed is True and run.registered["version"] == "v1"
    raw = run.artifact("ingest-data", "raw")
    frame = pq.read_table(raw["uri"]).to_pandas()
    assert "full_name" not in frame and frame["email"].dropna().str.fullmatch(r"[0-9a-f]{64}").all()
    assert frame["email"].isna().sum() == ROWS // 50  # missing stays missing
    [record] = datasets.versions(cfg.registry.store)
    assert record["pii"]["columns"] == {"email": "hash", "full_name": "drop"}
    assert record["pii"]["key_id"] == privacy.key_id(KEY.encode())
    assert raw["metadata"]["pii"] == record["pii"]


def test_the_leak_check_finds_the_raw_values_in_the_source(pii_run):
    """The control: the same check on the source file finds every kind of value it looks for."""
    _, source, _, _, _ = pii_run
    assert _leaks(_readable(source)) == [EMAIL_MARK, NAME_MARK, "full_name"]


def test_no_file_the_run_left_holds_raw_pii(pii_run):
    root, source, _, _, _ = pii_run
    files = [p for p in root.rglob("*") if p.is_file() and p != source]
    assert len(files) > 20 and any(p.name == "keel-run.log" for p in files)
    leaks = {str(p.relative_to(root)): found for p in files if (found := _leaks(_readable(p)))}
    assert leaks == {}
    assert KEY.encode() not in b"".join(p.read_bytes() for p in files)


def test_the_run_log_and_the_terminal_name_the_policy_but_no_value(pii_run):
    _, _, _, run, terminal = pii_run
    log = (run.run_dir / "keel-run.log").read_bytes()
    assert POLICY.search(log) and _leaks(log) == []
    assert "ingest-data" in terminal and _leaks(terminal.encode()) == []


def test_the_registered_model_never_saw_the_dropped_column(pii_run):
    _, _, cfg, _, _ = pii_run
    from keel.components._common.registry.bundle import load_bundle

    bundle = load_bundle(cfg.registry.store, cfg.registry.model_name)
    assert "full_name" not in bundle.info["input_columns"] and "full_name" not in json.dumps(bundle.schema)
    assert bundle.lineage  # the lineage record may name the policy, and is scanned with every other file above
