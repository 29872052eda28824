"""Postgres <-> Arrow, streamed, through ADBC's COPY paths.

Reading: the ADBC Postgres driver (Apache Arrow's) runs a query as
`COPY (query) TO STDOUT (FORMAT binary)` and decodes the binary rows straight
into Arrow record batches in C++, so no Python object is made per value and
only one batch (`BATCH_BYTES`) is in memory at a time. Measured against
`pandas.read_sql` on 1M rows in `make bench-ingest` (tests/bench/README.md).

Parameters: a query's parameters are bound by psycopg (`ClientCursor.mogrify`:
libpq's own literal quoting per type), never by Python string formatting.
They are bound on the client because Postgres cannot take parameters in a
COPY statement, and COPY is what makes the read fast; ADBC's server-side
binding path leaves COPY and buffers the whole result (measured: 4x the
memory, 1.4x slower).

Writing: `write_partition` appends an Arrow table with ADBC's bulk ingest
(binary COPY FROM STDIN) after deleting the partition's old rows, in one
transaction, so re-running a partition replaces it and a crash leaves the
old rows in place.

Credentials: the URI names user, host, port and database; the password comes
only from PGPASSWORD (which libpq reads itself: a Kubernetes Secret mounted as
env in a cluster), so it is never in a config, the compiled YAML or a log.
"""

from __future__ import annotations

import contextlib
import re
import urllib.parse
from typing import Iterator

import pyarrow as pa

from keel.components._common.errors import ConfigError, DataError, StorageError
from keel.components._common.uris import redact

CONNECT_TIMEOUT_S = 10
# ADBC's per-batch size hint: small enough that a batch is a few MB, large
# enough that per-batch overhead is noise (measured: 4 MB gives 47 MB peak RSS
# for a 178 MB table, and the same speed as 16 MB).
BATCH_BYTES = 16 << 20
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


def is_postgres(uri: str) -> bool:
    return str(uri).startswith(("postgresql://", "postgres://"))


def connection_uri(uri: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> str:
    """Validates a `postgresql://user@host:port/db` URI and adds a connect timeout.

    Raises:
        ConfigError: a password in the URI (it would land in compiled YAML and
            lineage; use PGPASSWORD), no host or no database.
    """
    if not is_postgres(uri):
        raise ConfigError(f"data.source: {uri!r} is not a postgresql://user@host:port/database URI")
    parsed = urllib.parse.urlsplit(uri)
    if parsed.password is not None:
        raise ConfigError(
            f"data.source: {redact(uri)} has a password in it, which would be stored in the run's config and lineage; "
            "remove it and set PGPASSWORD (in a cluster: a Secret, see manifests/README.md)"
        )
    try:
        parsed.port  # noqa: B018 (raises on a non-numeric port)
    except ValueError:
        raise ConfigError(f"data.source: {uri!r} has an invalid port") from None
    if not parsed.hostname:
        raise ConfigError(f"data.source: {uri!r} names no host")
    if not parsed.path.strip("/"):
        raise ConfigError(f"data.source: {uri!r} names no database (postgresql://user@host:port/DATABASE)")
    query = dict(urllib.parse.parse_qsl(parsed.query))
    query.setdefault("connect_timeout", str(max(1, int(timeout_s))))
    query.setdefault("application_name", "keel")
    # Dates compare with timestamptz columns at midnight of the session's zone: make that UTC everywhere.
    query.setdefault("options", "-c TimeZone=UTC")
    # quote, not quote_plus: libpq decodes %20 but keeps a "+" literally.
    return urllib.parse.urlunsplit(parsed._replace(query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote)))


def table_query(table: str) -> str:
    """`SELECT * FROM "schema"."table"`, with the name checked and quoted as an identifier."""
    return "SELECT * FROM " + quote_identifier(table, "data.table", dotted=True)


def quote_identifier(name: str, field: str, *, dotted: bool = False) -> str:
    """`"name"` (or `"schema"."name"`), after checking it is a plain identifier: names cannot be bound as parameters."""
    if not _IDENTIFIER.match(name or "") or (not dotted and "." in name):
        kind = "name or schema.name" if dotted else "a plain column name"
        raise ConfigError(f"{field}: {name!r} is not {kind} (letters, digits, _ and $)")
    return ".".join(f'"{part}"' for part in name.split("."))


