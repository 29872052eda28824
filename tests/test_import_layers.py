"""The import-linter contracts in setup.cfg hold, and they would catch the imports they exist to stop.

`lint-imports` itself runs here (as in CI) so a violation fails `make test` with import-linter's own
message, which names the importing module, the imported one and the line. The other tests give the real
graph one forbidden import each and check that the contract it breaks is the one that says so: a
contract that cannot fail is not a test.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from importlinter.adapters.user_options import IniFileUserOptionReader
from importlinter.application import use_cases
from importlinter.application.app_config import settings
from importlinter.configuration import configure
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.layers import LayersContract
from importlinter.domain.contract import registry

ROOT = Path(__file__).resolve().parents[1]
SETUP_CFG = ROOT / "setup.cfg"


def test_lint_imports_passes_on_the_repository():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--config", str(SETUP_CFG), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


class _PlusOneImport:
    """grimp's graph of the real code with one more import in it."""

    def __init__(self, importer: str, imported: str):
        self.importer, self.imported = importer, imported

    def build(self, root_package_names, cache_dir, include_external_packages=False, exclude_type_checking_imports=False):
        graph = grimp.build_graph(*root_package_names, include_external_packages=include_external_packages,
                                  exclude_type_checking_imports=exclude_type_checking_imports, cache_dir=None)
        graph.add_import(importer=self.importer, imported=self.imported, line_number=1, line_contents="import (test)")
        return graph


@pytest.fixture(scope="module")
def options():
    configure()
    # lint-imports registers its built-in types itself; create_report, called directly, needs the two used here.
    registry.register(LayersContract, "layers")
    registry.register(ForbiddenContract, "forbidden")
    return IniFileUserOptionReader().read_options(config_filename=str(SETUP_CFG))


def _broken(options, importer: str, imported: str) -> set[str]:
    configure()
    settings.configure(GRAPH_BUILDER=_PlusOneImport(importer, imported))
    try:
        report = use_cases.create_report(options, cache_dir=None)
    finally:
        configure()
    return {contract.name for contract, check in report.get_contracts_and_checks() if not check.kept}


def _contract_names() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(SETUP_CFG)
    return {section.split(":")[-1]: cfg[section]["name"] for section in cfg.sections() if section.startswith("importlinter:contract:")}


@pytest.mark.parametrize("importer, imported, contract", [
    # a stage reaching into another stage (the registry used to be register's, the encoders features')
    ("keel.components.serve.model", "keel.components.register.register", "components-layers"),
    ("keel.components.fairness.fairness", "keel.components.evaluate.evaluate", "components-layers"),
    # _common importing a stage
    ("keel.components._common.storage", "keel.components.train.train", "components-layers"),
    # a component importing pipeline code
    ("keel.components.deploy.inference_service", "keel.pipelines.config", "components-below-pipelines"),
    # run records importing the CLI, the runner importing the KFP client
    ("keel.pipelines.records.runs", "keel.pipelines.cli.main", "pipelines-layers"),
    ("keel.pipelines.local.runner", "keel.pipelines.kfp.submit", "pipelines-layers"),
    # a pipeline module importing the runner
    ("keel.pipelines.training", "keel.pipelines.local.runner", "pipeline-modules"),
    ("keel.pipelines.backfill_config", "keel.pipelines.records.runs", "pipeline-modules"),
])
def test_each_contract_stops_the_import_it_forbids(options, importer, imported, contract):
    names = _contract_names()
    assert _broken(options, importer, imported) == {names[contract]}


def test_a_stage_missing_from_the_layers_contract_fails_it(options, tmp_path):
    # exhaustive: a new stage package left out of the contract is reported, not silently unchecked
    cfg = configparser.ConfigParser()
    cfg.read(SETUP_CFG)
    section = cfg["importlinter:contract:components-layers"]
    section["layers"] = section["layers"].replace(" | validate", "")
    path = tmp_path / "setup.cfg"
    with path.open("w") as out:
        cfg.write(out)
    configure()
    report = use_cases.create_report(IniFileUserOptionReader().read_options(config_filename=str(path)), cache_dir=None)
    broken = [(contract.name, check) for contract, check in report.get_contracts_and_checks() if not check.kept]
    assert [name for name, _ in broken] == [section["name"]]
    assert "validate" in str(broken[0][1].metadata)
