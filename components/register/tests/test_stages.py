"""Registry stages: the transition table, gates, production switches, rollback, racing writers, S3."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from keel.components._common import storage
from keel.components._common.errors import ConfigError, DataError, KeelError, StorageError
from keel.components._common.registry import stages
from keel.components._common.registry.registry import Registry
from keel.components._common.registry.stages import APPROVED, ARCHIVED, CANDIDATE, PRODUCTION, StageLog

PASSED = {"metrics": {"passed": True, "detail": "roc_auc 0.81 >= 0.7"},
          "fairness": {"passed": True, "detail": "demographic_parity_ratio 0.91 >= 0.8"},
          "validation": {"passed": True, "detail": "0 rows quarantined"}}
FAILED_FAIRNESS = {**PASSED, "fairness": {"passed": False, "detail": "demographic_parity_ratio 0.62 < 0.8"}}


def publish(store, count: int, model: str = "m") -> list[int]:
    registry = Registry(str(store))
    return [registry.publish(model, {"model.joblib": f"model-{i}".encode()}) for i in range(count)]


def registered(store, count: int, gates=PASSED, approval="human", model: str = "m") -> list[int]:
    versions = publish(store, count, model)
    for version in versions:
        stages.register_version(str(store), model, version, gates, approval)
    return versions


def to_stage(store, version: int, where: str) -> None:
    """Drives a registered candidate to `where` by legal moves ("archived-served": archived after serving)."""
    store = str(store)
    if where == CANDIDATE:
        return
    if where == ARCHIVED:
        stages.transition(store, "m", version, ARCHIVED, "ada", "rejected in review")
        return
    stages.transition(store, "m", version, APPROVED, "ada", "reviewed")
    if where in (PRODUCTION, "archived-served"):
        stages.transition(store, "m", version, PRODUCTION, "ci", "deployed")
    if where == "archived-served":
        stages.transition(store, "m", version, ARCHIVED, "ada", "retired")


# -- the state machine --------------------------------------------------------------------------------------------

LEGAL = {(CANDIDATE, APPROVED), (CANDIDATE, ARCHIVED), (APPROVED, PRODUCTION), (APPROVED, ARCHIVED),
         (PRODUCTION, ARCHIVED), ("archived-served", PRODUCTION)}


@pytest.mark.parametrize("start", [CANDIDATE, APPROVED, PRODUCTION, ARCHIVED, "archived-served"])
@pytest.mark.parametrize("to", [CANDIDATE, APPROVED, PRODUCTION, ARCHIVED])
def test_transition_table(tmp_path, start, to):
    [version] = registered(tmp_path, 1)
    to_stage(tmp_path, version, start)
    before = len(stages.history(str(tmp_path), "m"))
    if (start, to) in LEGAL:
        [event] = stages.transition(str(tmp_path), "m", version, to, "ada", "because")
        assert (event["version"], event["from"], event["to"], event["by"], event["reason"]) == (
            version, start.removesuffix("-served"), to, "ada", "because")
        assert stages.stage(str(tmp_path), "m", version) == to
        return
    current = start.removesuffix("-served")
    with pytest.raises(KeelError) as err:
        stages.transition(str(tmp_path), "m", version, to, "ada", "because")
    message = str(err.value)
    assert message.startswith(f"m:v1 is {current}, it cannot move to {to}; ") and "\n" not in message
    allowed = {CANDIDATE: "approved or archived", APPROVED: "production or archived", PRODUCTION: "it can go to archived",
               ARCHIVED: "never served cannot return", "archived-served": "production (rollback)"}[start]
    assert allowed in message
    assert len(stages.history(str(tmp_path), "m")) == before  # a refusal writes nothing


def test_registration_records_the_gates_and_the_first_event(tmp_path):
    [version] = publish(tmp_path, 1)
    assert stages.stage(str(tmp_path), "m", version) == CANDIDATE  # registered before stages: a candidate
    assert stages.register_version(str(tmp_path), "m", version, PASSED, "human") == CANDIDATE
    [event] = stages.history(str(tmp_path), "m", version)
    assert (event["seq"], event["from"], event["to"], event["reason"]) == (1, None, CANDIDATE, "registered")
    assert event["gates"] == PASSED and event["at"].endswith("+00:00")
    assert json.loads((tmp_path / "registry" / "m" / "stages" / "00000001.json").read_text()) == event
    with pytest.raises(KeelError, match="m:v1: already has stage events"):
        stages.register_version(str(tmp_path), "m", version, PASSED, "human")


def test_auto_approval_needs_every_gate(tmp_path):
    first, second = publish(tmp_path, 2)
    assert stages.register_version(str(tmp_path), "m", first, PASSED, "auto") == APPROVED
    [_, approval] = stages.history(str(tmp_path), "m", first)
    assert (approval["from"], approval["to"], approval["by"], approval["reason"]) == (
        CANDIDATE, APPROVED, "keel-gates", "automatic gates passed")
    assert stages.register_version(str(tmp_path), "m", second, FAILED_FAIRNESS, "auto") == CANDIDATE


def test_a_version_whose_gate_failed_cannot_be_approved(tmp_path):
    [version] = registered(tmp_path, 1, gates=FAILED_FAIRNESS)
    with pytest.raises(KeelError, match=r"m:v1: cannot be approved, gate fairness failed \(fairness: demographic_parity_ratio 0.62 < 0.8\)"):
        stages.transition(str(tmp_path), "m", version, APPROVED, "ada", "looks fine")
    assert stages.stage(str(tmp_path), "m", version) == CANDIDATE
    # It can still be rejected.
    stages.transition(str(tmp_path), "m", version, ARCHIVED, "ada", "unfair")
    assert stages.stage(str(tmp_path), "m", version) == ARCHIVED


def test_a_version_without_recorded_gates_cannot_be_approved(tmp_path):
    [version] = publish(tmp_path, 1)
    with pytest.raises(KeelError, match="m:v1: no automatic gates were recorded at registration"):
        stages.transition(str(tmp_path), "m", version, APPROVED, "ada", "trust me")


@pytest.mark.parametrize("kwargs, message", [
    ({"by": " "}, "by: is empty"),
    ({"by": "keel-gates"}, "by: 'keel-gates' is reserved"),
    ({"reason": ""}, "reason: is empty"),
    ({"to": "staging"}, "stage 'staging' is not one of candidate, approved, production, archived"),
    ({"version": 9}, r"m:v9: no such registered version in .* \(versions: v1\)"),
])
def test_bad_arguments_are_refused(tmp_path, kwargs, message):
    [version] = registered(tmp_path, 1)
    call = {"version": version, "to": APPROVED, "by": "ada", "reason": "ok", **kwargs}
    with pytest.raises(KeelError, match=message):
        stages.transition(str(tmp_path), "m", call["version"], call["to"], call["by"], call["reason"])
    assert len(stages.history(str(tmp_path), "m")) == 1


def test_malformed_gates_and_approval_are_refused(tmp_path):
    [version] = publish(tmp_path, 1)
    with pytest.raises(ConfigError, match="governance.approval: 'sometimes'"):
        stages.register_version(str(tmp_path), "m", version, PASSED, "sometimes")
    with pytest.raises(DataError, match="gates.metrics: needs 'passed' true or false"):
        stages.register_version(str(tmp_path), "m", version, {"metrics": {"passed": "yes"}}, "human")
    with pytest.raises(DataError, match="gates: none given"):
        stages.register_version(str(tmp_path), "m", version, {}, "human")


# -- production and rollback --------------------------------------------------------------------------------------


def test_entering_production_archives_the_previous_version(tmp_path):
    store = str(tmp_path)
    v1, v2 = registered(tmp_path, 2, approval="auto")
    assert stages.production_version(store, "m") is None
    stages.transition(store, "m", v1, PRODUCTION, "ci", "deployed", target="InferenceService keel-dev/m")
    assert stages.production_version(store, "m") == v1
    promoted, archived = stages.transition(store, "m", v2, PRODUCTION, "ci", "deployed")
    assert (promoted["version"], promoted["from"], promoted["to"]) == (v2, APPROVED, PRODUCTION)
    assert (archived["version"], archived["from"], archived["to"], archived["by"]) == (v1, PRODUCTION, ARCHIVED, "ci")
    assert archived["reason"] == "replaced in production by v2: deployed" and archived["seq"] == promoted["seq"] + 1
    assert stages.production_version(store, "m") == v2 and stages.stage(store, "m", v1) == ARCHIVED
    assert stages.history(store, "m", v1)[2]["target"] == "InferenceService keel-dev/m"


def test_rollback_restores_the_previous_production_versions_in_turn(tmp_path):
    store = str(tmp_path)
    v1, v2, v3 = registered(tmp_path, 3, approval="auto")
    for version in (v1, v2, v3):
        stages.transition(store, "m", version, PRODUCTION, "ci", "deployed")
    assert stages.rollback_plan(store, "m") == (v3, v2)
    assert stages.rollback(store, "m", "ada", "v3 mispredicts", target="manifest isvc.yaml") == (v3, v2)
    assert (stages.production_version(store, "m"), stages.stage(store, "m", v3)) == (v2, ARCHIVED)
    back, retired = stages.history(store, "m")[-2:]
    assert (back["version"], back["from"], back["to"], back["target"]) == (v2, ARCHIVED, PRODUCTION, "manifest isvc.yaml")
    assert back["reason"] == "rollback from v3: v3 mispredicts" and retired["reason"] == "rolled back to v2: v3 mispredicts"
    # A second rollback goes further back, not forth to v3.
    assert stages.rollback(store, "m", "ada", "v2 too") == (v2, v1)
    with pytest.raises(KeelError, match="m:v1 is the first version of m in production; there is no earlier production version"):
        stages.rollback(store, "m", "ada", "again")


def test_rollback_is_refused_without_a_production_version(tmp_path):
    store = str(tmp_path)
    [v1] = registered(tmp_path, 1, approval="auto")
    with pytest.raises(KeelError, match="m: no version is in production, so there is nothing to roll back"):
        stages.rollback(store, "m", "ada", "oops")
    stages.transition(store, "m", v1, PRODUCTION, "ci", "deployed")
    with pytest.raises(KeelError, match="m:v1 is the first version of m in production"):
        stages.rollback(store, "m", "ada", "oops")


def test_rollback_checks_what_the_caller_deployed(tmp_path):
    store = str(tmp_path)
    v1, v2, v3 = registered(tmp_path, 3, approval="auto")
    for version in (v1, v2):
        stages.transition(store, "m", version, PRODUCTION, "ci", "deployed")
    plan = stages.rollback_plan(store, "m")
    stages.transition(store, "m", v3, PRODUCTION, "ci", "deployed meanwhile")
    with pytest.raises(KeelError, match=r"m: production changed meanwhile \(rollback now goes v3 -> v2, not v2 -> v1\)"):
        stages.rollback(store, "m", "ada", "bad", expected=plan)
    assert stages.production_version(store, "m") == v3


def test_retiring_production_leaves_none_and_a_served_version_can_return(tmp_path):
    store = str(tmp_path)
    v1, v2 = registered(tmp_path, 2, approval="auto")
    for version in (v1, v2):
        stages.transition(store, "m", version, PRODUCTION, "ci", "deployed")
    stages.transition(store, "m", v2, ARCHIVED, "ada", "retired")
    assert stages.production_version(store, "m") is None
    stages.transition(store, "m", v1, PRODUCTION, "ada", "back to v1")
    assert stages.production_version(store, "m") == v1


def test_an_interrupted_production_switch_heals_on_the_next_one(tmp_path, monkeypatch):
    """Entering production is two events; a writer that dies between them leaves two versions serving."""
    store = str(tmp_path)
    v1, v2, v3 = registered(tmp_path, 3, approval="auto")
    stages.transition(store, "m", v1, PRODUCTION, "ci", "deployed")
    real, calls = StageLog.append, []

    def store_fails_after_the_first_event(self, plan):
        calls.append(plan)
        if len(calls) > 1:
            raise StorageError("the store went away")
        return real(self, plan)

    monkeypatch.setattr(StageLog, "append", store_fails_after_the_first_event)
    with pytest.raises(StorageError, match="the store went away"):
        stages.transition(store, "m", v2, PRODUCTION, "ci", "deployed")
    monkeypatch.setattr(StageLog, "append", real)
    assert stages.production_version(store, "m") == v2 and stages.stage(store, "m", v1) == PRODUCTION
    with pytest.raises(KeelError, match=r"m:v1, the previous production version, is still production; archive m:v2 with `keel reject m:v2"):
        stages.rollback(store, "m", "ada", "bad")
    events = stages.transition(store, "m", v3, PRODUCTION, "ci", "deployed")
    assert [(e["version"], e["to"]) for e in events] == [(v3, PRODUCTION), (v1, ARCHIVED), (v2, ARCHIVED)]
    assert stages.production_version(store, "m") == v3


# -- writers that race ------------------------------------------------------------------------------------------


def test_a_writer_that_loses_the_seq_rechecks_its_move(tmp_path, monkeypatch):
    """Approve and reject race for v1: the loser re-reads the log and is refused on the stage the winner left."""
    store = str(tmp_path)
    [version] = registered(tmp_path, 1)
    real = StageLog._create_local
    raced = []

    def rival_first(self, name, data):
        if not raced:
            raced.append(name)
            stages.transition(store, "m", version, ARCHIVED, "bob", "rejected")  # takes the seq this writer planned
        return real(self, name, data)

    monkeypatch.setattr(StageLog, "_create_local", rival_first)
    with pytest.raises(KeelError, match="m:v1 is archived, it cannot move to approved"):
        stages.transition(store, "m", version, APPROVED, "ada", "approved")
    assert raced == ["00000002.json"]
    assert [(e["seq"], e["to"]) for e in stages.history(store, "m")] == [(1, CANDIDATE), (2, ARCHIVED)]


def test_racing_threads_never_lose_or_duplicate_a_seq(tmp_path):
    store = str(tmp_path)
    versions = registered(tmp_path, 8)
    start = threading.Barrier(len(versions))

    def approve(version):
        start.wait()
        return stages.transition(store, "m", version, APPROVED, f"reviewer-{version}", "ok")[0]["seq"]

    with ThreadPoolExecutor(len(versions)) as pool:
        seqs = list(pool.map(approve, versions))
    assert sorted(seqs) == list(range(9, 17))
    events = stages.history(store, "m")
    assert [e["seq"] for e in events] == list(range(1, 17))
    assert all(stages.stage(store, "m", v) == APPROVED for v in versions)
    assert not [p for p in Path(StageLog(store, "m").uri).iterdir() if p.name.startswith(".")]  # no temp files left


def test_racing_approvals_of_one_version_let_exactly_one_through(tmp_path):
    store = str(tmp_path)
    [version] = registered(tmp_path, 1)
    start = threading.Barrier(2)

    def approve(who):
        start.wait()
        try:
            return stages.transition(store, "m", version, APPROVED, who, "reviewed")[0]["by"]
        except KeelError as err:
            return str(err)

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(approve, ["ada", "bob"]))
    winners = [o for o in outcomes if o in ("ada", "bob")]
    assert len(winners) == 1 and len(stages.history(store, "m")) == 2
    assert stages.history(store, "m")[-1]["by"] == winners[0]
    [loser] = [o for o in outcomes if o not in winners]
    assert loser == "m:v1 is approved, it cannot move to approved; it can go to production or archived"


def test_a_hand_edited_event_is_refused_by_name(tmp_path):
    registered(tmp_path, 1)
    path = tmp_path / "registry" / "m" / "stages" / "00000001.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match=r"00000001.json: not valid JSON"):
        stages.history(str(tmp_path), "m")
    path.write_text(json.dumps({"seq": 4, "version": 1, "to": CANDIDATE}))
    with pytest.raises(DataError, match=r"00000001.json: is not a stage event for seq 1"):
        stages.stage(str(tmp_path), "m", 1)


# -- S3 (a real server: nanio) ----------------------------------------------------------------------------------


@pytest.mark.slow  # a real S3 server (nanio)
def test_s3_store_stages_production_and_rollback(s3_store):
    v1, v2 = registered(s3_store, 2, approval="auto")
    for version in (v1, v2):
        stages.transition(s3_store, "m", version, PRODUCTION, "ci", "deployed")
    assert stages.production_version(s3_store, "m") == v2 and stages.stage(s3_store, "m", v1) == ARCHIVED
    assert stages.rollback(s3_store, "m", "ada", "bad") == (v2, v1)
    assert [e["seq"] for e in stages.history(s3_store, "m")] == list(range(1, 10))
    log = StageLog(s3_store, "m")
    assert storage.list_names(storage.join(log.uri, stages.CLAIMS)) == []  # every claim cleaned up


@pytest.mark.slow  # a real S3 server (nanio)
def test_s3_a_live_foreign_claim_blocks_the_seq_and_says_where(s3_store, monkeypatch):
    [version] = registered(s3_store, 1)
    log = StageLog(s3_store, "m")
    import time

    foreign = f"00000002.{int(time.time() * 1000)}.{'f' * 32}"
    storage.write_bytes(storage.join(log.uri, stages.CLAIMS, foreign), b"{}")
    monkeypatch.setattr(stages, "_MAX_ATTEMPTS", 2)
    with pytest.raises(StorageError, match=rf"gave up after 2 attempts.*claim .*{foreign} holds it: if no keel command is running"):
        stages.transition(s3_store, "m", version, APPROVED, "ada", "ok")
    assert storage.list_names(storage.join(log.uri, stages.CLAIMS)) == [foreign]  # ours were withdrawn: seq 2 stays free
    stages._delete_s3(storage.join(log.uri, stages.CLAIMS, foreign))
    [event] = stages.transition(s3_store, "m", version, APPROVED, "ada", "ok")
    assert event["seq"] == 2


@pytest.mark.slow  # a real S3 server (nanio)
def test_s3_an_expired_claim_of_a_killed_writer_is_ignored(s3_store):
    [version] = registered(s3_store, 1)
    log = StageLog(s3_store, "m")
    stale = f"00000002.{1_000_000_000_000}.{'d' * 32}"  # made in 2001
    storage.write_bytes(storage.join(log.uri, stages.CLAIMS, stale), b"{}")
    [event] = stages.transition(s3_store, "m", version, APPROVED, "ada", "ok")
    assert event["seq"] == 2


@pytest.mark.slow  # a real S3 server (nanio)
def test_s3_racing_writers_get_distinct_seqs(s3_store):
    versions = registered(s3_store, 2)
    start = threading.Barrier(2)

    def approve(version):
        start.wait()
        return stages.transition(s3_store, "m", version, APPROVED, "ada", "ok")[0]["seq"]

    with ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(approve, versions)) == [3, 4]
    assert [e["seq"] for e in stages.history(s3_store, "m")] == list(range(1, 5))
