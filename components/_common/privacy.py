"""Personally identifying columns: dropped or pseudonymised before anything is stored.

`data.pii` maps a column to `drop` or `hash`. Ingest applies it to the rows
as they are read (a DataFrame from a file, or each Arrow record batch as a
database streams it), so the dataset version, the run's raw artifact and
everything after them never hold the original values.

Hashing is HMAC-SHA256, keyed, because a plain hash of a name, an email or
an SSN is reversed by hashing every candidate (a dictionary attack: there
are only 10^9 SSNs). With a secret key the digest is a pseudonym in the sense
of GDPR Art. 4(5): the data can no longer be tied to a person without
additional information (the key), as long as the key is kept apart from the
data. The key comes from `KEEL_PII_KEY` (text, or `base64:<...>` for raw
bytes) or `KEEL_PII_KEY_FILE` (a file, e.g. a mounted Kubernetes Secret). It
is never logged or stored; records carry only its id (`key_id`), so a later
run can tell that the key changed. The same value gives the same digest in
every column and every run with the same key: pseudonymised columns still
join, count and group, which is why they are hashed rather than dropped.

Canonical form (what is hashed; `canonical`):

- nulls (None, NaN, NaT, pd.NA) stay null: a hashed null would make every
  missing value one "person";
- text is hashed as it is (UTF-8), with no trimming or case folding:
  normalise at the source if `A@x.org` and `a@x.org` are one person;
- numbers by their decimal text, integral ones without a fraction, so 123,
  123.0, Decimal("123.00") and the text "123" give one digest. An ID read as
  int64 from a CSV, as text from Postgres, or as float64 because pandas
  turned an int column with a gap into floats is still one pseudonym;
  "0123" stays text and differs from 123;
- dates and times by `isoformat()`, bytes as they are, anything else by `str()`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import hashlib
import hmac
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from keel.components._common.errors import ConfigError, DataError

KEY_ENV = "KEEL_PII_KEY"
KEY_FILE_ENV = "KEEL_PII_KEY_FILE"
MIN_KEY_BYTES = 16
ALGORITHM = "hmac-sha256"
_KEY_HINT = "a secret of 16+ bytes, e.g. `openssl rand -base64 32`; in a cluster, a Secret mounted as a file or env"


def pii_key(where: str = "data.pii") -> bytes:
    """The HMAC key from KEEL_PII_KEY or KEEL_PII_KEY_FILE.

    KEEL_PII_KEY is taken as UTF-8 text, or decoded when it starts with
    `base64:`; a key file is taken as bytes. Trailing whitespace is never part
    of a key (`echo` and `kubectl create secret --from-file` differ in a newline).

    Args:
        where: the config field that needs the key, for the error message.

    Raises:
        ConfigError: no key, both set, an unreadable file, bad base64, or a key
            shorter than 16 bytes.
    """
    text, path = os.environ.get(KEY_ENV), os.environ.get(KEY_FILE_ENV)
    if text and path:
        raise ConfigError(f"{where}: both {KEY_ENV} and {KEY_FILE_ENV} are set; set only one, so the pseudonyms cannot "
                          "silently change with whichever wins")
    if path:
        try:
            key = Path(path).read_bytes().rstrip()
        except OSError as err:
            raise ConfigError(f"{KEY_FILE_ENV}: cannot read {path} ({err.strerror}); mount the key Secret there") from None
        source = KEY_FILE_ENV
    elif text:
        source = KEY_ENV
        if text.startswith("base64:"):
            try:
                key = base64.b64decode(text.removeprefix("base64:"), validate=True)
            except binascii.Error:
                raise ConfigError(f"{KEY_ENV}: the text after 'base64:' is not valid base64; fix it or drop the prefix") from None
        else:
            key = text.rstrip().encode()
    else:
        raise ConfigError(f"{where}: hash needs {KEY_ENV} or {KEY_FILE_ENV} ({_KEY_HINT})")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{source}: the key is {len(key)} bytes; use at least {MIN_KEY_BYTES} ({_KEY_HINT})")
    return key


def key_id(key: bytes) -> str:
    """A public id of the key (12 hex of a domain-separated sha256): tells keys apart, reveals nothing."""
    return hashlib.sha256(b"keel-pii" + key).hexdigest()[:12]


def key_for(pii: dict[str, str]) -> bytes | None:
    """The key when `pii` hashes a column (the error names that column), else None: dropping needs no key."""
    hashed = [column for column, mode in pii.items() if mode == "hash"]
    return pii_key(f"data.pii.{hashed[0]}") if hashed else None


def policy(pii: dict[str, str], key: bytes | None) -> dict:
    """What a dataset record stores about its scrubbing: the columns' modes and the key's id, never the key."""
    if not pii:
        return {}
    record = {"columns": dict(sorted(pii.items()))}
    if "hash" in pii.values():
        record.update({"algorithm": ALGORITHM, "key_id": key_id(key)})
    return record


def canonical(value) -> bytes | None:
    """The bytes a value is hashed from (module docstring), or None for a null.

    Raises:
        TypeError: a nested value (list, dict, array), which has no one text form.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bool, np.bool_)):
        text = str(bool(value))
    elif isinstance(value, (int, np.integer)):
        text = str(int(value))
    elif isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isnan(number):
            return None
        text = str(int(number)) if number.is_integer() else repr(number)
    elif isinstance(value, decimal.Decimal):
        if value.is_nan():
            return None
        text = format(value.normalize(), "f") if value.is_finite() else str(value)
    elif isinstance(value, (dt.date, dt.time)):
        text = value.isoformat()
    elif isinstance(value, (dict, list, tuple, set, np.ndarray)):
        raise TypeError("a nested value")
    else:
        text = str(value)
    return text.encode()


