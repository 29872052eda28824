"""Offline validation of Kubernetes, KServe and Istio manifests.

`kubectl apply --dry-run=server` needs a cluster with the CRDs installed, and
`kubectl apply --dry-run=client` checks almost nothing. The published schemas
are already installed here, so this module checks against them without network:

- Kubernetes built-in kinds: the generated OpenAPI models in `kubernetes.client`
  (`openapi_types` gives each field's type, `attribute_map` its JSON name).
  Which model an apiVersion/kind maps to, and whether it is namespaced, come
  from the generated API classes (`RbacAuthorizationV1Api.create_namespaced_role`
  takes a `V1Role` body), the same lookup `kubernetes.utils.create_from_yaml`
  does, so no table of kinds is kept here.
- KServe kinds (`serving.kserve.io`): the generated models in `kserve.models`.
  Their nested types name Kubernetes models (`V1Container`, `V1Toleration`),
  so names resolve in `kserve.models` first, then in `kubernetes.client`.
- Istio security kinds (`security.istio.io` v1 and v1beta1, which share one
  schema): no Istio SDK is installed, so their `spec` is checked with a JSON
  Schema written from Istio's API reference (istio/api `security/v1beta1/*.proto`
  and the CRD schemas generated from it).

The walk is strict: unknown fields, wrong types, missing required fields, null
values and unknown apiVersion/kind pairs are all problems. Cluster-side
admission rules (webhooks, CEL rules) beyond what the schemas express are not
checked.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import re
import types
from typing import Any, Callable

from keel.components._common.errors import ConfigError

KSERVE_GROUP = "serving.kserve.io"
ISTIO_SECURITY_GROUP = "security.istio.io"
# The Kubeflow training operator's kinds (PyTorchJob...): the kubeflow-training SDK's models.
KUBEFLOW_GROUP = "kubeflow.org"

# KServe's CRDs with `scope: Cluster` (kserve/kserve config/crd/full). The SDK
# models do not say which kinds are cluster-scoped, so this one fact is kept here.
_KSERVE_CLUSTER_SCOPED = frozenset(
    {"ClusterServingRuntime", "ClusterStorageContainer", "LocalModelCache", "LocalModelNode", "LocalModelNodeGroup"}
)

# Kubernetes quantities ("500m", "2Gi") are strings in the Python client's
# models, so an unquoted YAML number (`cpu: 1`) is reported: quoting keeps YAML
# from turning `1e3` or `0.5` into floats that round-trip differently.
_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    # KServe's SDK names these two without shipping a model for them.
    "ResourceQuantity": (str, int, float),
    "V1Time": (str, datetime.datetime),
}

_LIST_RE = re.compile(r"^list\[(?P<item>.+)\]$")
_DICT_RE = re.compile(r"^dict\((?P<key>[^,]+), (?P<value>.+)\)$")

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


# --------------------------------------------------------------------------- public API


def validate_manifest(doc: dict) -> list[str]:
    """Checks one manifest against the published schema of its kind.

    Args:
        doc: One parsed YAML document (apiVersion, kind, metadata, spec...).

    Returns:
        One line per problem, each naming the kind/name and the JSON path, e.g.
        `InferenceService keel-predictor: spec.predictor.minReplicas: expected
        int, got str 'two'`. Empty when the manifest is valid.

    Raises:
        ImportError: The SDK that holds the schema (kubernetes, or kserve for
            serving.kserve.io kinds) is not installed.
    """
    if not isinstance(doc, dict):
        return [f"<document>: expected a mapping, got {_type_name(doc)}"]
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    label = _label(doc)
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
        return [f"{label}: apiVersion and kind must both be non-empty strings"]

    problems: list[str] = []
    redact = kind == "Secret"  # never echo a Secret's values into logs
    group = api_version.rpartition("/")[0]
    if group == ISTIO_SECURITY_GROUP:
        _validate_istio(doc, label, problems, redact)
    else:
        model, resolve = _model_for(api_version, kind)
        if model is None:
            return [f"{label}: unknown apiVersion/kind (apiVersion {api_version}, kind {kind}): {resolve}"]
        _walk(doc, model.__name__, "", resolve, problems, label, redact)
    _check_metadata(doc, label, problems)
    return problems


def check_manifest(doc: dict) -> None:
    """Raises ConfigError listing the manifest's problems; returns None when it is valid.

    Args:
        doc: One parsed YAML document.

    Raises:
        ConfigError: With the first problems (at most five), one per line.
    """
    problems = validate_manifest(doc)
    if problems:
        more = f"\n(and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ConfigError("\n".join(problems[:5]) + more)


def is_namespaced(api_version: str, kind: str) -> bool:
    """Whether objects of this kind live in a namespace (so kustomize's `namespace:` applies).

    Raises:
        ConfigError: The apiVersion/kind pair is not one this module knows.
    """
    group, _, version = api_version.rpartition("/")
    if group == ISTIO_SECURITY_GROUP:
        if (version, kind) not in _ISTIO_SPEC_SCHEMAS:
            raise ConfigError(f"unknown apiVersion/kind (apiVersion {api_version}, kind {kind})")
        return True  # Istio's security CRDs are all `scope: Namespaced`
    if group in (KSERVE_GROUP, KUBEFLOW_GROUP):
        model, reason = _model_for(api_version, kind)
        if model is None:
            raise ConfigError(f"unknown apiVersion/kind (apiVersion {api_version}, kind {kind}): {reason}")
        return kind not in _KSERVE_CLUSTER_SCOPED  # every training-operator job is namespaced
    found = _kubernetes_kind(api_version, kind)
    if found is None:
        raise ConfigError(f"unknown apiVersion/kind (apiVersion {api_version}, kind {kind})")
    return found[1]


# --------------------------------------------------------------------------- kind lookup


def _label(doc: dict) -> str:
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"{doc.get('kind') or '<no kind>'} {name or '<no name>'}"


def _snake(kind: str) -> str:
    # The same conversion kubernetes.utils.create_from_yaml applies to a kind.
    kind = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", kind)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", kind).lower()


@functools.cache
def _kubernetes_kind(api_version: str, kind: str) -> tuple[str, bool] | None:
    """(model class name, namespaced) for a built-in kind, or None when the API has no such kind."""
    import kubernetes.client as k8s

    group, _, version = api_version.rpartition("/")
    if not version:
        return None
    group = "core" if not group else "".join(group.rsplit(".k8s.io", 1))
    api = getattr(k8s, "".join(w.capitalize() for w in group.split(".")) + version.capitalize() + "Api", None)
    if api is None:
        return None
    for method, namespaced in ((f"create_namespaced_{_snake(kind)}", True), (f"create_{_snake(kind)}", False)):
        doc = getattr(getattr(api, method, None), "__doc__", None) or ""
        body = re.search(r":param (\w+) body:", doc)
        if body and hasattr(k8s, body.group(1)):
            return body.group(1), namespaced
    return None


def _model_for(api_version: str, kind: str) -> tuple[type | None, Any]:
    """(model class, name resolver), or (None, why) when the pair is unknown."""
    group, _, version = api_version.rpartition("/")
    if group == KSERVE_GROUP:
        try:
            import kserve.models as kserve_models
        except ImportError as err:
            raise ImportError(
                f"validating {api_version}/{kind} needs the KServe SDK: pip install 'keel-ml[serving]'"
            ) from err
        model = getattr(kserve_models, f"{version.capitalize()}{kind}", None)
        # Nested specs (V1beta1PredictorSpec) are models too; only a top-level
        # resource carries apiVersion, kind and metadata.
        if model is None or not {"api_version", "kind", "metadata"} <= set(getattr(model, "openapi_types", {})):
            return None, f"kserve {_installed_version('kserve')} has no resource {kind} in {api_version}"
        return model, _resolve_kserve
    if group == KUBEFLOW_GROUP:
        import kubeflow.training.models as training_models

        model = getattr(training_models, f"KubeflowOrg{version.capitalize()}{kind}", None)
        if model is None or not {"api_version", "kind", "metadata"} <= set(getattr(model, "openapi_types", {})):
            return None, f"kubeflow-training {_installed_version('kubeflow-training')} has no resource {kind} in {api_version}"
        return model, _resolve_training
    found = _kubernetes_kind(api_version, kind)
    if found is None:
        return None, (
            "not a Kubernetes built-in kind in kubernetes client "
            f"{_installed_version('kubernetes')}, nor a {KSERVE_GROUP}, {KUBEFLOW_GROUP} or {ISTIO_SECURITY_GROUP} kind"
        )
    return _resolve_kubernetes(found[0]), _resolve_kubernetes


def _installed_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "(not installed)"


@functools.cache
def _resolve_kubernetes(name: str) -> type | None:
    import kubernetes.client as k8s

    model = getattr(k8s, name, None)
    return model if hasattr(model, "openapi_types") else None


@functools.cache
def _resolve_kserve(name: str) -> type | None:
    import kserve.models as kserve_models

    model = getattr(kserve_models, name, None)
    return model if hasattr(model, "openapi_types") else _resolve_kubernetes(name)


@functools.cache
def _resolve_training(name: str) -> type | None:
    import kubeflow.training.models as training_models

    model = getattr(training_models, name, None)
    return model if hasattr(model, "openapi_types") else _resolve_kubernetes(name)


@functools.cache
def _required(model: type) -> frozenset[str]:
    """The attributes the generated model refuses to leave unset.

    The OpenAPI generator writes `required` into each setter: with client-side
    validation on, setting a required attribute to None raises ValueError.
    Calling every setter on a bare instance reads that list back from the
    generated code itself.
    """
    probe = model.__new__(model)
    probe.local_vars_configuration = types.SimpleNamespace(client_side_validation=True)
    required = set()
    for attr in model.openapi_types:
        try:
            setattr(probe, attr, None)
        except ValueError:
            required.add(attr)
    return frozenset(required)


# --------------------------------------------------------------------------- the walk


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _shown(value: Any, redact: bool) -> str:
    if redact or isinstance(value, (dict, list)):
        return _type_name(value)
    text = repr(value)
    return f"{_type_name(value)} {text if len(text) <= 60 else text[:57] + '...'}"


def _join(path: str, key: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}" if path else key
    return f'{path}["{key}"]'


def _walk(value: Any, type_name: str, path: str, resolve: Callable[[str], type | None],
          problems: list[str], label: str, redact: bool) -> None:
    where = f"{label}: {path or '<root>'}"
    if value is None:
        problems.append(f"{where}: null value; remove the field or give it a value")
        return
    if match := _LIST_RE.match(type_name):
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {_shown(value, redact)}")
            return
        for i, item in enumerate(value):
            _walk(item, match["item"], f"{path}[{i}]", resolve, problems, label, redact)
        return
    if match := _DICT_RE.match(type_name):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {_shown(value, redact)}")
            return
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(f"{where}: keys must be strings, got {_shown(key, False)}")
                continue
            _walk(item, match["value"], _join(path, key), resolve, problems, label, redact)
        return
    if type_name == "object":  # IntOrString and free-form fields: any JSON value
        return
    if type_name in ("datetime", "date"):
        if not isinstance(value, (str, datetime.date)):
            problems.append(f"{where}: expected an RFC 3339 timestamp, got {_shown(value, redact)}")
        return
    if type_name in _PRIMITIVES:
        allowed = _PRIMITIVES[type_name]
        # bool is an int in Python; YAML's `true` must never pass for a number.
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            problems.append(f"{where}: expected {type_name}, got {_shown(value, redact)}")
        return

    model = resolve(type_name)
    if model is None:
        problems.append(
            f"{where}: the installed SDKs have no schema for {type_name}, so this field cannot be "
            "validated offline; remove it or upgrade the kubernetes/kserve packages"
        )
        return
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a mapping ({type_name}), got {_shown(value, redact)}")
        return
    by_json = {json_key: attr for attr, json_key in model.attribute_map.items()}
    for key in value:
        if key not in by_json:
            hint = difflib.get_close_matches(str(key), list(by_json), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            problems.append(f"{label}: {_join(path, str(key))}: unknown field (not in {type_name}){suggestion}")
    for attr in sorted(_required(model)):
        json_key = model.attribute_map[attr]
        if json_key not in value:
            problems.append(f"{label}: {_join(path, json_key)}: required field missing ({type_name})")
    for key, item in value.items():
        if key in by_json:
            _walk(item, model.openapi_types[by_json[key]], _join(path, key), resolve, problems, label, redact)


def _check_metadata(doc: dict, label: str, problems: list[str]) -> None:
    """The ObjectMeta rules the API server enforces that the OpenAPI types cannot express."""
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        if "metadata" not in doc:
            problems.append(f"{label}: metadata: required; `kubectl apply` needs metadata.name")
        return
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"{label}: metadata.name: required; `kubectl apply` needs a name")
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        problems.append(f"{label}: metadata.name: {name!r} is not a DNS-1123 subdomain (lower case, digits, '-', '.')")
    namespace = meta.get("namespace")
    if isinstance(namespace, str) and (len(namespace) > 63 or not _DNS_LABEL.match(namespace)):
        problems.append(f"{label}: metadata.namespace: {namespace!r} is not a DNS-1123 label")
    labels = meta.get("labels")
    if isinstance(labels, dict):
        for key, value in labels.items():
            if isinstance(key, str) and not _valid_qualified_name(key):
                problems.append(f"{label}: metadata.labels: {key!r} is not a valid label key")
            if isinstance(value, str) and (len(value) > 63 or not _LABEL_VALUE.match(value)):
                problems.append(f'{label}: metadata.labels["{key}"]: {value!r} is not a valid label value '
                                "(at most 63 letters, digits, '-', '_', '.', alphanumeric at both ends)")
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        for key in annotations:
            if isinstance(key, str) and not _valid_qualified_name(key):
                problems.append(f"{label}: metadata.annotations: {key!r} is not a valid annotation key")


def _valid_qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))


# --------------------------------------------------------------------------- Istio


def _strings(**extra: Any) -> dict:
    return {"type": "array", "items": {"type": "string", **extra}}


_WORKLOAD_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {
            "type": "object",
            "maxProperties": 4096,
            # Istio's CRD rejects wildcards and empty keys in label matches.
            "propertyNames": {"minLength": 1, "pattern": r"^[^*]*$"},
            "additionalProperties": {"type": "string", "maxLength": 63, "pattern": r"^[^*]*$"},
        }
    },
}

_TARGET_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "name"],
    "properties": {
        "group": {"type": "string", "maxLength": 253,
                  "pattern": r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
        "kind": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"},
        "name": {"type": "string", "minLength": 1, "maxLength": 253},
        # Cross-namespace references are not supported by Istio.
        "namespace": {"type": "string", "maxLength": 0},
    },
}

_TARGETING = {
    "selector": _WORKLOAD_SELECTOR,
    "targetRef": _TARGET_REF,
    "targetRefs": {"type": "array", "maxItems": 16, "items": _TARGET_REF},
}

# At most one of selector / targetRef / targetRefs (Istio's CRD CEL rule).
_ONE_TARGETING = {
    "not": {"anyOf": [{"required": ["selector", "targetRef"]}, {"required": ["selector", "targetRefs"]},
                      {"required": ["targetRef", "targetRefs"]}]}
}

_SOURCE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **{name: _strings() for name in (
            "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces",
            "notNamespaces", "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks",
            "trustDomains", "notTrustDomains")},
        "serviceAccounts": {**_strings(maxLength=320), "maxItems": 16},
        "notServiceAccounts": {**_strings(maxLength=320), "maxItems": 16},
    },
    # serviceAccounts cannot be combined with namespaces or principals (CRD CEL rule).
    "if": {"anyOf": [{"required": ["serviceAccounts"]}, {"required": ["notServiceAccounts"]}]},
    "then": {"not": {"anyOf": [{"required": [f]} for f in ("principals", "notPrincipals", "namespaces", "notNamespaces")]}},
}

_OPERATION = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **{name: _strings() for name in ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")},
        # Ports are strings in Istio's API; istiod rejects anything but a port number.
        "ports": _strings(pattern=r"^[0-9]{1,5}$"),
        "notPorts": _strings(pattern=r"^[0-9]{1,5}$"),
    },
}

_RULE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "from": {"type": "array", "maxItems": 512, "items": {
            "type": "object", "additionalProperties": False, "properties": {"source": _SOURCE}}},
        "to": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "properties": {"operation": _OPERATION}}},
        "when": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["key"],
            "properties": {"key": {"type": "string", "minLength": 1}, "values": _strings(), "notValues": _strings()}}},
    },
}

_AUTHORIZATION_POLICY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **_TARGETING,
        "action": {"enum": ["ALLOW", "DENY", "AUDIT", "CUSTOM"]},
        "provider": {"type": "object", "additionalProperties": False, "properties": {"name": {"type": "string"}}},
        "rules": {"type": "array", "maxItems": 512, "items": _RULE},
    },
    "allOf": [
        _ONE_TARGETING,
        # istiod: a provider goes with action CUSTOM, and CUSTOM needs one.
        {"if": {"required": ["action"], "properties": {"action": {"const": "CUSTOM"}}},
         "then": {"required": ["provider"]}, "else": {"not": {"required": ["provider"]}}},
    ],
}

_HTTP_URL = {"type": "string", "minLength": 1, "maxLength": 2048, "pattern": r"^https?://"}

_JWT_RULE = {
    "type": "object",
    "additionalProperties": False,
    # Istio's CRD leaves issuer optional, but a rule without one matches no
    # token the mesh can trust; Keel requires it.
    "required": ["issuer"],
    "properties": {
        "issuer": {"type": "string", "minLength": 1},
        "audiences": _strings(minLength=1),
        "jwksUri": _HTTP_URL,
        "jwks": {"type": "string", "minLength": 1},
        "fromHeaders": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}, "prefix": {"type": "string"}}}},
        "fromParams": _strings(minLength=1),
        "fromCookies": _strings(minLength=1),
        "outputPayloadToHeader": {"type": "string"},
        "forwardOriginalToken": {"type": "boolean"},
        "outputClaimToHeaders": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["header", "claim"],
            "properties": {"header": {"type": "string", "minLength": 1, "pattern": r"^[-_A-Za-z0-9]+$"},
                           "claim": {"type": "string", "minLength": 1}}}},
        "timeout": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"},
        "spaceDelimitedClaims": {**_strings(minLength=1), "maxItems": 64},
    },
    # jwks (inline) and jwksUri are alternatives.
    "not": {"required": ["jwks", "jwksUri"]},
}

_REQUEST_AUTHENTICATION = {
    "type": "object",
    "additionalProperties": False,
    "properties": {**_TARGETING, "jwtRules": {"type": "array", "maxItems": 4096, "items": _JWT_RULE}},
    "allOf": [_ONE_TARGETING],
}

# (version, kind) -> JSON Schema of spec. v1 and v1beta1 share one API.
_ISTIO_SPEC_SCHEMAS = {
    (version, kind): schema
    for version in ("v1", "v1beta1")
    for kind, schema in (("AuthorizationPolicy", _AUTHORIZATION_POLICY),
                         ("RequestAuthentication", _REQUEST_AUTHENTICATION))
}


@functools.cache
def _istio_validator(version: str, kind: str):
    import jsonschema

    schema = _ISTIO_SPEC_SCHEMAS[(version, kind)]
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _validate_istio(doc: dict, label: str, problems: list[str], redact: bool) -> None:
    version = doc["apiVersion"].rpartition("/")[2]
    kind = doc["kind"]
    if (version, kind) not in _ISTIO_SPEC_SCHEMAS:
        problems.append(f"{label}: unknown apiVersion/kind (apiVersion {doc['apiVersion']}, kind {kind}): Keel knows "
                        f"{ISTIO_SECURITY_GROUP} AuthorizationPolicy and RequestAuthentication (v1, v1beta1)")
        return
    for key in doc:
        if key not in ("apiVersion", "kind", "metadata", "spec", "status"):
            problems.append(f"{label}: {key}: unknown field (not in {kind})")
    if "metadata" in doc:
        _walk(doc["metadata"], "V1ObjectMeta", "metadata", _resolve_kubernetes, problems, label, redact)
    if "spec" not in doc:
        problems.append(f"{label}: spec: required field missing ({kind})")
        return
    errors = sorted(_istio_validator(version, kind).iter_errors(doc["spec"]), key=lambda e: list(e.absolute_path))
    for error in errors:
        path = "spec"
        for part in error.absolute_path:
            path = f"{path}[{part}]" if isinstance(part, int) else _join(path, part)
        problems.append(f"{label}: {path}: {error.message}")
