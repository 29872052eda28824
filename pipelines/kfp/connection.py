"""The connection to a Kubeflow Pipelines API: flags, credentials, a bounded kfp.Client, one-line errors.

kfp.Client, left alone, retries its health check 5 times 5 s apart logging a traceback each
time, waits forever on a host that accepts a connection and never answers, follows a login
redirect to an HTML page it then "parses", and reads and writes ~/.config/kfp. `_KeelClient`
bounds all of that, so every network or auth failure is one `keel: error:` line naming the
host within about 15 s. `keel submit` and `keel schedule` both connect through here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keel.components._common.errors import KeelError

# kfp.client's in-cluster defaults, repeated here so that `keel --help` does not import kfp.
IN_CLUSTER_HOST = "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
SA_TOKEN_AUDIENCE = "pipelines.kubeflow.org"
CONNECT_TIMEOUT_S = 5.0
PROBE_READ_TIMEOUT_S = 8.0  # the health check answers at once; a silent host must not eat the 15 s budget
READ_TIMEOUT_S = 60.0
POLL_ENV = "KEEL_SUBMIT_POLL_SECONDS"
DEFAULT_POLL_S = 10.0
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
HOST_HINT = ("give --host the KFP API endpoint: the Kubeflow dashboard URL + /pipeline (https://kf.example.com/pipeline), "
             "or http://localhost:8888 after `kubectl port-forward -n kubeflow svc/ml-pipeline 8888:8888`")


@dataclasses.dataclass(frozen=True)
class Connection:
    """Where and as whom to reach KFP, validated before any request."""

    host: str
    namespace: str | None = None
    token: str | None = None
    cookies: str | None = None
    sa_token_path: str | None = None  # in-cluster: kfp re-reads it on every request (the kubelet rotates it)
    ca_cert: str | None = None


def connection_from_args(args: argparse.Namespace) -> Connection:
    """Checks the connection flags and reads the credential files; touches no network."""
    sa_path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH") or SA_TOKEN_PATH
    host, source = (args.host, "--host") if args.host else (os.environ.get("KF_PIPELINES_ENDPOINT"), "KF_PIPELINES_ENDPOINT")
    in_cluster = args.in_cluster or (not host and os.path.isfile(sa_path))
    if in_cluster and (args.token_file or args.cookie_file):
        raise KeelError("--in-cluster: the pod's service-account token authenticates; drop --token-file and --cookie-file")
    if not host and not in_cluster:
        raise KeelError(f"--host: required outside a cluster pod; {HOST_HINT}")
    host = check_host(host, source) if host else IN_CLUSTER_HOST
    token = None
    if in_cluster:
        read_token(sa_path, "--in-cluster", f"mount a projected service-account token with audience {SA_TOKEN_AUDIENCE} there "
                   "(or set KF_PIPELINES_SA_TOKEN_PATH)")
    elif args.token_file:
        token = read_token(args.token_file, "--token-file")
    elif os.environ.get("KF_PIPELINES_TOKEN"):
        token = _check_token(os.environ["KF_PIPELINES_TOKEN"], "KF_PIPELINES_TOKEN")
    check_namespace(args.namespace)
    if args.ca_cert and not os.path.isfile(args.ca_cert):
        raise KeelError(f"--ca-cert: {args.ca_cert}: no such file")
    cookies = read_cookies(args.cookie_file) if args.cookie_file else None
    return Connection(host=host, namespace=args.namespace, token=token, cookies=cookies,
                      sa_token_path=sa_path if in_cluster else None, ca_cert=args.ca_cert)


def check_host(host: str, flag: str = "--host") -> str:
    """The endpoint without a trailing slash; a path prefix (https://kf.example.com/pipeline) is kept."""
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        example = host.split("://")[-1] or "kf.example.com"
        raise KeelError(f"{flag}: {host!r} is not an http(s) URL; write the scheme, e.g. https://{example}")
    try:
        _ = parts.port  # urlsplit checks the port only when asked
    except ValueError:
        raise KeelError(f"{flag}: {host!r} has an invalid port") from None
    if parts.query or parts.fragment:
        raise KeelError(f"{flag}: {host!r}: give the endpoint without a query or #fragment")
    return host.rstrip("/")


def check_namespace(namespace: str | None) -> str | None:
    if namespace is not None and not _NAMESPACE.match(namespace):
        raise KeelError(f"--namespace: {namespace!r} is not a Kubernetes namespace name (lower case, digits, '-')")
    return namespace


def _read_text(path: str, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeelError(f"{flag}: {path}: no such file") from None
    except IsADirectoryError:
        raise KeelError(f"{flag}: {path} is a directory, not a file") from None
    except PermissionError:
        raise KeelError(f"{flag}: {path}: not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise KeelError(f"{flag}: {path}: not a UTF-8 text file") from None
    except OSError as err:
        raise KeelError(f"{flag}: {path}: {err.strerror or err}") from None


def _check_token(token: str, where: str) -> str:
    token = token.strip()
    if token[:7].lower() == "bearer ":  # a pasted header value
        token = token[7:].strip()
    if not token:
        raise KeelError(f"{where}: empty; it must hold the bearer token")
    if any(c.isspace() for c in token):
        raise KeelError(f"{where}: holds more than one word or line; it must hold the bearer token alone")
    return token


def read_token(path: str, flag: str, hint: str = "") -> str:
    try:
        return _check_token(_read_text(path, flag), f"{flag}: {path}")
    except KeelError as err:
        raise KeelError(f"{err}; {hint}" if hint else str(err)) from None


def read_cookies(path: str) -> str:
    """A Cookie header value from `name=value` lines (or one `a=1; b=2` line) or a Netscape cookie jar."""
    pairs = []
    for number, line in enumerate(_read_text(path, "--cookie-file").splitlines(), 1):
        line = line.strip()
        if not line or (line.startswith("#") and not line.startswith("#HttpOnly_")):
            continue
        fields = line.split("\t")
        if len(fields) == 7:  # Netscape jar: domain, subdomains, path, secure, expiry, name, value
            pairs.append(f"{fields[5]}={fields[6]}")
            continue
        for pair in re.sub(r"^cookie:\s*", "", line, flags=re.IGNORECASE).split(";"):
            if pair.strip() and "=" not in pair:
                raise KeelError(f"--cookie-file: {path} line {number}: expected name=value (e.g. authservice_session=...)")
            pairs.extend([pair.strip()] if pair.strip() else [])
    if not pairs:
        raise KeelError(f"--cookie-file: {path}: no cookies in it")
    return "; ".join(pairs)


def display_name(flag: str, value: str) -> str:
    if not value.strip() or "\n" in value:
        raise KeelError(f"{flag}: {value!r}; give a non-empty, one-line name")
    return value.strip()


def poll_interval() -> float:
    raw = os.environ.get(POLL_ENV)
    try:
        value = float(raw) if raw else DEFAULT_POLL_S
    except ValueError:
        value = -1.0
    if value <= 0:
        raise KeelError(f"{POLL_ENV}: {raw!r}; give the seconds between state checks, above 0")
    return value


# --------------------------------------------------------------------------- the client


@dataclasses.dataclass
class Session:
    client: Any  # kfp.Client (imported lazily)
    host: str
    namespace: str | None

    def url(self, route: str) -> str:
        # KF_PIPELINES_UI_ENDPOINT is kfp.Client's own override for links, e.g. when --host is the bare API.
        ui = os.environ.get("KF_PIPELINES_UI_ENDPOINT", "").rstrip("/") or self.host
        return f"{ui}/#/{route}"


@functools.cache
def _client_class():
    import kfp
    import kfp_server_api
    from urllib3.util.retry import Retry

    class _KeelClient(kfp.Client):
        """kfp.Client with bounded requests, no login redirects and no state outside the command line."""

        _keel_health = None

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            # The generated API methods pass no timeout, and urllib3 then waits forever; all of them share one REST client.
            rest = self._run_api.api_client.rest_client
            request = rest.request

            def bounded(*args, _request_timeout=None, **kw):
                return request(*args, _request_timeout=_request_timeout or (CONNECT_TIMEOUT_S, READ_TIMEOUT_S), **kw)

            rest.request = bounded

        def _load_config(self, *args, **kwargs):
            config = super()._load_config(*args, **kwargs)
            # No retries: a refused or silent host fails once, within the time bound (--wait retries its polls
            # itself), and a redirect (a Dex or oauth2-proxy login page) comes back as a 3xx to report instead
            # of an HTML page the generated client would parse into an empty response.
            config.retries = Retry(total=0, redirect=False)
            return config

        def _load_context_setting_or_default(self):
            # ~/.config/kfp/context.json (the kfp CLI's state) must not change where a cron job submits.
            self._context_setting = {"namespace": ""}

        def set_user_namespace(self, namespace: str) -> None:
            self._context_setting["namespace"] = namespace  # kfp's also writes ~/.config/kfp, read-only in a pod

        def get_kfp_healthz(self, sleep_duration: int = 5):
            if self._keel_health is None:
                self._keel_health = _check_health(self._healthz_api, self._existing_config.host, kfp_server_api)
            return self._keel_health

    return _KeelClient


def _check_health(api, host: str, kfp_server_api):
    """One bounded health check; the raw body must be the API's JSON, not a dashboard or login page."""
    response = api.healthz_service_get_healthz(_preload_content=False, _request_timeout=(CONNECT_TIMEOUT_S, PROBE_READ_TIMEOUT_S))
    try:
        doc = json.loads(response.data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        kind = response.headers.get("Content-Type") or "no content type"
        raise KeelError(f"connecting: {host} is not the Kubeflow Pipelines API "
                        f"(GET /apis/v2beta1/healthz answered {kind}, not JSON); {HOST_HINT}")
    return kfp_server_api.V2beta1GetHealthzResponse(multi_user=doc.get("multi_user"), pipeline_store=doc.get("pipeline_store"))


def connect(conn: Connection) -> Session:
    """A kfp.Client for `conn` after a health check, so that a wrong host or credential fails here, in one line."""
    from kfp.client import ServiceAccountTokenVolumeCredentials

    credentials = ServiceAccountTokenVolumeCredentials(conn.sa_token_path) if conn.sa_token_path else None
    with warnings.catch_warnings(), kfp_errors(conn.host, "connecting"):
        warnings.simplefilter("ignore", FutureWarning)  # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later"
        # "kubeflow" is kfp's marker for "no namespace given"; the namespace itself goes to every call below.
        client = _client_class()(host=conn.host, namespace=conn.namespace or "kubeflow", existing_token=conn.token,
                                 cookies=conn.cookies, credentials=credentials, ssl_ca_cert=conn.ca_cert)
        health = client.get_kfp_healthz()
    namespace = conn.namespace or client.get_user_namespace() or None  # in a pod, kfp reads the pod's namespace
    if health.multi_user and not namespace:
        raise KeelError(f"--namespace: {conn.host} is a multi-user Kubeflow Pipelines; give the profile namespace to run in")
    return Session(client, conn.host, namespace)


# --------------------------------------------------------------------------- errors


@contextlib.contextmanager
def kfp_errors(host: str, doing: str):
    """SDK and network failures become one KeelError line; kfp's own `... details: <link>` prints are dropped."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    except KeelError:
        raise
    except Exception as err:
        raise as_keel_error(err, host, doing) from None


def as_keel_error(err: BaseException, host: str, doing: str) -> BaseException:
    """The one-line KeelError for a known failure; anything else is a bug and keeps its traceback."""
    message = _explain(err, host)
    return KeelError(f"{doing}: {message}") if message else err


def one_line(text: Any, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _explain(err: BaseException, host: str) -> str | None:
    import urllib3.exceptions as u3
    from kfp_server_api.exceptions import ApiException

    if isinstance(err, ApiException):
        if err.status:
            return _explain_status(err, host)
        reason = one_line(err.reason)  # status 0: the generated client's wrapper of an SSLError
        return f"TLS with {host} failed ({reason}); {_TLS_HINT}" if "SSL" in reason else f"the request to {host} failed ({reason})"
    if isinstance(err, u3.MaxRetryError) and err.reason is not None:
        err = err.reason
    if isinstance(err, u3.NameResolutionError):
        return f"cannot resolve the host name in {host}; check --host (and your DNS or VPN)"
    if isinstance(err, u3.SSLError):
        return f"TLS with {host} failed ({one_line(err, 120)}); {_TLS_HINT}"
    if isinstance(err, u3.NewConnectionError):
        if isinstance(err.__cause__, ConnectionRefusedError) or "refused" in str(err).lower():
            return f"connection refused by {host}: nothing listens there; check --host and its port; {HOST_HINT}"
        return f"cannot connect to {host} ({one_line(err, 120)}); check --host, the network and any VPN"
    if isinstance(err, u3.ConnectTimeoutError):
        return f"no answer from {host} within {CONNECT_TIMEOUT_S:g} s; check --host, its port, firewalls and any VPN"
    if isinstance(err, u3.ReadTimeoutError):
        return f"{host} accepted the connection but did not answer in time; is it the KFP API? {HOST_HINT}"
    if isinstance(err, u3.HTTPError):
        return f"the connection to {host} failed ({one_line(err, 120)})"
    if isinstance(err, ValueError) and "found with name" in str(err):  # kfp: "Multiple experiments is found with name X"
        return f"{host}: {one_line(err)}"
    return None


_TLS_HINT = "for a certificate from a private CA pass --ca-cert PATH; for a plain-HTTP endpoint write http://"


def _explain_status(err, host: str) -> str:
    status, detail = err.status, _server_message(err.body)
    if status in (301, 302, 303, 307, 308):
        location = one_line((err.headers or {}).get("Location", "?"), 120)
        return (f"{host} redirected to {location} (a login page): authenticate with --cookie-file (the authservice_session "
                "or oauth2-proxy cookie of a logged-in browser) or --token-file")
    if status == 401:
        return (f"{host} rejected the credentials (401 Unauthorized{detail}): give a valid --token-file (or KF_PIPELINES_TOKEN), "
                "or --cookie-file behind a Dex/oauth2-proxy login")
    if status == 403:
        return (f"{host} refused access (403 Forbidden{detail}): the identity may not do this; in multi-user KFP, "
                "--namespace must be a profile it belongs to")
    if status == 404 and not detail:  # the KFP API's own 404s carry a JSON message ("run ... not found")
        return f"{host} has no Kubeflow Pipelines v2 API (404 Not Found); {HOST_HINT}"
    if status >= 500:
        return f"{host} failed ({status} {err.reason}{detail}); the KFP API server is unhealthy: retry later or read its logs"
    return f"{host} rejected the request ({status} {err.reason}{detail})"


def _server_message(body: Any) -> str:
    """': <message>' from a grpc-gateway error body ({"error", "code", "message"}); HTML pages say nothing useful."""
    try:
        doc = json.loads(body)
    except (TypeError, ValueError):
        return ""
    message = (doc.get("message") or doc.get("error")) if isinstance(doc, dict) else None
    return f": {one_line(message)}" if message else ""


def _transient(err: BaseException) -> bool:
    import urllib3.exceptions as u3
    from kfp_server_api.exceptions import ApiException

    if isinstance(err, ApiException):
        return err.status == 0 or err.status >= 500
    return isinstance(err, u3.HTTPError) and not isinstance(err, u3.SSLError)


# --------------------------------------------------------------------------- pipeline, experiment, run
