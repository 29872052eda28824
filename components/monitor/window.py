"""A window of logged traffic as rows: each logged call's request instances beside what the model answered.

The receiver stores one row per call (keel.components.monitor.batches): the
request and response JSON as KServe's agent or `keel serve --log-to` sent
them. Monitoring needs one row per *instance*: the input columns, the
prediction, the class probabilities, and whether the call was answered.
`read_window` streams the hour partitions that overlap [start, end), one
Parquet file at a time, and yields flat frames of at most `batch_rows` rows,
so a window of any size is read in bounded memory.

A call the predictor refused (an error body, or a request whose response never
came) yields one row with `rejected` set to the reason and no inputs.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Iterator

import orjson as json  # the window's JSON is most of a monitoring run's reading

from keel.components._common import storage
from keel.components._common.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

META = ("event_id", "row", "request_time", "rejected")
PREDICTION = "prediction"
SCORE_PREFIX = "score_"  # score_<class>: the class probability the model returned
_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$"), re.compile(r"^hour=(\d{2})$")
_LOCATION = re.compile(r"^[\w.\[\]\-]+: ")  # "instances[3].age: " -> the reason without the row


def model_root(store: str, model: str) -> str:
    return storage.join(store, "monitoring", model)


def logged_files(store: str, model: str, version: str, start: dt.datetime, end: dt.datetime) -> list[str]:
    """The Parquet files of the hour partitions that overlap [start, end), oldest first."""
    root = storage.join(model_root(store, model), str(version))
    files = []
    for day in storage.list_names(root):
        match = _PARTITION[0].match(day)
        if not match:
            continue
        date = dt.date.fromisoformat(match.group(1))
        if not (start.date() <= date <= end.date()):
            continue
        for hour in storage.list_names(storage.join(root, day)):
            found = _PARTITION[1].match(hour)
            if not found:
                continue
            begins = dt.datetime.combine(date, dt.time(int(found.group(1))), tzinfo=dt.timezone.utc)
            if begins + dt.timedelta(hours=1) <= start or begins >= end:
                continue
            folder = storage.join(root, day, hour)
            files += [storage.join(folder, name) for name in storage.list_names(folder) if name.endswith(".parquet")]
    return files


def score_column(cls) -> str:
    return f"{SCORE_PREFIX}{cls}"


def read_window(store: str, model: str, version: str, start: dt.datetime, end: dt.datetime, columns: list[str],
                classes: list, batch_rows: int = 50_000, types: dict[str, str] | None = None) -> Iterator["pd.DataFrame"]:
    """Flat frames (META, the input columns, PREDICTION, score_<class>) of the calls logged in [start, end).

    `types` (column -> the schema's type) turns on the vectorized reader for V1 calls; without it, or for a
    call it cannot read, every call goes through `flatten`, which gives the same rows.
    """
    return _prefetched(_read(store, model, version, start, end, columns, classes, batch_rows, types))


def _read(store, model, version, start, end, columns, classes, batch_rows, types) -> Iterator["pd.DataFrame"]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    # The receiver writes a file per segment and hour: a month of a million calls is ~700 files of ~1,400 calls.
    # Batches from several files are flattened together, so the per-batch cost is paid every batch_rows calls.
    pending: list = []
    held = 0
    for uri in logged_files(store, model, version, start, end):
        try:
            stored = pq.ParquetFile(pa.BufferReader(storage.read_bytes(uri)))
            parts = list(stored.iter_batches(batch_size=batch_rows, columns=list(_STORED)))
        except (pa.ArrowException, OSError, KeyError) as err:
            # A damaged file would silently shorten the window; the run stops and names it instead.
            raise DataError(f"{uri}: is not a readable file of logged traffic ({str(err).splitlines()[0][:120]}); "
                            "restore it or move it out of the window's partitions") from None
        for batch in parts:
            when = batch.column("request_time")
            inside = pc.and_kleene(pc.greater_equal(when, pa_scalar(start)), pc.less(when, pa_scalar(end)))
            inside = pc.fill_null(inside, False)
            if not pc.all(inside).as_py():  # an edge hour of the window: the other hours are kept whole, uncopied
                batch = batch.filter(inside)
            if batch.num_rows:
                pending.append(batch)
                held += batch.num_rows
            if held >= batch_rows:
                yield from _frames(pa.concat_batches(pending), columns, classes, types)
                pending, held = [], 0
    if pending:
        yield from _frames(pa.concat_batches(pending), columns, classes, types)


_STORED = ("event_id", "status", "request_time", "request", "response")


def _prefetched(frames: Iterator, depth: int = 1) -> Iterator:
    """The frames, read one ahead on a thread: Arrow's reading and parsing release the GIL, so the next batch
    is read while the caller counts this one (a tenth off a million-row window on 2 cores). At most `depth`
    frames wait, so memory stays bounded; an error in the reader is raised here, and a caller that stops
    early stops the reader."""
    import queue
    import threading

    waiting: queue.Queue = queue.Queue(depth)
    stop, end = threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for frame in frames:
                if not put(frame):
                    return
            put(end)
        except BaseException as err:  # noqa: BLE001 - handed to the caller, who raises it
            put(err)

    reader = threading.Thread(target=read, name="keel-window-reader", daemon=True)
    reader.start()
    try:
        while (item := waiting.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def pa_scalar(when: dt.datetime):
    import pyarrow as pa

    return pa.scalar(when, type=pa.timestamp("us", tz="UTC"))


def _frames(batch, columns: list[str], classes: list, types: dict[str, str] | None) -> Iterator["pd.DataFrame"]:
    """One stored batch as flat frames: the calls the vectorized reader can take, then the rest one by one."""
    import pandas as pd

    from keel.components.monitor import vectorized

    names = [*META, *columns, PREDICTION, *(score_column(c) for c in classes)]
    rest = batch
    if types is not None:
        fast, rest = vectorized.flatten(batch, columns, classes, types, names)
        if fast is not None and len(fast):
            yield fast
    if rest.num_rows:
        rows = [row for record in rest.to_pylist() for row in flatten(record, columns, classes)]
        yield pd.DataFrame.from_records(rows, columns=names)


def flatten(record: dict, columns: list[str], classes: list) -> list[tuple]:
    """One logged call -> one tuple per instance (META, inputs, prediction, scores), or one rejected row."""
    blank = (None,) * (len(columns) + 1 + len(classes))
    head = (record["event_id"], 0, record["request_time"])
    if record["status"] != "joined" or not record["request"]:
        reason = "no response logged" if record["status"] == "request_only" else "no request logged"
        return [(*head, reason, *blank)]
    try:
        request, response = json.loads(record["request"]), json.loads(record["response"])
    except ValueError:
        return [(*head, "unreadable payload (not JSON)", *blank)]
    error = response.get("error") if isinstance(response, dict) else None
    if error is not None:
        return [(*head, rejection_reason(error), *blank)]
    try:
        inputs = _inputs(request, columns)
        predictions, scores = _outputs(response, classes)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        return [(*head, f"unreadable payload ({type(err).__name__})", *blank)]
    rows = []
    for i, prediction in enumerate(predictions):
        values = tuple(inputs[c][i] if i < len(inputs[c]) else None for c in columns)
        rows.append((record["event_id"], i, record["request_time"], None, *values, prediction,
                     *(scores[i] if scores else (None,) * len(classes))))
    return rows


def rejection_reason(error) -> str:
    """The predictor's one-line error without its location, so the same fault on any row counts once."""
    text = str(error).splitlines()[0] if str(error) else "error"
    return _LOCATION.sub("", text, count=1)[:120]


def _inputs(request: dict, columns: list[str]) -> dict[str, list]:
    if "instances" in request:
        instances = request["instances"]
        return {c: [row.get(c) if isinstance(row, dict) else None for row in instances] for c in columns}
    tensors = {t["name"]: t.get("data") or [] for t in request["inputs"]}
    out = {}
    for c in columns:
        data = tensors.get(c, [])
        out[c] = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in data]
    return out


def _outputs(response: dict, classes: list) -> tuple[list, list[tuple] | None]:
    if "predictions" in response:
        predictions = response["predictions"]
        probabilities = response.get("probabilities")
        scores = ([tuple(p.get(str(c)) for c in classes) for p in probabilities]
                  if probabilities and classes else None)
        return predictions, scores
    outputs = {o["name"]: o for o in response["outputs"]}
    predictions = outputs["predictions"]["data"]
    scores = None
    if "probabilities" in outputs and classes:
        flat, k = outputs["probabilities"]["data"], len(classes)
        scores = [tuple(flat[i * k:(i + 1) * k]) for i in range(len(predictions))]
    return predictions, scores