def bind(query: str, params: list | dict | None) -> str:
    """The query with `%s` / `%(name)s` parameters bound by psycopg's client-side quoting."""
    if not params:
        return query
    import psycopg

    from psycopg import sql

    if isinstance(params, dict) == isinstance(params, (list, tuple)):
        raise ConfigError(f"data.params: must be a list (for %s placeholders) or a mapping (for %(name)s), got {type(params).__name__}")
    positional = iter(params) if isinstance(params, (list, tuple)) else None
    used: set = set()

    def placeholder(match: re.Match) -> str:
        # psycopg's placeholder grammar: %% is a literal %, %s positional, %(name)s named.
        if match.group(0) == "%%":
            return "%"
        try:
            if match.group(1) is None:
                if positional is None:
                    raise ConfigError("data.params: the query uses %s placeholders but data.params is a mapping")
                value = next(positional)
            else:
                if positional is not None:
                    raise ConfigError("data.params: the query uses %(name)s placeholders but data.params is a list")
                used.add(match.group(1))
                value = params[match.group(1)]
        except StopIteration:
            raise ConfigError(f"data.params: the query has more %s placeholders than the {len(params)} parameter(s) given") from None
        except KeyError:
            raise ConfigError(f"data.params: the query uses %({match.group(1)})s, which data.params does not define") from None
        # sql.Literal adapts by type (dates, numbers, strings, None) and quotes with libpq's rules.
        return sql.Literal(value).as_string(None)

    try:
        bound = re.sub(r"%%|%s|%\((\w+)\)s", placeholder, query)
    except (psycopg.ProgrammingError, TypeError, ValueError) as err:
        raise ConfigError(f"data.params: {err}") from None
    if positional is not None and next(positional, _END) is not _END:
        raise ConfigError(f"data.params: {len(params)} parameters given but the query has fewer %s placeholders")
    if positional is None and set(params) - used:
        raise ConfigError(f"data.params: {sorted(set(params) - used)} not used by the query")
    return bound


_END = object()


def _driver_error(uri: str, err: Exception, what: str) -> Exception:
    """One line for an ADBC/libpq error, naming the (redacted) source and what to fix."""
    text = " ".join(str(err).split())
    text = re.sub(r"^(IO|INVALID_ARGUMENT|NOT_FOUND|INVALID_DATA|UNKNOWN|INTERNAL): ", "", text)
    text = re.sub(r" Query was: .*$", "", text)
    where = redact(uri)
    if "password authentication failed" in text or "no password supplied" in text:
        return StorageError(f"{where}: authentication failed; check the user in the URI and PGPASSWORD ({text})")
    if "Failed to connect" in text:
        return StorageError(f"{where}: cannot connect ({text}); check host, port, database and that the server is up")
    sqlstate = getattr(err, "sqlstate", None)
    return DataError(f"{where}: {what} failed{f' (SQLSTATE {sqlstate})' if sqlstate else ''}: {text}")


@contextlib.contextmanager
def connect(uri: str, *, timeout_s: float = CONNECT_TIMEOUT_S):
    """An ADBC DB-API connection; connection failures become one StorageError line."""
    import adbc_driver_manager
    import adbc_driver_postgresql.dbapi as adbc

    target = connection_uri(uri, timeout_s=timeout_s)
    try:
        conn = adbc.connect(target)
    except adbc_driver_manager.Error as err:
        raise _driver_error(uri, err, "connect") from None
    try:
        yield conn
    finally:
        conn.close()


def stream(uri: str, sql: str, *, batch_bytes: int = BATCH_BYTES) -> Iterator[pa.RecordBatch]:
    """Yields the query's rows as Arrow record batches (one COPY, bounded memory).

    Raises:
        StorageError: the server cannot be reached or refuses the credentials.
        DataError: the query fails (syntax, missing relation, a runtime error),
            the message carrying the server's text and SQLSTATE.
    """
    import adbc_driver_manager

    with connect(uri) as conn, conn.cursor() as cursor:
        try:
            cursor.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(int(batch_bytes))})
            cursor.execute(sql)
            reader = cursor.fetch_record_batch()
            for batch in reader:
                yield _plain_batch(batch)
        except adbc_driver_manager.Error as err:
            raise _driver_error(uri, err, "query") from None


