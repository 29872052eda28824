"""A window's V1 calls flattened by Arrow's JSON parser, not one `json.loads` per call.

A million logged calls are a million request and response documents; parsed
one by one in Python they take most of a monitoring run (about 60 us a call
for the loans' 40 columns). Arrow parses newline-delimited JSON in C++ against
an explicit schema built from the bundle's: `{"instances": [{column: type}]}`
and `{"predictions": [...], "probabilities": [{class: float}]}`.

It takes only calls it reads exactly as `window.flatten` would: joined, V1,
no error body, as many predictions as instances, no newline inside a document
(the parser's delimiter: such a batch fails to parse or miscounts). Everything else, and a whole batch whose JSON does
not fit the schema (a string where the schema has a number), is handed back
for `window.flatten`, so the rows are the same either way; a test checks that
on the same calls.
"""

from __future__ import annotations


# The schema's column types as Arrow parses them. Integers are read as float64: the checks compare numbers,
# and a JSON integer column may hold 12000 and 12000.5 side by side.
ARROW_TYPES = {"integer": "float64", "float": "float64", "string": "string", "boolean": "bool_", "datetime": "string"}


def _request_schema(columns: list[str], types: dict[str, str]):
    import pyarrow as pa

    fields = [(c, getattr(pa, ARROW_TYPES.get(types.get(c), "string"))()) for c in columns]
    return pa.schema([("instances", pa.list_(pa.struct(fields)))])


def _response_schema(classes: list):
    import pyarrow as pa

    if not classes:
        prediction = pa.float64()
    elif all(isinstance(c, str) for c in classes):
        prediction = pa.string()
    elif all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        prediction = pa.int64()
    else:
        prediction = pa.float64()
    fields = [("predictions", pa.list_(prediction))]
    if classes:
        fields.append(("probabilities", pa.list_(pa.struct([(str(c), pa.float64()) for c in classes]))))
    return pa.schema(fields)


