"""Registry stages: candidate -> approved -> production -> archived, as an append-only event log.

A registered version never changes (registry.py), so its stage is not in its
bundle: it is the `to` of its last event in
`{store}/registry/{model}/stages/{seq:08d}.json`. Each event is
`{"seq", "version", "from", "to", "by", "reason", "at"}` plus, where they
apply, `"gates"` (recorded at registration) and `"target"` (what a deploy
applied or wrote). Registration writes the first event (from null to
candidate); a version registered before stages existed has no event and reads
as a candidate without recorded gates, which cannot be approved.

Transitions (anything else is refused):

    candidate  -> approved   (every automatic gate passed at registration)
    candidate  -> archived   (rejected)
    approved   -> production (the production version before it is archived)
    approved   -> archived
    production -> archived
    archived   -> production (only a version that served before: a rollback)

Writers never race silently. The next event's seq is the last one's plus one,
and it is claimed before it is written; a writer that loses the claim re-reads
the log and checks its transition again against what the winner wrote, so each
transition is decided on the stage it actually follows:

* Local: the event is written to a temporary file and hard-linked to its
  final name. link(2), like open(2) with O_EXCL, fails when the name exists,
  and unlike O_EXCL it publishes the file with its content, so no reader sees
  a half-written event.
* S3 (no conditional PUT through minio): as Registry._publish_s3, a writer
  claims seq N with `stages/.claims/{N:08d}.{ms}.{random}` and goes on only if
  it sees no other live claim for N and no event N; list-after-write is
  strongly consistent, so of two claimers at least one sees the other. A loser
  deletes its claim (so N is not burned: events never skip a number) and
  tries again. A claim left by a killed writer blocks N until it is
  CLAIM_EXPIRY_S old. What remains: a writer slower than that, or one that
  ignores the claims, can overwrite event N; and entering production is two
  events, so a writer killed between them leaves two versions in production
  (production_version() gives the newer; the next promotion archives both).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from keel.components._common import lineage, storage
from keel.components._common.errors import ConfigError, DataError, KeelError, StorageError
from keel.components._common.registry.registry import Registry

CANDIDATE, APPROVED, PRODUCTION, ARCHIVED = "candidate", "approved", "production", "archived"
STAGES = (CANDIDATE, APPROVED, PRODUCTION, ARCHIVED)
NEXT = {CANDIDATE: (APPROVED, ARCHIVED), APPROVED: (PRODUCTION, ARCHIVED), PRODUCTION: (ARCHIVED,), ARCHIVED: (PRODUCTION,)}
GATES_ACTOR = "keel-gates"  # who approves when approval is "auto"; reserved, no person may use it
GATE_NAMES = ("metrics", "fairness", "validation")
APPROVALS = ("human", "auto")
STAGES_DIR = "stages"
CLAIMS = ".claims"
CLAIM_EXPIRY_S = 600  # a claim this old with no event is a killed writer's; its seq may be taken
_EVENT_FILE = re.compile(r"^([0-9]{8})\.json$")
_MAX_ATTEMPTS = 50


@dataclass
class _Version:
    stage: str = CANDIDATE
    gates: dict | None = None  # None: registered before stages existed, or not through register_version
    served: bool = False  # has been in production at some point
    entered_production: int = 0  # seq of its latest move into production
    last: dict | None = None


@dataclass
class _State:
    """What the log says, folded in seq order."""

    versions: dict[int, _Version] = field(default_factory=dict)
    # Production versions, oldest first; a rollback returns to the one below the top.
    served_stack: list[int] = field(default_factory=list)
    last_seq: int = 0

    def of(self, version: int) -> _Version:
        return self.versions.get(version) or _Version()

    def in_production(self) -> list[int]:
        return sorted((v for v, s in self.versions.items() if s.stage == PRODUCTION), key=lambda v: self.versions[v].entered_production)


def _fold(events: list[dict]) -> _State:
    state = _State()
    for event in events:
        number, to = event["version"], event["to"]
        entry = state.versions.setdefault(number, _Version())
        if event.get("from") is None:
            entry.gates = event.get("gates")
        if to == PRODUCTION:
            entry.served, entry.entered_production = True, event["seq"]
            if number in state.served_stack:
                # Back to a version that served before: the newer ones above it are what was rolled back.
                del state.served_stack[state.served_stack.index(number) + 1:]
            else:
                state.served_stack.append(number)
        elif event.get("from") == PRODUCTION and state.served_stack and state.served_stack[-1] == number:
            # The newest production version retired with no successor. (One archived because another
            # replaced it stays on the stack: it is what a rollback returns to.)
            state.served_stack.pop()
        entry.stage, entry.last = to, event
        state.last_seq = event["seq"]
    return state


class StageLog:
    """The stage events of one model: reading them, and appending one without racing other writers.

    Args:
        store: the registry store (local directory or s3://bucket/prefix).
        model: the registered model name.
    """

    def __init__(self, store: str, model: str):
        self.registry = Registry(store)
        self.model = model
        self.uri = storage.join(self.registry.model_uri(model), STAGES_DIR)

    def label(self, version: int) -> str:
        return f"{self.model}:v{version}"

    def events(self) -> list[dict]:
        """Every event, in seq order (each file's JSON checked against its name)."""
        names = sorted(n for n in storage.list_names(self.uri) if _EVENT_FILE.match(n))
        uris = [storage.join(self.uri, name) for name in names]
        if storage.is_s3(self.uri) and len(uris) > 1:
            # One GET per event: in parallel, or every stage lookup costs a round trip per event.
            with ThreadPoolExecutor(storage.FILE_WORKERS) as pool:
                contents = list(pool.map(storage.read_bytes, uris))
        else:
            contents = [storage.read_bytes(uri) for uri in uris]
        events = []
        for name, uri, content in zip(names, uris, contents):
            try:
                event = json.loads(content)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise DataError(f"{uri}: not valid JSON ({err}); the stage log was edited by hand, restore the file") from None
            seq = int(_EVENT_FILE.match(name).group(1))
            if (not isinstance(event, dict) or event.get("seq") != seq or not isinstance(event.get("version"), int)
                    or event.get("to") not in STAGES):
                raise DataError(f"{uri}: is not a stage event for seq {seq} (needs seq, version and to); restore the file")
            events.append(event)
        return events

    def state(self) -> _State:
        return _fold(self.events())

    def require_registered(self, version: int) -> None:
        versions = self.registry.versions(self.model)
        if version not in versions:
            known = ", ".join(f"v{v}" for v in versions) or "none"
            raise StorageError(f"{self.label(version)}: no such registered version in {self.registry.store} (versions: {known})")

    def append(self, plan: Callable[[_State], dict | None]) -> dict | None:
        """Appends the event `plan` decides on, given the log as it is; None writes nothing.

        `plan` is called again on the fresh log whenever another writer took
        the seq first, so a transition is always checked against the stage it
        really follows. It raises KeelError to refuse.
        """
        for attempt in range(_MAX_ATTEMPTS):
            state = self.state()
            event = plan(state)
            if event is None:
                return None
            seq = state.last_seq + 1
            event = {"seq": seq, **event, "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
            data = (json.dumps(event, indent=1, sort_keys=True) + "\n").encode()
            name = f"{seq:08d}.json"
            if self._create_s3(seq, name, data) if storage.is_s3(self.uri) else self._create_local(name, data):
                return event
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # jitter, so racing writers do not meet again
        raise StorageError(f"{self.uri}: gave up after {_MAX_ATTEMPTS} attempts to append a stage event; "
                           f"other writers kept taking the next seq{self._blocking_claims()}")

    def _create_local(self, name: str, data: bytes) -> bool:
        directory = Path(self.uri)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".event-", suffix=".tmp")
        except OSError as err:
            raise StorageError(f"{directory}: cannot write the stage log ({err.strerror or err}); check registry.store") from err
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, directory / name)
            except FileExistsError:
                return False  # another writer took this seq
            except OSError as err:
                raise StorageError(f"{directory / name}: cannot create the stage event ({err.strerror or err}); "
                                   "the store's file system must support hard links") from err
            return True
        finally:
            os.unlink(tmp)

    def _create_s3(self, seq: int, name: str, data: bytes) -> bool:
        claims = storage.join(self.uri, CLAIMS)
        mine = f"{seq:08d}.{int(time.time() * 1000)}.{uuid.uuid4().hex}"
        record = json.dumps({"by": lineage.actor(), "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
        _put_claim(storage.join(claims, mine), record.encode())
        rivals = [c for c in storage.list_names(claims) if c.startswith(f"{seq:08d}.") and c != mine and not _expired(c)]
        if rivals or storage.exists(storage.join(self.uri, name)):
            _delete_s3(storage.join(claims, mine))  # so that seq stays free for whoever wins it
            return False
        storage.write_bytes(storage.join(self.uri, name), data, content_type="application/json")
        _delete_s3(storage.join(claims, mine))  # event `seq` exists now: nobody will claim it again
        return True

    def _blocking_claims(self) -> str:
        if not storage.is_s3(self.uri):
            return ""
        live = [c for c in storage.list_names(storage.join(self.uri, CLAIMS)) if not _expired(c)]
        if not live:
            return ""
        return (f"; claim {storage.join(self.uri, CLAIMS, live[0])} holds it: if no keel command is running, a killed writer "
                f"left it, and it expires {CLAIM_EXPIRY_S // 60} minutes after it was made (or delete it)")


def _expired(claim: str) -> bool:
    parts = claim.split(".")
    try:
        made_ms = int(parts[1])
    except (IndexError, ValueError):
        return False  # not one of ours: respect it
    return time.time() - made_ms / 1000 > CLAIM_EXPIRY_S


def _put_claim(uri: str, data: bytes) -> None:
    # One plain PUT: a claim's name is what counts, so it needs none of storage.write_bytes'
    # staging and checksum round trips (three more requests on every append).
    import io

    from minio.error import MinioException

    bucket, key = storage.split_s3(uri)
    try:
        storage.s3_client().put_object(bucket, key, io.BytesIO(data), len(data), content_type="application/json")
    except MinioException as err:
        raise StorageError(f"{uri}: cannot write the stage claim ({err}); check the store's credentials and bucket") from err


def _delete_s3(uri: str) -> None:
    from minio.error import MinioException

    bucket, key = storage.split_s3(uri)
    try:
        storage.s3_client().remove_object(bucket, key)
    except MinioException as err:
        raise StorageError(f"{uri}: cannot delete the stage claim ({err}); delete it by hand, or it blocks the stage log "
                           f"for {CLAIM_EXPIRY_S // 60} minutes") from err


# -- the public API -------------------------------------------------------------------------------------------------


def _number(version: int | str) -> int:
    if isinstance(version, int) and not isinstance(version, bool) and version > 0:
        return version
    match = re.fullmatch(r"v?([1-9][0-9]*)", str(version).strip().lower())
    if not match:
        raise KeelError(f"version {version!r} is not valid; give a number or v<number>")
    return int(match.group(1))


def _text(name: str, value: str | None, what: str) -> str:
    text = " ".join(str(value or "").split())
    if not text:
        raise KeelError(f"{name}: is empty; {what}")
    return text


def _check_gates(gates) -> dict[str, dict]:
    if not isinstance(gates, dict) or not gates:
        raise DataError(f"gates: none given; record at least one of {', '.join(GATE_NAMES)} as {{'passed': bool, 'detail': str}}")
    checked = {}
    for name, gate in gates.items():
        if not isinstance(gate, dict) or not isinstance(gate.get("passed"), bool):
            raise DataError(f"gates.{name}: needs 'passed' true or false (and a 'detail' line), got {gate!r}")
        checked[str(name)] = {"passed": gate["passed"], "detail": str(gate.get("detail") or "")}
    return checked


def failed_gates(gates: dict | None) -> list[str]:
    """The names of the gates that did not pass, in order."""
    return [name for name, gate in (gates or {}).items() if not gate.get("passed")]


def _refusal(log: StageLog, version: int, entry: _Version, to: str) -> KeelError:
    allowed = [s for s in NEXT[entry.stage] if not (entry.stage == ARCHIVED and s == PRODUCTION and not entry.served)]
    if entry.stage == ARCHIVED and not entry.served:
        then = "an archived version that never served cannot return; register a new version"
    else:
        then = f"it can go to {' or '.join(allowed)}" + (" (rollback)" if entry.stage == ARCHIVED else "")
    return KeelError(f"{log.label(version)} is {entry.stage}, it cannot move to {to}; {then}")


def _check_move(log: StageLog, state: _State, version: int, to: str) -> _Version:
    entry = state.of(version)
    if to not in NEXT[entry.stage] or (entry.stage == ARCHIVED and not entry.served):
        raise _refusal(log, version, entry, to)
    if to == APPROVED:
        if entry.gates is None:
            raise KeelError(f"{log.label(version)}: no automatic gates were recorded at registration, so it cannot be "
                            "approved; register the model again with the training pipeline")
        failed = failed_gates(entry.gates)
        if failed:
            details = "; ".join(f"{n}: {entry.gates[n]['detail'] or 'failed'}" for n in failed)
            raise KeelError(f"{log.label(version)}: cannot be approved, gate {', '.join(failed)} failed ({details}); "
                            "train a version that passes")
    return entry


def register_version(store: str, model: str, version: int | str, gates: dict[str, dict], approval: str) -> str:
    """Records a newly registered version as a candidate with its automatic gates; returns its stage after.

    Args:
        store: the registry store.
        model: the model name.
        version: the registered version (3 or "v3").
        gates: gate name -> {"passed": bool, "detail": str}, e.g. metrics, fairness, validation.
        approval: "human" (stays a candidate until `keel approve`) or "auto" (approved by
            "keel-gates" when every gate passed).

    Returns:
        "approved" (auto, every gate passed) or "candidate".

    Raises:
        ConfigError: approval is neither human nor auto.
        DataError: a gate is malformed.
        KeelError: the version already has stage events.
        StorageError: no such version, or the store cannot be written.
    """
    if approval not in APPROVALS:
        raise ConfigError(f"governance.approval: {approval!r} is not one of {', '.join(APPROVALS)}")
    number, checked = _number(version), _check_gates(gates)
    log = StageLog(store, model)
    log.require_registered(number)

    def plan(state: _State) -> dict:
        if number in state.versions:
            raise KeelError(f"{log.label(number)}: already has stage events (it is {state.versions[number].stage}); "
                            "a version is registered once")
        return {"version": number, "from": None, "to": CANDIDATE, "by": lineage.actor(), "reason": "registered", "gates": checked}

    log.append(plan)
    if approval == "auto" and not failed_gates(checked):
        _move(log, number, APPROVED, GATES_ACTOR, "automatic gates passed", None)
        return APPROVED
    return CANDIDATE


def transition(store: str, model: str, version: int | str, to: str, by: str, reason: str, target: str | None = None) -> list[dict]:
    """Moves a version to another stage; returns the events written, in order.

    Entering production also archives the version that was in production
    before (a second event). Refusals name the version, its stage and where
    it can go.

    Args:
        store: the registry store.
        model: the model name.
        version: the version (3 or "v3").
        to: approved, production or archived.
        by: who decides (a person's name, or the account that deploys); "keel-gates" is reserved.
        reason: why, one line.
        target: what was applied or written for production (an InferenceService, a manifest path).

    Raises:
        KeelError: the move is not allowed, a gate failed (approval), or by/reason is empty.
        StorageError: no such version, or the store cannot be written.
    """
    if to not in STAGES:
        raise KeelError(f"stage {to!r} is not one of {', '.join(STAGES)}")
    who = _text("by", by, "name who decides (e.g. --by 'Ada Lovelace')")
    if who == GATES_ACTOR:
        raise KeelError(f"by: {GATES_ACTOR!r} is reserved for automatic approval; give your own name")
    why = _text("reason", reason, "say why, in one line (e.g. --reason 'reviewed the fairness report')")
    number = _number(version)
    log = StageLog(store, model)
    log.require_registered(number)
    return _move(log, number, to, who, why, target)


def _move(log: StageLog, number: int, to: str, by: str, reason: str, target: str | None,
          check: Callable[[_State], None] | None = None, retire_reason: str | None = None) -> list[dict]:
    replaced: list[int] = []

    def plan(state: _State) -> dict:
        if check is not None:
            check(state)
        entry = _check_move(log, state, number, to)
        if to == PRODUCTION:
            replaced[:] = [v for v in state.in_production() if v != number]
        event = {"version": number, "from": entry.stage, "to": to, "by": by, "reason": reason}
        return {**event, "target": target} if target else event

    events = [log.append(plan)]
    for previous in list(replaced):
        def retire(state: _State, previous=previous) -> dict | None:
            if state.of(previous).stage != PRODUCTION:
                return None  # another writer archived it meanwhile
            return {"version": previous, "from": PRODUCTION, "to": ARCHIVED, "by": by,
                    "reason": retire_reason or f"replaced in production by v{number}: {reason}"}

        archived = log.append(retire)
        if archived is not None:
            events.append(archived)
    return events


def stage(store: str, model: str, version: int | str) -> str:
    """The version's current stage (a registered version with no event is a candidate).

    Raises:
        StorageError: the version is not registered.
    """
    number, log = _number(version), StageLog(store, model)
    state = log.state()
    if number not in state.versions:
        log.require_registered(number)
    return state.of(number).stage


def gates(store: str, model: str, version: int | str) -> dict | None:
    """The automatic gates recorded at registration; None when none were."""
    return StageLog(store, model).state().of(_number(version)).gates


def history(store: str, model: str, version: int | str | None = None) -> list[dict]:
    """The stage events of a model (or of one version), oldest first."""
    events = StageLog(store, model).events()
    if version is None:
        return events
    number = _number(version)
    return [e for e in events if e["version"] == number]


def production_version(store: str, model: str) -> int | None:
    """The version in production (the one that entered it last), or None."""
    serving = StageLog(store, model).state().in_production()
    return serving[-1] if serving else None


def rollback_plan(store: str, model: str) -> tuple[int, int]:
    """(current production version, the version a rollback returns to), without writing anything.

    Raises:
        KeelError: no version is in production, or none served before it.
    """
    log = StageLog(store, model)
    return _rollback_pair(log, log.state())


def _rollback_pair(log: StageLog, state: _State) -> tuple[int, int]:
    serving = state.in_production()
    if not serving:
        raise KeelError(f"{log.model}: no version is in production, so there is nothing to roll back; "
                        "`keel models` shows the stages")
    current = serving[-1]
    stack = state.served_stack
    if current not in stack or stack.index(current) == 0:
        raise KeelError(f"{log.label(current)} is the first version of {log.model} in production; there is no earlier "
                        "production version to roll back to")
    previous = stack[stack.index(current) - 1]
    if state.of(previous).stage != ARCHIVED:
        # Only after a production switch was interrupted between its two events: both serve.
        raise KeelError(f"{log.label(previous)}, the previous production version, is still {state.of(previous).stage}; "
                        f"archive {log.label(current)} with `keel reject {log.label(current)} --by NAME --reason TEXT` "
                        f"to fall back to it")
    return current, previous


def rollback(store: str, model: str, by: str, reason: str, *, target: str | None = None,
             expected: tuple[int, int] | None = None) -> tuple[int, int]:
    """Returns the previous production version to production and archives the current one.

    Args:
        store: the registry store.
        model: the model name.
        by: who rolls back.
        reason: why, one line.
        target: what was applied or written for the restored version.
        expected: (from, to) the caller already deployed; refused if the log has moved on since.

    Returns:
        (the version archived, the version back in production).

    Raises:
        KeelError: nothing to roll back to, or the log no longer matches `expected`.
    """
    who = _text("by", by, "name who rolls back")
    if who == GATES_ACTOR:
        raise KeelError(f"by: {GATES_ACTOR!r} is reserved for automatic approval; give your own name")
    why = _text("reason", reason, "say why, in one line")
    log = StageLog(store, model)
    pair = _rollback_pair(log, log.state()) if expected is None else expected

    def still(state: _State) -> None:
        now = _rollback_pair(log, state)
        if now != pair:
            raise KeelError(f"{log.model}: production changed meanwhile (rollback now goes v{now[0]} -> v{now[1]}, "
                            f"not v{pair[0]} -> v{pair[1]}); check `keel models {log.model}` and run it again")

    _move(log, pair[1], PRODUCTION, who, f"rollback from v{pair[0]}: {why}", target, check=still,
          retire_reason=f"rolled back to v{pair[1]}: {why}")
    return pair
