"""Reading a MongoDB collection into a flat Arrow table.

The source is `mongodb://[user@]host:port/database[?options]` plus a collection
name, an optional filter and an optional projection (plain dicts from the
config). A URI that names a user takes the password from the environment
variable `MONGODB_PASSWORD`: the URI is stored in the compiled pipeline, so a
URI that carries a password is refused. Passwords never appear in messages.

Flatten rule (one row per document, one column per leaf field):

- Nested documents become dotted columns, recursively: `{"address": {"city":
  "Oslo"}}` gives the column `address.city`. An empty nested document adds no
  column.
- Arrays become JSON text (`json.dumps` with `sort_keys=True`), because a flat
  ML table has no list cells. Inside that JSON, ObjectId is its hex string,
  datetime is ISO 8601 text (UTC), Decimal128 is its exact decimal text and
  binary is base64 text.
- ObjectId becomes its 24-hex-digit string (so `_id` is a string column;
  leave it out with `projection: {_id: 0}`).
- datetime becomes `timestamp[ms, tz=UTC]` (MongoDB stores milliseconds, UTC).
- Decimal128 becomes float64: exact decimals are not preserved.
- bool, int (int64), float (float64) and str stay as themselves; binary stays
  binary; UUID becomes its canonical string; any other BSON type (Timestamp,
  Regex, Code, MinKey, ...) becomes its `str()`.
- A column whose values mix int and float becomes float64.
- A column whose values mix any other types (str and int, bool and int,
  datetime and str, ...) becomes string, each value `str()`-ed.
- A field missing from a document is null in that row.
- Two fields that flatten to the same column name (a field literally named
  `a.b` and a nested `{"a": {"b": ...}}`, in one document or in two) are a
  DataError naming both; leave one out with the projection.
- Columns appear in the order their fields are first seen. Batches whose
  columns or types differ are unified by the same rules.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import itertools
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa

from keel.components._common.errors import ConfigError, DataError, StorageError
from keel.components._common.uris import redact as redact_uri

PASSWORD_ENV = "MONGODB_PASSWORD"
_MASK = "***"
# Mechanisms that authenticate without a password (certificates, cloud identity, Kerberos tickets).
_PASSWORDLESS = {"MONGODB-X509", "MONGODB-AWS", "MONGODB-OIDC", "GSSAPI"}
_UNAUTHORIZED, _AUTH_FAILED = 13, 18
_MAX_LISTED = 20

_TIMESTAMP = pa.timestamp("ms", tz="UTC")
_ARROW_TYPES = {
    "null": pa.null(), "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(),
    "str": pa.string(), "datetime": _TIMESTAMP, "binary": pa.binary(),
}


@dataclass(frozen=True)
class _Source:
    uri: str  # redacted, for messages
    database: str
    hosts: str  # "host:port, ..." for messages
    username: str | None
    password: str | None  # from MONGODB_PASSWORD
    auth_source: str


def _parse_uri(uri: str, timeout_s: float) -> _Source:
    from pymongo import uri_parser
    from pymongo.errors import PyMongoError

    shown = redact_uri(uri) if isinstance(uri, str) else repr(uri)
    if not isinstance(uri, str) or not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError(f"data.source: {shown!r} is not a MongoDB URI; use mongodb://[user@]host:port/database")
    try:
        parsed = uri_parser.parse_uri(uri, connect_timeout=timeout_s)
    except (PyMongoError, ValueError) as err:
        reason = _scrub(str(err).splitlines()[0], uri)
        raise ConfigError(f"data.source: {shown} is not a valid MongoDB URI ({reason})") from None
    if not parsed["database"]:
        raise ConfigError(f"data.source: {shown} names no database; put it in the path: mongodb://host:port/<database>")
    if parsed["password"]:
        raise ConfigError(
            f"data.source: {shown} carries a password, and the URI is stored in the compiled pipeline; "
            f"remove it from the URI and set {PASSWORD_ENV} instead"
        )
    options = parsed["options"]
    username = parsed["username"] or None
    password = None
    if username and str(options.get("authMechanism", "")).upper() not in _PASSWORDLESS:
        password = os.environ.get(PASSWORD_ENV)
        if not password:
            raise ConfigError(f"data.source: {shown} names user {username!r}; set {PASSWORD_ENV} to that user's password")
    hosts = ", ".join(f"{host}:{port}" for host, port in parsed["nodelist"]) or str(parsed.get("fqdn"))
    auth_source = options.get("authSource") or parsed["database"]
    return _Source(shown, parsed["database"], hosts, username, password, auth_source)


def _scrub(message: str, uri: str, password: str | None = None) -> str:
    """Masks every password-looking text the message might echo."""
    import urllib.parse

    userinfo = uri.partition("://")[2].partition("?")[0].rpartition("@")[0]
    secrets = {password, userinfo.partition(":")[2]} - {None, ""}
    for secret in list(secrets):
        secrets |= {urllib.parse.quote_plus(secret), urllib.parse.unquote_plus(secret)}
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, _MASK)
    return message


def _check_query(filter: Any, projection: Any) -> None:
    if filter is not None and not isinstance(filter, Mapping):
        raise DataError(f"data.filter: must be a mapping such as {{status: active}}, got {type(filter).__name__}")
    if projection is None or isinstance(projection, Mapping):
        return
    if isinstance(projection, (list, tuple)) and all(isinstance(f, str) for f in projection):
        return
    raise DataError(
        f"data.projection: must be a mapping such as {{name: 1, _id: 0}} or a list of field names, "
        f"got {type(projection).__name__}"
    )


# -- flattening ---------------------------------------------------------------------------------

class _Collision(Exception):
    def __init__(self, column: str):
        self.column = column


def _json_default(value: Any) -> Any:
    from bson import Decimal128, ObjectId

    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Decimal128):
        return str(value.to_decimal())
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def _to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default, ensure_ascii=False)


def _scalar(value: Any) -> Any:
    """A non-plain BSON value as a cell: the slow path, for types `_converters` does not know."""
    from bson import DatetimeMS, Decimal128, ObjectId

    if isinstance(value, (list, tuple)):
        return _to_json(value)
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, Decimal128):
        return float(value.to_decimal())
    if isinstance(value, (bool, int, float, str, dt.datetime, DatetimeMS)):
        return value  # subclasses such as bson's Int64; `_kind_of` sorts them
    if isinstance(value, bytes):
        return bytes(value)
    return str(value)  # UUID (canonical form), Timestamp, Regex, Code, MinKey, ...


_PLAIN = {str, int, float, bool, type(None), dt.datetime}


@functools.cache
def _converters() -> dict[type, Callable[[Any], Any]]:
    """Exact type -> cell for the common BSON types (bson is imported only when a collection is read)."""
    from bson import Binary, DatetimeMS, Decimal128, Int64, ObjectId

    def keep(value: Any) -> Any:
        return value

    return {ObjectId: str, Decimal128: lambda v: float(v.to_decimal()), list: _to_json, tuple: _to_json,
            Int64: keep, DatetimeMS: keep, bytes: keep, Binary: bytes, uuid.UUID: str}


def _flatten(doc: Mapping, prefix: str, out: dict, dotted: list, converters: dict) -> None:
    """Adds `doc`'s leaves to `out` as dotted names; notes in `dotted` that some key held a dot."""
    for key, value in doc.items():
        if "." in key:
            dotted.append(key)
        name = prefix + key
        if isinstance(value, dict):
            _flatten(value, name + ".", out, dotted, converters)
            continue
        value_type = type(value)
        if value_type not in _PLAIN:
            convert = converters.get(value_type)
            value = convert(value) if convert else _scalar(value)
        if name in out:
            raise _Collision(name)
        out[name] = value


