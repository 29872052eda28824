"""The `keel` CLI: help, the quick path, and one line + non-zero exit for every user error."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from keel.pipelines.cli.main import EXIT_USER_ERROR, main
from testkit.system_packages import skip_unless

KEEL = [str(Path(sys.executable).with_name("keel"))]


def _frame(n=60):
    return pd.DataFrame({
        "id": range(n),
        "income": [1000.0 + 37 * i for i in range(n)],
        "region": ["north", "south", "east"] * (n // 3),
        "note": [f"free text {i}" for i in range(n)],
        "defaulted": ["yes", "no", "no"] * (n // 3),
    })


def _user_error(capsys, argv) -> str:
    assert main(argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("keel: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_help_explains_every_command():
    out = subprocess.run(KEEL + ["--help"], capture_output=True, text=True, check=True).stdout
    for command in ("run", "check", "compile"):
        assert command in out
    run_help = subprocess.run(KEEL + ["run", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--data" in run_help and "--target" in run_help and "--runner" in run_help


@pytest.mark.parametrize("config", sorted(Path("pipelines/configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_config_passes_preflight(config, capsys, request, tmp_path):
    raw = yaml.safe_load(config.read_text())
    if str(raw.get("data", {}).get("source", "")).startswith("fashion-mnist"):
        skip_unless("dataset-fashion-mnist")  # its pre-flight reads the installed images, as it should
    if raw.get("pipeline") == "backfill":  # its pre-flight asks the database: the test server, with the table's columns
        import psycopg

        from testkit.postgres import PASSWORD

        uri = request.getfixturevalue("pg")
        with psycopg.connect(uri, password=PASSWORD, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS flights (time_hour timestamptz, origin text, dest text, carrier text, "
                         "distance bigint, dep_delay float8, arr_delay float8, air_time float8)")
        raw["data"]["source"] = uri
        config = tmp_path / config.name
        config.write_text(yaml.safe_dump(raw))
    if raw.get("pipeline") == "monitoring":  # its pre-flight needs the model in production, with its training data
        from testkit.models import production_model

        raw["registry"]["store"] = str(tmp_path / "store")
        production_model(raw["registry"]["store"], raw["registry"]["model_name"], rows=500)
        config = tmp_path / config.name
        config.write_text(yaml.safe_dump(raw))
    assert main(["check", str(config)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_check_passes_on_the_default_config(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "ok: loans-high-risk: 10,000 rows x 42 columns" in out


def test_quick_path_infers_task_and_drops_identifiers(tmp_path, capsys):
    path = tmp_path / "credit.csv"
    _frame().to_csv(path, index=False)
    assert main(["check", "--data", str(path), "--target", "defaulted"]) == 0
    out = capsys.readouterr().out
    assert "target 'defaulted' (binary)" in out and "x 3 columns" in out  # id and note dropped


def test_quick_path_flags_override(tmp_path, capsys):
    path = tmp_path / "credit.parquet"
    _frame().to_parquet(path, index=False)
    assert main(["check", "--data", str(path), "--target", "income", "--model", "random_forest", "--drop", "region"]) == 0
    out = capsys.readouterr().out
    assert "(regression); model random_forest" in out and "x 2 columns" in out


def _write_config(tmp_path, **changes) -> str:
    raw = yaml.safe_load(Path("pipelines/configs/default.yaml").read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"model__colour": "red"}, "model.colour: unknown key"),
        ({"split__seed": "forty-two"}, "split.seed: Input should be a valid integer"),
        ({"model__family": "svm"}, "model.family: got 'svm'; allowed:"),
        ({"model__params": {"max_itr": 10}}, "model.params.max_itr"),
        ({"evaluation__min": {"auc": 0.7}}, "evaluation.min.auc: not a metric for task binary"),
        ({"target__column": "grad"}, "target.column: 'grad' is not a column"),
        ({"features__bucketize": {"incomee": 4}}, "features.bucketize.incomee: column 'incomee' is not in the data"),
    ],
    ids=["unknown-key", "wrong-type", "bad-choice", "bad-hyperparameter", "unknown-metric", "target-absent", "unknown-column"],
)
def test_bad_config_is_one_line(tmp_path, capsys, changes, expected):
    assert expected in _user_error(capsys, ["check", _write_config(tmp_path, **changes)])


@pytest.mark.parametrize(
    "content, target, expected",
    [
        (b"", "y", "empty (0 bytes)"),
        (b"a;y\n1;0\n2;1\n", "y", None),
        (b"x,y\n1,1\n2,1\n3,1\n", "y", "single class"),
        (b"x,empty,y\n1,,0\n2,,1\n", "y", "['empty'] are entirely null"),
        ("x,y\nné,0\nb,1\n".encode("latin-1"), "y", "not valid utf-8"),
    ],
    ids=["empty", "semicolons-sniffed", "single-class", "all-null", "encoding"],
)
def test_bad_data_is_one_line_and_nothing_is_written(tmp_path, capsys, content, target, expected):
    data = tmp_path / "d.csv"
    data.write_bytes(content)
    store = tmp_path / "store"
    argv = ["run", "--data", str(data), "--target", target, "--store", str(store)]
    if expected is None:  # a readable file: check it instead of running it
        assert main(["check", *argv[1:]]) == 0
        return
    assert expected in _user_error(capsys, argv)
    assert not store.exists()


def test_corrupt_parquet_via_the_console_script(tmp_path):
    data = tmp_path / "d.parquet"
    data.write_bytes(b"PAR1 not really")
    result = subprocess.run(KEEL + ["run", "--data", str(data), "--target", "y", "--store", str(tmp_path / "s")],
                            capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == EXIT_USER_ERROR
    assert result.stderr.strip().startswith("keel: error: ") and "not a readable Parquet file" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "s").exists()


def test_missing_config_and_data_without_target(capsys):
    assert "config file not found" in _user_error(capsys, ["run", "no/such.yaml"])
    assert "--data needs --target" in _user_error(capsys, ["run", "--data", "x.csv"])


def test_compile_writes_every_pipeline(tmp_path, capsys):
    assert main(["compile", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "training.yaml").exists()
    assert "wrote" in capsys.readouterr().out


def test_an_unknown_runner_is_refused_before_any_work(capsys):
    from keel.pipelines.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["run", "--runner", "kube"])
    assert exit_.value.code == 2 and "invalid choice: 'kube' (choose from 'local', 'docker')" in capsys.readouterr().err


def test_sensitive_flag_adds_columns_assessed_but_kept_out_of_the_model(tmp_path):
    from keel.pipelines.cli.main import _parser, resolve_config

    args = _parser().parse_args(["run", "--sensitive", "state", "--sensitive", "state"])
    cfg = resolve_config(args)
    assert cfg.fairness.sensitive == ["homeownership", "state"]  # the config's, then the flag's (once)
    assert set(cfg.features.exclude) >= {"homeownership", "state"}
    path = tmp_path / "credit.csv"
    _frame().to_csv(path, index=False)
    quick = resolve_config(_parser().parse_args(["check", "--data", str(path), "--target", "defaulted", "--sensitive", "region"]))
    assert quick.fairness.sensitive == ["region"] and "region" in quick.features.exclude


@pytest.mark.parametrize("argv, message", [
    (["run", "--sensitive", "grade"], "fairness.sensitive: 'grade' is the target column"),
    (["run", "--sensitive", "emp_title"], "'emp_title' is removed at ingest by data.pii"),
    (["run", "--sensitive", "loan_status"], "'loan_status' is removed at ingest by data.drop_columns"),
])
def test_sensitive_flag_refuses_columns_it_cannot_assess(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_pii_target_is_refused_before_reading_data(tmp_path, capsys):
    assert main(["check", _write_config(tmp_path, data__pii={"grade": "hash"})]) == 2
    assert "data.pii: lists the target column 'grade'" in capsys.readouterr().err