def digest(value, key: bytes) -> str | None:
    """HMAC-SHA256 of `canonical(value)` as hex; None for a null."""
    raw = canonical(value)
    return None if raw is None else hmac.new(key, raw, hashlib.sha256).hexdigest()


def _check_columns(columns: list[str], pii: dict[str, str], where: str) -> None:
    missing = [c for c in pii if c not in columns]
    if missing:
        shown = ", ".join(columns[:30]) + (", ..." if len(columns) > 30 else "")
        raise DataError(f"data.pii: {missing} not in {where}; columns are: {shown}. Fix the names in data.pii")


def _key(pii: dict[str, str], key: bytes | None) -> bytes | None:
    return key if key is not None else key_for(pii)


def scrub_frame(frame: pd.DataFrame, pii: dict[str, str], where: str, key: bytes | None = None) -> pd.DataFrame:
    """`frame` with `pii`'s drop columns removed and hash columns pseudonymised (as text; nulls stay null).

    Args:
        frame: the rows as read from the source.
        pii: column -> "drop" or "hash" (`data.pii`).
        where: the source, for error messages.
        key: the HMAC key; read with `pii_key` when None and a column is hashed.

    Raises:
        DataError: a `pii` column is not in `frame`, or holds nested values (lists, documents) to hash.
        ConfigError: a column is hashed and no key is configured.
    """
    if not pii:
        return frame
    columns = [str(c) for c in frame.columns]
    _check_columns(columns, pii, where)
    key = _key(pii, key)
    keep = [i for i, name in enumerate(columns) if pii.get(name) != "drop"]
    out = frame.iloc[:, keep].copy()
    for position, name in enumerate(out.columns):
        if pii.get(str(name)) == "hash":
            # Positional, so a duplicated column name is hashed in every copy.
            out.isetitem(position, _hash_series(out.iloc[:, position], key, where))
    return out


