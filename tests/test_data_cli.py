"""`keel data list|show|load` and the source flags of `keel run`: behaviour and one-line errors."""

import json

import pandas as pd
import pytest

from keel.components._common import datasets, postgres, tables
from keel.components._common.config import DataSection
from keel.components.ingest.ingest import ingest
from keel.pipelines.cli.main import EXIT_USER_ERROR, main


def _user_error(capsys, argv) -> str:
    assert main(argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("keel: error: ") and "\n" not in err
    return err


def _csv(tmp_path, rows=40):
    frame = pd.DataFrame({"x": range(rows), "when": [f"2013-01-{1 + i % 28:02d} 05:00:00" for i in range(rows)],
                          "y": [0, 1] * (rows // 2)})
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    return path


def test_list_and_show_a_local_store(tmp_path, capsys):
    store = str(tmp_path / "store")
    assert main(["data", "list", "--store", store]) == 0
    assert "no dataset versions" in capsys.readouterr().out
    meta = ingest(DataSection(source=str(_csv(tmp_path))), None, str(tmp_path / "raw"), store=store)
    version = meta["dataset"]["version"]
    assert main(["data", "list", "--store", store, "--json"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["version"] == version and record["name"] == "d" and record["source"]["kind"] == "file"
    assert main(["data", "show", f"d@{version[7:17]}", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "(data verified)" in out and "40 x 3" in out and f'version: "{version[:19]}"' in out


@pytest.mark.parametrize("argv, message", [
    (["data", "show", "nope", "--store", "{store}"], "no versions of dataset 'nope'"),
    (["data", "show", "d@zzzz", "--store", "{store}"], "is not a dataset version"),
    (["data", "list", "Bad Name", "--store", "{store}"], "dataset name: 'Bad Name' is not a dataset name"),
    (["run", "--data", "postgresql://keel@127.0.0.1:9/db", "--target", "y"], "exactly one of data.table or data.query"),
    (["run", "--data", "x.csv", "--target", "y", "--filter", "{nope"], "--filter: not valid JSON"),
    (["run", "--execution-date", "2013-01-01"], "--execution-date: does not apply to a training config"),
    (["run", "--data", "x.csv", "--target", "y", "--collection", "c"], "apply to a mongodb:// source only"),
])
def test_bad_data_commands_are_one_line(tmp_path, capsys, argv, message):
    assert message in _user_error(capsys, [a.replace("{store}", str(tmp_path / "store")) for a in argv])


def test_load_copies_a_table_into_postgres_and_refuses_bad_timestamps(tmp_path, pg, capsys):
    csv = _csv(tmp_path)
    assert main(["data", "load", str(csv), "--into", pg, "--table", "cli_loaded", "--timestamp", "when"]) == 0
    assert "loaded 40 rows into cli_loaded" in capsys.readouterr().out
    [batch] = list(postgres.stream(pg, "SELECT min(\"when\") AS first, count(*) AS n FROM cli_loaded"))
    row = batch.to_pylist()[0]
    assert row["n"] == 40 and str(row["first"]) == "2013-01-01 05:00:00+00:00"
    # Loading again replaces the rows (no duplicates).
    assert main(["data", "load", str(csv), "--into", pg, "--table", "cli_loaded", "--timestamp", "when"]) == 0
    assert "(replaced 40)" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("x,when\n1,2013-01-01\n2,not a time\n")
    assert "row 1, column 'when': 'not a time' is not a timestamp" in _user_error(
        capsys, ["data", "load", str(bad), "--into", pg, "--table", "t2", "--timestamp", "when"])
    assert "'missing' is not a column" in _user_error(
        capsys, ["data", "load", str(csv), "--into", pg, "--table", "t2", "--timestamp", "missing"])


def test_dataset_versions_live_in_an_s3_store_too(tmp_path, s3_store):
    data = DataSection(source=str(_csv(tmp_path)))
    meta = ingest(data, None, str(tmp_path / "raw"), store=s3_store)
    [record] = datasets.versions(s3_store)
    assert record["uri"].startswith(f"{s3_store}/datasets/d/") and record["version"] == meta["dataset"]["version"]
    table, _ = datasets.load(s3_store, "d", record["version"][7:19])
    assert tables.arrow_hash(table) == record["version"] and table.num_rows == 40
