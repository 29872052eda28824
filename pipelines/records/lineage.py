"""The lineage of a registered model version as a graph, and the lineage completeness of a run.

`chain()` starts from the version's lineage.json (every artifact the register
step recorded, with its parents) and fills in what lies between from the run
that registered it (e.g. the feature matrices the model was fitted on), then
adds what happened after: the InferenceService the run rendered and the
stage events (approval, production, rollback). Edges follow the `parents`
references every artifact carries (keel.components._common.lineage.stamp).

`completeness()` is the check behind "every artifact has a complete
lineage": each output artifact of a run carries every stamp key, and each of
its parents resolves to another artifact of the run, a dataset version, or
the configured source; nothing is an orphan.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from keel.components._common.errors import KeelError
from keel.components._common.lineage import STAMP_KEYS

KINDS = ("source", "dataset", "artifact", "bundle", "stage", "deployment")
_REGISTER_STEPS = ("register-model", "register-image-model")


@dataclasses.dataclass
class Node:
    """One thing in a lineage graph.

    Attributes:
        id: unique key (an artifact's URI, or `<kind>:<key>` for what has none).
        name: what to call it (the bundle's name for an artifact, else its output name).
        kind: one of KINDS.
        step: the pipeline step that produced it, when known.
        detail: one more line (a stage event's who/when/why, a deployment's target).
    """

    id: str
    name: str
    kind: str
    uri: str = ""
    content_hash: str = ""
    created_by: str = ""
    created_at: str = ""
    code_version: str = ""
    step: str = ""
    detail: str = ""

    @property
    def short_hash(self) -> str:
        return self.content_hash.removeprefix("sha256:")[:12]


@dataclasses.dataclass
class Lineage:
    """A model version's lineage: nodes, parent -> child edges, and its stage events."""

    model_name: str
    version: int
    uri: str
    nodes: dict[str, Node]
    edges: list[tuple[str, str]]
    events: list[dict] = dataclasses.field(default_factory=list)
    run_id: str | None = None
    bundle_id: str = ""

    @property
    def label(self) -> str:
        return f"{self.model_name}:v{self.version}"

    def parents(self, node_id: str) -> list[str]:
        return [a for a, b in self.edges if b == node_id]

    def layers(self) -> dict[str, int]:
        """Each node's column: the length of the longest path reaching it from a root."""
        layer: dict[str, int] = {}
        parents = {n: [] for n in self.nodes}
        for a, b in self.edges:
            parents[b].append(a)

        def depth(node: str, visiting: frozenset = frozenset()) -> int:
            if node not in layer:
                if node in visiting:  # a cycle cannot come from parents references, but never loop on one
                    return 0
                layer[node] = max((depth(p, visiting | {node}) + 1 for p in parents[node]), default=0)
            return layer[node]

        for node in self.nodes:
            depth(node)
        return layer

    def ordered(self) -> list[Node]:
        """Nodes from the source to the deployment: by column, then in the order they were found."""
        layer = self.layers()
        position = {n: i for i, n in enumerate(self.nodes)}
        return sorted(self.nodes.values(), key=lambda n: (layer[n.id], position[n.id]))

    def lines(self) -> list[str]:
        """The chain as text: one line per node (name, short hash, URI, who and when)."""
        out = [f"{self.label}  {self.uri}" + (f"  (run {self.run_id})" if self.run_id else "")]
        for node in self.ordered():
            who = " ".join(x for x in (node.created_by, node.created_at) if x)
            text = f"  {node.name:<22} {node.short_hash or '-':<12}  {node.uri or '-'}"
            if who:
                text += f"  [{who}]"
            if node.detail:
                text += f"  {node.detail}"
            out.append(text)
        return out


def chain(store: str, model: str, version: int | str = "latest", *, root: str | Path | None = None) -> Lineage:
    """The lineage of a registered version, from its data source to its deployment.

    Args:
        store: the registry store.
        model: the registered model name.
        version: a version number, "v<N>" or "latest".
        root: the pipeline root holding the run that registered it (default: the store's, see
            keel.pipelines.records.runs.runs_root); without that run, the chain holds what lineage.json records.

    Raises:
        StorageError, DataError: no such version, or its files fail their hashes.
    """
    from keel.components._common.registry.bundle import INFO_FILE, LINEAGE_FILE, parse_version
    from keel.components._common.registry.registry import Registry
    from keel.pipelines.records.runs import list_runs, runs_root

    registry = Registry(store)
    number = parse_version(version) or registry.latest(model)
    if number is None:
        raise KeelError(f"{registry.model_uri(model)}: model {model!r} has no registered version; run the training pipeline")
    manifest, files = registry.read_verified(model, number)  # the lineage shown is the one the bundle's hashes cover
    record = json.loads(files[LINEAGE_FILE])
    info = json.loads(files[INFO_FILE]) if INFO_FILE in files else {}
    run = next((r for r in list_runs(root or runs_root(store)) if _registered_here(r, model, number)), None)
    graph = _Builder(run)
    bundle = Node(f"bundle:{model}:v{number}", f"bundle v{number}", "bundle", registry.uri(model, number),
                  manifest.get("bundle_hash", ""), record.get("created_by", ""), record.get("created_at", "") or info.get("created_at", ""),
                  record.get("code_version", ""), step="register-model")
    graph.add(bundle)
    if run is not None:
        for step in _REGISTER_STEPS:
            output = (run.step(step).outputs if run.step(step) else {}).get("bundle")
            if isinstance(output, dict) and output.get("uri"):
                graph.alias[output["uri"]] = bundle.id  # the register step's own output is this bundle
    for name, artifact in (record.get("artifacts") or {}).items():
        node = graph.artifact_node(name, artifact)
        graph.link_parents(node.id, artifact.get("parents") or [])
        graph.edge(node.id, bundle.id)
    graph.expand()
    if run is not None:
        deploy = run.step("deploy-model")
        manifest_out = (deploy.outputs if deploy else {}).get("manifest")
        if isinstance(manifest_out, dict) and manifest_out.get("uri"):
            meta = manifest_out.get("metadata", {})
            node = graph.artifact_node("deployment", manifest_out, kind="deployment")
            node.detail = " ".join(f"{k}={meta[k]}" for k in ("namespace", "name", "action", "reason") if meta.get(k) not in (None, ""))
            graph.edge(bundle.id, node.id)
    events = stage_events(store, model, number)
    previous = bundle.id
    for event in events:
        node = _event_node(event)
        graph.add(node)
        graph.edge(previous, node.id)
        previous = node.id
    return Lineage(model, number, registry.uri(model, number), graph.nodes, graph.edges, events,
                   run.run_id if run else None, bundle.id)


def stage_events(store: str, model: str, version: int) -> list[dict]:
    """The version's stage events, oldest first (keel.components._common.registry.stages)."""
    from keel.components._common.registry import stages

    return sorted(stages.history(store, model, version), key=lambda e: (e.get("seq") or 0))


def _event_node(event: dict) -> Node:
    """A stage event as a node: who moved the version where, when and why (and what a deploy applied)."""
    to, source, target = event.get("to", "?"), event.get("from"), event.get("target")
    detail = f"{source or 'registered'} -> {to}"
    if event.get("reason"):
        detail += f": {event['reason']}"
    if target:
        detail += f"; target {json.dumps(target, sort_keys=True, default=str) if isinstance(target, dict) else target}"
    failed = [name for name, gate in (event.get("gates") or {}).items() if isinstance(gate, dict) and not gate.get("passed")]
    if event.get("gates"):
        detail += f"; gates {', '.join(event['gates'])}" + (f" (failed: {', '.join(failed)})" if failed else " passed")
    deployed = to == "production" or bool(target)
    return Node(f"stage:{event.get('seq')}", f"{'deployed: ' if deployed else 'stage: '}{to}", "deployment" if deployed else "stage",
                created_by=str(event.get("by") or ""), created_at=str(event.get("at") or ""), detail=detail)


def _registered_here(run, model: str, version: int) -> bool:
    registered = run.registered or {}
    return registered.get("model_name") == model and str(registered.get("version", "")).lstrip("v") == str(version)


class _Builder:
    """Collects nodes and edges, resolving parent references by URI, then by content hash."""

    def __init__(self, run):
        self.nodes: dict[str, Node] = {}
        self.edges: list[tuple[str, str]] = []
        self.alias: dict[str, str] = {}  # another URI of a node already in the graph
        self.pending: list[tuple[str, list]] = []  # (child node, its parent references) still to resolve
        # Everything the run produced (cached steps' outputs included), to fill in intermediate artifacts.
        self.run_artifacts = {a["uri"]: (step, a) for step, _, a in (run.artifacts() if run else []) if a.get("uri")}

    def add(self, node: Node) -> Node:
        return self.nodes.setdefault(node.id, node)

    def edge(self, parent: str, child: str) -> None:
        if parent != child and (parent, child) not in self.edges:
            self.edges.append((parent, child))

    def artifact_node(self, name: str, artifact: dict, kind: str = "artifact") -> Node:
        meta = artifact.get("metadata") if isinstance(artifact.get("metadata"), dict) else artifact
        uri = str(artifact.get("uri") or "")
        node_id = self.alias.get(uri) or uri or f"artifact:{name}"
        step = _step_of(uri)
        return self.add(Node(node_id, name, kind, uri, str(meta.get("content_hash") or ""), str(meta.get("created_by") or ""),
                             str(meta.get("created_at") or ""), str(meta.get("code_version") or ""), step=step))

    def find(self, ref: dict) -> str | None:
        """The node a parent reference names: by URI (the graph, then the run), else by content hash."""
        uri, digest = ref.get("uri") or "", ref.get("content_hash") or ""
        if uri in self.alias:
            return self.alias[uri]
        if uri and uri in self.nodes:
            return uri
        if uri in self.run_artifacts:
            return self._from_run(uri)
        if digest:  # the same content under another URI (e.g. a copy): the first node holding it
            return next((n.id for n in self.nodes.values() if n.content_hash == digest and n.kind == "artifact"), None)
        return None

    def link_parents(self, child: str, parents: list) -> None:
        self.pending.append((child, parents))

    def expand(self) -> None:
        """Resolves every pending parent reference, adding the run's intermediate artifacts as found."""
        while self.pending:
            child, parents = self.pending.pop(0)
            refs = [p for p in parents if isinstance(p, dict)]
            source = next((p for p in refs if p.get("name") == "source" and not p.get("content_hash")), None)
            dataset = next((p for p in refs if p.get("name") == "dataset"), None)
            for ref in refs:
                if ref is source:
                    node = self.add(Node(f"source:{ref.get('uri', '')}", "source", "source", ref.get("uri", "")))
                    # The source was read into the dataset version, which the run then read.
                    self.edge(node.id, self._dataset(dataset).id if dataset else child)
                    continue
                if ref is dataset:
                    self.edge(self._dataset(ref).id, child)
                    continue
                found = self.find(ref) or self._reference(ref)
                self.edge(found, child)

    def _dataset(self, ref: dict) -> Node:
        return self.add(Node(f"dataset:{ref.get('content_hash') or ref.get('uri')}", "dataset version", "dataset",
                             ref.get("uri", ""), ref.get("content_hash", "")))

    def _from_run(self, uri: str) -> str:
        """A parent that lineage.json does not hold but the run produced (e.g. the feature matrices)."""
        _, artifact = self.run_artifacts[uri]
        node = self.artifact_node(uri.rstrip("/").rsplit("/", 1)[-1], artifact)
        self.link_parents(node.id, artifact["metadata"].get("parents") or [])
        return node.id

    def _reference(self, ref: dict) -> str:
        """A parent known only by its reference (the run that made it is gone): shown, with no parents of its own."""
        uri = ref.get("uri") or ""
        name = uri.rstrip("/").rsplit("/", 1)[-1] if uri else str(ref.get("name") or "?")
        return self.add(Node(uri or f"ref:{ref.get('content_hash') or name}", name, "artifact", uri,
                             ref.get("content_hash", ""), step=_step_of(uri), detail="not found in any local run")).id


def _step_of(uri: str) -> str:
    """The step that wrote an artifact: kfp's URIs are <pipeline root>/<run>/<task>/<output>."""
    parts = uri.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 3 else ""


# -- completeness -------------------------------------------------------------


def completeness(target, *, store: str | None = None) -> dict:
    """How many of a run's output artifacts have a complete lineage.

    An artifact is complete when its metadata has every stamp key (content_hash,
    parents, code_version, params, created_by, created_at), it has at least one
    parent, and each parent resolves to another artifact of the run (by URI or
    content hash), to a stored dataset version, or to the run's source.

    Args:
        target: a RunSummary, a RunRecord, or a run directory.
        store: the artifact store holding dataset versions (default: the run's registry.store).

    Returns:
        {"total", "complete", "share" (0..1), "problems": ["<step>/<output>: what is wrong", ...]}.
    """
    from keel.pipelines.records.runs import RunRecord, load_record

    record = target if isinstance(target, RunRecord) else load_record(getattr(target, "run_dir", target))
    artifacts = record.artifacts()
    by_uri = {a["uri"]: f"{s}/{o}" for s, o, a in artifacts}
    by_hash: dict[str, set[str]] = {}
    for step, output, artifact in artifacts:
        by_hash.setdefault(str(artifact["metadata"].get("content_hash") or ""), set()).add(f"{step}/{output}")
    store = store or (record.arguments.get("registry") or {}).get("store")
    configured_source = (record.arguments.get("data") or {}).get("source")
    problems: list[str] = []
    complete = 0
    for step, output, artifact in artifacts:
        label, meta = f"{step}/{output}", artifact["metadata"]
        issues = _stamp_problems(meta)
        parents = meta.get("parents")
        if isinstance(parents, list):
            if not parents:
                issues.append("has no parents (an orphan)")
            for ref in parents:
                issue = _parent_problem(ref, label, meta, by_uri, by_hash, store, configured_source)
                if issue:
                    issues.append(issue)
        problems += [f"{label}: {issue}" for issue in issues]
        complete += not issues
    total = len(artifacts)
    return {"total": total, "complete": complete, "share": complete / total if total else 1.0, "problems": problems}


def _stamp_problems(meta: dict) -> list[str]:
    issues = [f"lineage key {key!r} is missing" for key in sorted(STAMP_KEYS) if key not in meta]
    for key in ("content_hash", "code_version", "created_by", "created_at"):
        if key in meta and not meta[key]:
            issues.append(f"lineage key {key!r} is empty")
    if "parents" in meta and not isinstance(meta["parents"], list):
        issues.append("lineage key 'parents' is not a list")
    if "params" in meta and not isinstance(meta["params"], dict):
        issues.append("lineage key 'params' is not a mapping")
    return issues


def _parent_problem(ref, label: str, meta: dict, by_uri: dict, by_hash: dict, store, configured_source) -> str | None:
    if not isinstance(ref, dict):
        return f"parent {ref!r} is not a {{name, uri, content_hash}} reference"
    name, uri, digest = ref.get("name", "?"), ref.get("uri") or "", ref.get("content_hash") or ""
    problem = f"parent {name!r} ({uri or digest or 'no uri, no hash'}) is not an artifact of this run, a dataset version or its source"
    # Ingest's references outside the run resolve only as what they claim to be: an artifact of the
    # run with the same content (e.g. the validated copy) would otherwise stand in for a missing version.
    if name == "dataset" and "dataset" in meta:
        return None if digest and _dataset_exists(meta, ref, store) else problem
    if name == "source" and not digest:
        return None if uri and uri in (meta.get("source"), configured_source) else problem
    if uri and by_uri.get(uri, label) != label:
        return None
    if digest and by_hash.get(digest, set()) - {label}:
        return None
    return problem


def _dataset_exists(meta: dict, ref: dict, store: str | None) -> bool:
    from keel.components._common import datasets, storage
    from keel.components._common.errors import StorageError

    recorded = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    if recorded.get("version") and recorded["version"] != ref.get("content_hash"):
        return False
    if store and recorded.get("name"):
        try:
            return datasets.resolve(store, recorded["name"], ref["content_hash"])["version"] == ref["content_hash"]
        except StorageError:
            return False  # not stored: reported as a problem by the caller
    return bool(ref.get("uri")) and storage.exists(ref["uri"])