def _paths(doc: Mapping, path: tuple = ()):
    """(column, field path) for every leaf: the slow walk, used only where keys hold dots."""
    for key, value in doc.items():
        if isinstance(value, dict):
            yield from _paths(value, path + (key,))
        else:
            yield ".".join(path + (key,)), path + (key,)


def _collision(column: str, first: tuple, second: tuple, doc: Mapping) -> DataError:
    def describe(path: tuple) -> str:
        if len(path) == 1:
            return f"field {path[0]!r}"
        return "nested field " + " -> ".join(repr(p) for p in path)

    where = f" (document _id {doc['_id']})" if "_id" in doc else ""
    return DataError(
        f"{describe(first)} and {describe(second)} both flatten to column {column!r}{where}; "
        "leave one out with data.projection"
    )


class _Columns:
    """Column names in first-seen order, and which came from keys holding dots (see `_collision`)."""

    def __init__(self):
        self.order: dict[str, None] = {}
        self.odd_paths: dict[str, tuple] = {}  # column -> field path, where the path is not column.split(".")

    def add(self, doc: Mapping, flat: dict, dotted: list) -> None:
        if dotted:
            self._check_dotted(doc)
        elif self.odd_paths:
            for column in flat:
                if column in self.odd_paths:
                    raise _collision(column, self.odd_paths[column], tuple(column.split(".")), doc)
        for column in flat:
            if column not in self.order:
                self.order[column] = None

    def _check_dotted(self, doc: Mapping) -> None:
        mine: dict[str, tuple] = {}
        for column, path in _paths(doc):
            if column in mine:
                raise _collision(column, mine[column], path, doc)
            mine[column] = path
            seen = self.odd_paths.get(column) or (tuple(column.split(".")) if column in self.order else None)
            if seen is not None and seen != path:
                raise _collision(column, seen, path, doc)
            if path != tuple(column.split(".")):
                self.odd_paths[column] = path