def _plain_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch without ADBC's per-field `POSTGRESQL:type` metadata (kept out of the hash and Parquet)."""
    schema = pa.schema([pa.field(f.name, f.type, f.nullable) for f in batch.schema])
    return pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def table_columns(conn, table: str) -> dict[str, str] | None:
    """Column name -> Postgres type of an existing table, or None when it does not exist."""
    schema, _, name = table.rpartition(".")
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = $1 AND table_schema = COALESCE(NULLIF($2, ''), current_schema()) ORDER BY ordinal_position",
            parameters=(name, schema),
        )
        rows = cursor.fetchall()
    return {column: kind for column, kind in rows} or None


def write_partition(uri: str, table: str, data: pa.Table, *, partition_column: str | None = None,
                    partition_value=None) -> dict:
    """Writes `data` into `table` (created if missing), replacing one partition's rows in one transaction.

    With `partition_column`, every row of `data` must carry `partition_value`
    in it, and the table's rows with that value are deleted first: running
    the same partition twice leaves one copy. Without it the table's rows are
    all replaced. Either way a failure rolls back to the previous rows.

    Raises:
        DataError: `data` has columns the table lacks (or the reverse), or rows
            outside the partition.
    """
    import adbc_driver_manager

    quoted = quote_identifier(table, "write_back.table", dotted=True)
    if partition_column is not None:
        column = quote_identifier(partition_column, "write_back.partition_column")
        if partition_column not in data.column_names:
            raise DataError(f"write-back to {table}: partition column {partition_column!r} is not in the data "
                            f"(columns: {', '.join(data.column_names)})")
        values = data.column(partition_column).unique().to_pylist()
        if any(v != partition_value for v in values):
            raise DataError(f"write-back to {table}: rows with {partition_column} in {sorted(map(str, values))[:5]} "
                            f"fall outside the partition {partition_value!r}; refusing to mix partitions")
    with connect(uri) as conn:
        try:
            with conn.cursor() as cursor:
                # Partitions of one backfill write in parallel: the first writers would race to
                # CREATE the table (Postgres answers the loser "type ... already exists"). A
                # transaction-scoped advisory lock per table makes each write see the table's
                # state after the previous one's commit; it is released by commit or rollback.
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext($1))", parameters=(f"keel-write-back:{table}",))
                cursor.fetchall()
            existing = table_columns(conn, table)
            if existing is not None:
                missing, extra = set(existing) - set(data.column_names), set(data.column_names) - set(existing)
                if missing or extra:
                    raise DataError(
                        f"write-back to {table}: the data's columns differ from the table's "
                        f"(only in the table: {sorted(missing)}; only in the data: {sorted(extra)}); "
                        "migrate the table or write to a new one"
                    )
                data = data.select(list(existing))
                with conn.cursor() as cursor:
                    # Counted through a CTE: ADBC reports no rowcount for a DELETE.
                    if partition_column is None:
                        cursor.execute(f"WITH gone AS (DELETE FROM {quoted} RETURNING 1) SELECT count(*) FROM gone")
                    else:
                        cursor.execute(f"WITH gone AS (DELETE FROM {quoted} WHERE {column} = $1 RETURNING 1) "
                                       "SELECT count(*) FROM gone", parameters=(partition_value,))
                    deleted = int(cursor.fetchone()[0])
            else:
                deleted = 0
            with conn.cursor() as cursor:
                written = cursor.adbc_ingest(table, data, mode="create_append" if existing is None else "append")
            conn.commit()
        except adbc_driver_manager.Error as err:
            conn.rollback()
            if existing is not None and str(getattr(err, "sqlstate", "") or "").startswith(("22", "42804")):
                # A binary COPY of the wrong type fails deep in the row; say which types disagree.
                pairs = ", ".join(f"{c} {existing[c]} <- {data.schema.field(c).type}" for c in existing)
                raise DataError(f"write-back to {table}: the data's column types do not fit the table's ({pairs}); "
                                "migrate the table or write to a new one") from None
            raise _driver_error(uri, err, f"write-back to {table}") from None
    return {"table": table, "rows_written": int(written if written is not None and written >= 0 else data.num_rows),
            "rows_replaced": deleted, "partition": {partition_column: partition_value} if partition_column else None}
