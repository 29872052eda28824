"""Ground truth that arrives after the prediction: `keel monitor labels SOURCE`.

A label table (a CSV or Parquet file, an s3:// object, or a Postgres query)
holds a key and the true label. The key is either the call's request id
(`event_id`, the CloudEvent's ce-id, which is the V2 response id or the
caller's x-request-id), with an optional `row` column for calls of several
instances, or an entity key: an input column the model is sent (say a flight
number), matched against the logged requests.

Labels are stored once per content under
`{store}/monitoring/{model}/labels/labels-<hash>.parquet` (loading the same
table twice stores nothing new), and joined to the logged rows when the
monitoring pipeline reads a window; a later load of the same key wins. Ids
that match no logged call are counted and reported, never dropped silently:
their labels are kept, since traffic may still be in the receiver's batch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keel.components._common import storage
from keel.components._common.errors import DataError
from keel.components.monitor.window import model_root

if TYPE_CHECKING:
    import pandas as pd

EVENT_ID = "event_id"
LABEL_COLUMNS = ("key_column", "key", "row", "label", "loaded_at")


@dataclass(frozen=True)
class Loaded:
    uri: str
    rows: int
    matched: int | None  # None: an entity key (matched when a window is read)
    unknown: list[str]
    new: bool


def labels_dir(store: str, model: str) -> str:
    return storage.join(model_root(store, model), "labels")


def read_table(source: str, query: str | None = None):
    """The label table as a DataFrame, from a file, s3:// object or Postgres query."""
    import pandas as pd

    from keel.components._common import postgres, tables

    if postgres.is_postgres(source):
        if not query:
            raise DataError(f"{postgres.redact(source)}: a Postgres label source needs --query 'SELECT <key>, <label> ...'")
        import pyarrow as pa

        batches = list(postgres.stream(source, query))
        frame = pa.Table.from_batches(batches).to_pandas() if batches else pd.DataFrame()
        if frame.empty:
            raise DataError(f"--query: returned no rows from {postgres.redact(source)}")
        return frame
    if query:
        raise DataError("--query: applies to a postgresql:// label source only")
    return tables.read_source(source)


def normalize(frame, source: str, key: str = EVENT_ID, label: str = "label", row: str | None = "row"):
    """Checks the key and label columns and returns the stored form (LABEL_COLUMNS), one row per key."""
    import pandas as pd

    for name, flag in ((key, "--key"), (label, "--label")):
        if name not in frame.columns:
            raise DataError(f"{source}: has no column {name!r} ({flag}); its columns are {', '.join(map(str, frame.columns[:12]))}")
    missing = frame[key].isna() | frame[label].isna()
    if missing.any():
        first = int(missing.to_numpy().nonzero()[0][0])
        raise DataError(f"{source}: row {first + 2 if source.endswith('.csv') else first}: empty {key!r} or {label!r}; "
                        "every label row needs both")
    rows = (frame[row].astype("int64") if key == EVENT_ID and row and row in frame.columns
            else pd.Series(0 if key == EVENT_ID else -1, index=frame.index, dtype="int64"))
    out = pd.DataFrame({"key_column": key, "key": frame[key].astype(str), "row": rows,
                        "label": frame[label].astype(str)})
    duplicated = out.duplicated(["key", "row"], keep="last")
    return out[~duplicated].reset_index(drop=True)


def logged_ids(store: str, model: str) -> set[str]:
    """Every logged call id of every version of a model (only the event_id column is read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids: set[str] = set()
    root = model_root(store, model)
    for version in storage.list_names(root):
        if version == "labels":
            continue
        for day in storage.list_names(storage.join(root, version)):
            for hour in storage.list_names(storage.join(root, version, day)):
                folder = storage.join(root, version, day, hour)
                for name in storage.list_names(folder):
                    if name.endswith(".parquet"):
                        table = pq.read_table(pa.BufferReader(storage.read_bytes(storage.join(folder, name))), columns=[EVENT_ID])
                        ids.update(table.column(0).to_pylist())
    return ids


def load(store: str, model: str, frame, *, now: dt.datetime | None = None) -> Loaded:
    """Stores a normalized label frame (content-addressed, atomically) and counts the keys no logged call has."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    body = frame[list(LABEL_COLUMNS[:-1])]  # loaded_at is stamped when stored, so equal tables hash the same
    digest = hashlib.sha256(pa.ipc.serialize_pandas(body, preserve_index=False).to_pybytes()).hexdigest()[:24]
    uri = storage.join(labels_dir(store, model), f"labels-{digest}.parquet")
    new = not storage.exists(uri)
    if new:
        stamped = body.assign(loaded_at=(now or dt.datetime.now(dt.timezone.utc)).isoformat())
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(stamped, preserve_index=False), buffer, compression="zstd")
        storage.write_bytes(uri, buffer.getvalue())
    matched, unknown = None, []
    if (body["key_column"] == EVENT_ID).all():
        known = logged_ids(store, model)
        hits = body["key"].isin(known)
        matched, unknown = int(hits.sum()), body.loc[~hits, "key"].tolist()
    return Loaded(uri, len(body), matched, unknown, new)


def stored_labels(store: str, model: str):
    """Every stored label of a model, the latest load of each (key_column, key, row) winning; None when none."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = labels_dir(store, model)
    frames = [pq.read_table(pa.BufferReader(storage.read_bytes(storage.join(folder, name)))).to_pandas()
              for name in storage.list_names(folder) if name.endswith(".parquet")]
    if not frames:
        return None
    labels = pd.concat(frames, ignore_index=True).sort_values("loaded_at", kind="stable")
    return labels.drop_duplicates(["key_column", "key", "row"], keep="last").reset_index(drop=True)


def attach(frame, labels) -> "pd.Series":
    """The label of each window row (None where none is stored), by event id and row or by entity key."""
    import pandas as pd

    result = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    if labels is None or frame.empty:
        return result
    by_id = labels[labels["key_column"] == EVENT_ID]
    if len(by_id):
        index = pd.MultiIndex.from_frame(by_id[["key", "row"]])
        keys = pd.MultiIndex.from_arrays([frame["event_id"].astype(str), frame["row"].astype("int64")])
        found = pd.Series(by_id["label"].to_numpy(), index=index).reindex(keys).to_numpy()
        result[:] = found
    for column, group in labels[labels["key_column"] != EVENT_ID].groupby("key_column"):
        if column in frame.columns:
            by_key = pd.Series(group["label"].to_numpy(), index=_key_text(group["key"]).to_numpy())
            values = _key_text(frame[column]).map(by_key[~by_key.index.duplicated(keep="last")])
            result = result.where(result.notna(), values)
    return result


def _key_text(values) -> "pd.Series":
    """An entity key as text both sides agree on: the window reads numbers as floats (3000.0) and a label
    table may hold 3000, "3000" or 3000.0, so integral numbers are written without a fraction."""
    import numpy as np
    import pandas as pd

    text = values.astype(str)
    numbers = pd.to_numeric(values, errors="coerce")
    integral = numbers.notna() & (numbers.abs() < 2**53) & (numbers == np.round(numbers))
    return text.where(~integral, numbers[integral].astype("int64").astype(str))