def _ndjson(documents):
    """The documents as one newline-delimited buffer, joined by Arrow (no Python string per call)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for chunk in documents.chunks if isinstance(documents, pa.ChunkedArray) else [documents]:
        # A batch's documents are far under 2 GiB; large_string (64-bit offsets) only if one is not.
        kind = pa.large_string() if chunk.nbytes + len(chunk) >= 2**31 - 1 or chunk.type == pa.large_string() else pa.string()
        joined = pc.binary_join_element_wise(chunk.cast(kind), pa.scalar("", kind), pa.scalar("\n", kind))
        width = np.int64 if kind == pa.large_string() else np.int32
        offsets = np.frombuffer(joined.buffers()[1], dtype=width)[joined.offset:joined.offset + len(joined) + 1]
        parts.append(joined.buffers()[2][int(offsets[0]):int(offsets[-1])])
    return parts[0] if len(parts) == 1 else pa.py_buffer(b"".join(p.to_pybytes() for p in parts))


def _read(documents, schema):
    """Documents -> a table of `schema`, one row per document; None if Arrow refuses them or the count differs
    (a document with a newline inside splits in two, and is then refused or miscounted)."""
    import pyarrow as pa
    import pyarrow.json as pj

    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        # 4 MiB blocks: Arrow parses blocks on several threads.
        table = pj.read_json(pa.BufferReader(_ndjson(documents)), read_options=pj.ReadOptions(block_size=4 << 20),
                             parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    return table if table.num_rows == len(documents) else None


def _parse(documents, schema):
    """(table, positions): the documents Arrow could read, and where they are in `documents`.

    One unreadable document must not send a whole batch the slow way, so a refused range is halved and each
    half tried again, which isolates a few bad documents for about one extra parse of the batch. When both
    halves fail twice running the fault is everywhere (a column sent as another type), and the range is left
    to window.flatten after at most three parses of it.
    """
    import numpy as np
    import pyarrow as pa

    found: list[tuple[int, object]] = []

    def take(lo: int, hi: int, table, strikes: int) -> None:
        if table is not None:
            found.append((lo, table))
            return
        if hi - lo <= 1:
            return
        mid = (lo + hi) // 2
        left, right = _read(documents.slice(lo, mid - lo), schema), _read(documents.slice(mid, hi - mid), schema)
        strikes = strikes + 1 if left is None and right is None else 0
        if strikes >= 2:
            return
        take(lo, mid, left, strikes)
        take(mid, hi, right, strikes)

    take(0, len(documents), _read(documents, schema), 0)
    if not found:
        return None, np.zeros(0, dtype=np.int64)
    found.sort(key=lambda part: part[0])
    positions = np.concatenate([np.arange(lo, lo + t.num_rows) for lo, t in found])
    return pa.concat_tables([t for _, t in found]), positions


def _keep(data, which):
    """`data` filtered by a boolean mask or taken at positions, or `data` itself when that keeps every row."""
    import numpy as np
    import pyarrow as pa

    values = np.asarray(which)
    if values.dtype == bool:
        return data if values.all() else data.filter(pa.array(values))
    return data if len(values) == len(data) else data.take(pa.array(values))


def flatten(batch, columns: list[str], classes: list, types: dict[str, str], names: list[str]):
    """(frame of the calls read here, the batch's other calls) -- the frame is None when none could be read."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    # A V2 call, an error body, a V1 call without predictions: its `instances` or `predictions` parse as null and
    # the call goes to window.flatten below, so no substring test over the documents is needed here.
    readable = pc.equal(batch.column("status"), "joined")
    for documents in (batch.column("request"), batch.column("response")):
        readable = pc.and_kleene(readable, pc.greater(pc.binary_length(documents), 0))
    readable = pc.fill_null(readable, False)
    if not pc.any(readable).as_py():
        return None, batch
    # Every filter and take below copies a batch's documents (tens of MB): each is skipped when it keeps all.
    picked = _keep(batch, readable)
    requests, at = _parse(picked.column("request"), _request_schema(columns, types))
    if requests is None:
        return None, batch
    picked = _keep(picked, at)
    responses, kept = _parse(picked.column("response"), _response_schema(classes))
    if responses is None:
        return None, batch
    picked, requests, at = _keep(picked, kept), _keep(requests, kept), at[kept]
    instances = requests.column("instances").combine_chunks()
    predictions = responses.column("predictions").combine_chunks()
    counts = pc.list_value_length(predictions)
    same = pc.equal(pc.list_value_length(instances), counts)
    if classes:
        probabilities = responses.column("probabilities").combine_chunks()
        same = pc.and_kleene(same, pc.or_kleene(pc.is_null(probabilities),
                                                pc.equal(pc.list_value_length(probabilities), counts)))
    same = pc.fill_null(same, False)
    taken = np.asarray(same)
    # Back to the batch's positions: the calls read here, and everything else for window.flatten.
    here = np.zeros(batch.num_rows, dtype=bool)
    here[np.flatnonzero(np.asarray(readable))[at[taken]]] = True
    rest = batch.slice(0, 0) if here.all() else batch.filter(pa.array(~here))
    if not taken.any():
        return None, rest
    calls = _keep(picked, same)
    instances, predictions = _keep(instances, same), _keep(predictions, same)
    lengths = np.asarray(pc.list_value_length(predictions), dtype=np.int64)
    parents = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
    flat = pc.list_flatten(instances)
    out = {
        "event_id": pc.take(calls.column("event_id"), pa.array(parents)).to_pandas(),
        "row": pd.Series(np.arange(len(parents)) - starts[parents], dtype="int64"),
        "request_time": pc.take(calls.column("request_time"), pa.array(parents)).to_pandas(),
        "rejected": pd.Series([None] * len(parents), dtype=object),
    }
    for column in columns:
        out[column] = flat.field(column).to_pandas()
    out[names[len(columns) + 4]] = pc.list_flatten(predictions).to_pandas()
    scores = names[len(columns) + 5:]
    if classes:
        probabilities = _keep(probabilities, same)
        present = np.repeat(np.asarray(probabilities.is_valid()), lengths)
        flat_scores = pc.list_flatten(probabilities)  # nulls (no probabilities) contribute no elements
        for cls, name in zip(classes, scores):
            values = np.full(len(parents), np.nan)
            values[present] = flat_scores.field(str(cls)).to_numpy(zero_copy_only=False)
            out[name] = pd.Series(values).where(present, None)
    return pd.DataFrame(out, columns=names), rest