def _hash_series(series: pd.Series, key: bytes, where: str) -> pd.Series:
    # Each distinct value is hashed once: 10^6 rows of 10^4 people cost 10^4 HMACs.
    try:
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        hashed = [digest(v, key) for v in uniques.tolist()]
    except TypeError:  # unhashable (dict, list) values, or canonical() refusing one
        raise _nested(series.name, where) from None
    hashed.append(None)  # code -1 (a missing value) picks this null
    return pd.Series([hashed[c] for c in codes], index=series.index, dtype=object, name=series.name)


def _nested(column, where: str) -> DataError:
    return DataError(f"data.pii.{column}: holds nested values (lists or documents) in {where}, which cannot be hashed "
                     "as one value; set it to drop, or project the identifying field out (data.projection, or the query)")


def scrub_batch(batch: pa.RecordBatch, pii: dict[str, str], where: str = "the source", key: bytes | None = None) -> pa.RecordBatch:
    """The Arrow form of `scrub_frame`, for a batch streamed from a database: same columns, same digests.

    A hashed column is always `string` (nullable), whatever its source type,
    so every batch of a stream has the same schema.

    Raises:
        DataError: a `pii` column is not in the batch, or is nested (list, struct) and set to hash.
        ConfigError: a column is hashed and no key is configured.
    """
    if not pii:
        return batch
    _check_columns(batch.schema.names, pii, where)
    key = _key(pii, key)
    fields, arrays = [], []
    for field, array in zip(batch.schema, batch.columns):
        mode = pii.get(field.name)
        if mode == "drop":
            continue
        if mode == "hash":
            if pa.types.is_nested(field.type):
                raise _nested(field.name, where)
            field, array = pa.field(field.name, pa.string(), nullable=True), _hash_array(array, key)
        fields.append(field)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=batch.schema.metadata))


def _hash_array(array: pa.Array, key: bytes) -> pa.Array:
    encoded = array if pa.types.is_dictionary(array.type) else pc.dictionary_encode(array)
    hashed = pa.array([digest(v, key) for v in encoded.dictionary.to_pylist()], pa.string())
    # A null index (a null value) takes a null, and a NaN in the dictionary was hashed to null above.
    return pc.take(hashed, encoded.indices)


def rescrub(frame: pd.DataFrame, pii: dict[str, str], applied: dict, where: str) -> tuple[pd.DataFrame, dict]:
    """A stored (pinned) table brought up to `pii`, given the policy its record says was applied.

    Only what is missing is done, so a hash is never hashed again: a column
    the record says was hashed stays as it is under `hash` (and is dropped
    under `drop`); one it says was dropped needs nothing. A column the record
    does not name was stored raw, before `data.pii` listed it, and is
    scrubbed now, so nothing downstream of ingest sees it.

    Args:
        frame: the stored version's rows.
        pii: `data.pii` now.
        applied: the version record's `pii` entry (`policy`), `{}` when none.
        where: the version, for error messages.

    Returns:
        The scrubbed frame, and the policy that now holds for it.

    Raises:
        ConfigError: a column must be hashed now but the version's other
            columns were hashed with another key (its pseudonyms would no
            longer match across columns), or no key is configured.
        DataError: a `pii` column the record does not name is not in the table.
    """
    done = dict(applied.get("columns", {}))
    todo = {c: m for c, m in pii.items() if not (done.get(c) == "drop" or done.get(c) == m == "hash")}
    key = key_for(todo)
    if key is not None and applied.get("key_id") not in (None, key_id(key)):
        raise ConfigError(f"data.pii: {where} was hashed with key id {applied['key_id']}, but the configured key has id "
                          f"{key_id(key)}; set that key to hash {sorted(c for c, m in todo.items() if m == 'hash')} too, "
                          "or ingest the source again instead of pinning data.version")
    frame = scrub_frame(frame, todo, where, key)
    now = dict(sorted({**done, **todo}.items()))
    if key is not None:
        return frame, policy(now, key)
    return frame, ({**applied, "columns": now} if now else {})