# -- one batch of documents -> Arrow arrays -------------------------------------------------------

def _kind_of(value_type: type) -> str:
    from bson import DatetimeMS

    if value_type is bool:
        return "bool"
    if issubclass(value_type, int):
        return "int"
    if issubclass(value_type, float):
        return "float"
    if issubclass(value_type, str):
        return "str"
    if issubclass(value_type, (dt.datetime, DatetimeMS)):
        return "datetime"
    if issubclass(value_type, bytes):
        return "binary"
    return "str"


def _merge(a: str, b: str) -> str:
    if a == b or b == "null":
        return a
    if a == "null":
        return b
    if {a, b} == {"int", "float"}:
        return "float"
    return "str"


def _to_str(values: list) -> list:
    return [v if v is None or type(v) is str else str(v) for v in values]


def _array(values: list) -> tuple[str, pa.Array]:
    from bson import DatetimeMS

    kind = "null"
    for value_type in {type(v) for v in values} - {type(None)}:
        kind = _merge(kind, _kind_of(value_type))
    if kind == "str":
        return kind, pa.array(_to_str(values), pa.string())
    if kind == "datetime" and any(type(v) is DatetimeMS for v in values):
        # Dates outside datetime's range arrive as DatetimeMS (milliseconds); Arrow holds them as they are.
        values = [None if v is None else int(v if type(v) is DatetimeMS else DatetimeMS(v)) for v in values]
    if kind == "null":
        return kind, pa.nulls(len(values))
    return kind, pa.array(values, _ARROW_TYPES[kind])


def _batch_arrays(rows: list[dict]) -> dict[str, tuple[str, pa.Array]]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return {name: _array([row.get(name) for row in rows]) for name in names}


def _promote(kind: str, array: pa.Array, final: str, length: int) -> pa.Array:
    if kind == final:
        return array
    if kind == "null":
        return pa.nulls(length, _ARROW_TYPES[final])
    if final == "float":
        return array.cast(pa.float64())
    # A column that turned mixed in a later batch: this batch's values str()-ed, as if mixed from the start.
    # (An int promoted to float64 within its batch prints as 1.0 here.)
    return pa.array(_to_str(array.to_pylist()), pa.string())


def _assemble(batches: list[tuple[int, dict]], order: list[str]) -> pa.Table:
    final: dict[str, str] = {name: "null" for name in order}
    for _, arrays in batches:
        for name, (kind, _) in arrays.items():
            final[name] = _merge(final[name], kind)
    schema = pa.schema([(name, _ARROW_TYPES[final[name]]) for name in order])
    tables = []
    while batches:
        length, arrays = batches.pop(0)  # drop each batch's arrays once copied into the result
        columns = []
        for name in order:
            if name in arrays:
                columns.append(_promote(*arrays[name], final[name], length))
            else:
                columns.append(pa.nulls(length, _ARROW_TYPES[final[name]]))
        tables.append(pa.Table.from_arrays(columns, schema=schema))
    return pa.concat_tables(tables)


# -- the reader ---------------------------------------------------------------------------------

def read_collection(
    uri: str,
    collection: str,
    *,
    filter: Mapping | None = None,
    projection: Mapping | list | None = None,
    batch_size: int = 10_000,
    timeout_s: float = 10.0,
) -> pa.Table:
    """Reads the documents of one collection into a flat Arrow table (see the module docstring for the rule).

    The cursor is read `batch_size` documents at a time and each batch is
    flattened and converted to Arrow at once, so peak memory is the Arrow table
    plus one batch of Python dicts.

    Args:
        uri: `mongodb://[user@]host:port/database[?options]`. With a user, the
            password comes from `MONGODB_PASSWORD`; the user is looked up in
            `authSource` (default: the URI's database).
        collection: the collection's name in that database.
        filter: a MongoDB query document (`data.filter`), e.g. `{"age": {"$gte": 18}}`.
        projection: the fields to return (`data.projection`): a mapping such as
            `{"name": 1, "_id": 0}` or a list of field names.
        batch_size: documents per cursor batch and per conversion step.
        timeout_s: how long to wait for the server to answer (server selection
            and connect), so an unreachable host fails instead of hanging.

    Returns:
        One row per document, columns in first-seen order.

    Raises:
        ConfigError: the URI is invalid, names no database, carries a password,
            or names a user while `MONGODB_PASSWORD` is unset.
        StorageError: the server cannot be reached, or authentication fails.
        DataError: bad filter or projection, missing collection, no matching
            documents, or two fields that flatten to one column.
    """
    from pymongo import MongoClient
    from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size: must be a positive integer, got {batch_size!r}")
    if not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
        raise ConfigError(f"timeout_s: must be a positive number of seconds, got {timeout_s!r}")
    source = _parse_uri(uri, timeout_s)
    _check_query(filter, projection)
    if not isinstance(collection, str) or not collection:
        raise ConfigError(f"data.collection: must name a collection in database {source.database!r}, got {collection!r}")

    def scrub(err: Exception) -> str:
        # OperationFailure's str() appends the whole server reply; errmsg is the line a user needs.
        details = getattr(err, "details", None)
        text = details.get("errmsg") if isinstance(details, dict) and details.get("errmsg") else str(err)
        return _scrub(text.splitlines()[0] if text else type(err).__name__, uri, source.password)

    timeout_ms = max(1, int(timeout_s * 1000))
    credentials = {"username": source.username, "password": source.password} if source.password else {}
    client = MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, tz_aware=True,
        datetime_conversion="DATETIME_AUTO", appname="keel-ingest", **credentials,
    )
    try:
        db = client[source.database]
        stage = "list"
        try:
            names = db.list_collection_names()
            if collection not in names:
                raise _missing_collection(source, collection, names)
            stage = "find"
            cursor = db[collection].find(dict(filter or {}), projection, batch_size=batch_size)
            return _read_cursor(cursor, batch_size, source, collection, filter)
        except OperationFailure as err:
            if err.code == _AUTH_FAILED:
                raise StorageError(
                    f"{source.uri}: authentication failed for user {source.username!r} (authSource "
                    f"{source.auth_source!r}); check {PASSWORD_ENV} and the URI's authSource option"
                ) from None
            if err.code == _UNAUTHORIZED:
                who = f"user {source.username!r} is" if source.username else "the URI names no user, so the client is"
                raise StorageError(
                    f"{source.uri}: {who} not allowed to read database {source.database!r} ({scrub(err)}); "
                    f"use a user with the read role there (user@ in the URI, password in {PASSWORD_ENV})"
                ) from None
            if stage == "find":
                raise _rejected_query(db[collection], filter, projection, scrub(err)) from None
            raise StorageError(f"{source.uri}: the server refused to list collections: {scrub(err)}") from None
        except ConnectionFailure as err:
            reason = scrub(err).split(", Timeout:")[0].split(" (configured timeouts")[0]
            raise StorageError(
                f"{source.uri}: cannot reach a MongoDB server at {source.hosts} within {timeout_s:g} s ({reason}); "
                "check the host and port in data.source and that the server is running"
            ) from None
        except PyMongoError as err:
            raise StorageError(f"{source.uri}: reading {source.database}.{collection} failed: {scrub(err)}") from None
    finally:
        client.close()


def _missing_collection(source: _Source, collection: str, names: list[str]) -> DataError:
    if not names:
        return DataError(
            f"{source.uri}: database {source.database!r} has no collections (so no {collection!r}); "
            "check the database name in data.source"
        )
    listed = sorted(names)
    more = f" and {len(listed) - _MAX_LISTED} more" if len(listed) > _MAX_LISTED else ""
    return DataError(
        f"{source.uri}: collection {collection!r} not found in database {source.database!r}; "
        f"it has: {', '.join(listed[:_MAX_LISTED])}{more}"
    )


def _rejected_query(coll, filter, projection, message: str) -> DataError:
    """Which of filter and projection the server rejected: probes the filter alone (only on failure)."""
    from pymongo.errors import OperationFailure

    field, value = "data.filter", filter
    if projection is not None:
        try:
            coll.find_one(dict(filter or {}), {"_id": 1})
            field, value = "data.projection", projection
        except OperationFailure:
            pass
    return DataError(f"{field}: the server rejected {dict(value) if isinstance(value, Mapping) else value!r}: {message}")


def _read_cursor(cursor, batch_size: int, source: _Source, collection: str, filter) -> pa.Table:
    columns = _Columns()
    converters = _converters()
    batches: list[tuple[int, dict]] = []
    while True:
        docs = list(itertools.islice(cursor, batch_size))
        if not docs:
            break
        rows = []
        for doc in docs:
            flat: dict = {}
            dotted: list = []
            try:
                _flatten(doc, "", flat, dotted, converters)
            except _Collision:
                dotted.append(True)  # the slow walk finds and names both fields
            columns.add(doc, flat, dotted)
            rows.append(flat)
        del docs
        batches.append((len(rows), _batch_arrays(rows)))
        del rows
    if not batches:
        what = f"no documents match data.filter {dict(filter)}" if filter else "no documents"
        raise DataError(f"{source.uri}: {what} in collection {source.database}.{collection}; check data.filter and data.source")
    if not columns.order:
        raise DataError(f"{source.uri}: the documents of {source.database}.{collection} have no fields left; check data.projection")
    return _assemble(batches, list(columns.order))

