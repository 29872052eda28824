"""Request decoding and validation against the model's training schema.

A request carries raw feature values by column name, either as V1
`{"instances": [{column: value, ...}, ...]}` or as V2 `inputs`, one tensor per
column. Both are turned into the same `columns` mapping (name -> list of
values) and checked against schema.json, the contract the validate stage
inferred from the training data. Every problem is one line that names the
field (`instances[2].annual_income` or `inputs[annual_income][2]`) and raises
kserve's InvalidInput, which the server answers with HTTP 400.

Out-of-range numbers and unseen categories follow a policy: `reject` (400)
or `warn` (served, counted in `keel_serve_input_warnings_total` and logged),
because a regulated deployment must choose, per model, whether a value the
model never saw is an error or a signal for drift monitoring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from kserve.errors import InvalidInput

V2_DATATYPES = {"integer": "INT64", "float": "FP64", "string": "BYTES", "boolean": "BOOL", "datetime": "BYTES"}
_NUMERIC_V2 = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64"}
_ACCEPTED_V2 = {"integer": _NUMERIC_V2, "float": _NUMERIC_V2, "string": {"BYTES"}, "boolean": {"BOOL"}, "datetime": {"BYTES"}}
POLICIES = ("reject", "warn")


@dataclass(frozen=True)
class Policy:
    """What to do with a value outside what the model saw in training."""

    unseen_category: str = "reject"
    out_of_range: str = "reject"
    max_rows: int = 1000


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    nullable: bool
    min: float | None
    max: float | None
    allowed: frozenset | None

    @property
    def datatype(self) -> str:
        return V2_DATATYPES.get(self.type, "BYTES")


@dataclass
class InputWarning:
    """A served value outside the training data (policy `warn`)."""

    column: str
    kind: str  # "unseen_category" | "out_of_range"
    where: str


def v1_instances(payload: Any, example: str, expected: str) -> list:
    """The `instances` of a V1 body, after checking its envelope (tabular and image models alike).

    Args:
        payload: the decoded request body.
        example: what `instances` holds, shown in the unknown-key message.
        expected: what `instances` must be, for the message when it is not a non-empty list.
    """
    if not isinstance(payload, dict):
        raise InvalidInput(f"request body: expected a JSON object with 'instances', got {type(payload).__name__}")
    unknown = sorted(set(payload) - {"instances", "parameters"})
    if unknown:
        raise InvalidInput(f"request body: unknown key {unknown[0]!r}; send {{\"instances\": {example}}}")
    instances = payload.get("instances")
    if not isinstance(instances, list) or not instances:
        raise InvalidInput(f"instances: expected {expected}")
    return instances


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '…' if len(text) > 40 else text}"


class InputSchema:
    """The serving input contract: the model's raw columns, typed and bounded by schema.json."""

    def __init__(self, schema: dict, input_columns: list[str], policy: Policy):
        columns = schema.get("columns") or {}
        missing = [c for c in input_columns if c not in columns]
        if missing:
            raise ValueError(f"schema.json has no entry for input column(s) {missing}; the bundle is inconsistent")
        self.policy = policy
        self.fields = [
            Field(
                name=name,
                type=columns[name]["type"],
                nullable=bool(columns[name].get("nullable", True)),
                min=columns[name].get("min"),
                max=columns[name].get("max"),
                allowed=frozenset(columns[name]["allowed"]) if columns[name].get("allowed") is not None else None,
            )
            for name in input_columns
        ]
        self.by_name = {f.name: f for f in self.fields}
        self._accepted = {f.name: _ACCEPTED_V2[f.type] for f in self.fields}
        self.names = [f.name for f in self.fields]
        self._known = ", ".join(self.names[:12]) + (", …" if len(self.names) > 12 else "")

    # -- metadata -------------------------------------------------------------------------

    def metadata(self) -> list[dict]:
        """V2 model metadata inputs: one tensor per column, any number of rows."""
        return [{"name": f.name, "datatype": f.datatype, "shape": [-1]} for f in self.fields]

    # -- decoding ---------------------------------------------------------------------------

    def from_v1(self, payload: Any) -> dict[str, list]:
        """V1 `{"instances": [{column: value}, ...]}` -> columns."""
        instances = v1_instances(payload, "[{column: value, ...}]", "a non-empty list of objects keyed by column name")
        self._check_rows(len(instances), "instances")
        names, expected = self.names, self.by_name
        columns: dict[str, list] = {name: [] for name in names}
        for i, row in enumerate(instances):
            if not isinstance(row, dict):
                raise InvalidInput(f"instances[{i}]: expected an object keyed by column name, got {type(row).__name__}")
            if len(row) != len(names) or any(key not in expected for key in row):
                self._wrong_keys(row.keys(), f"instances[{i}]")
            for name in names:
                columns[name].append(row[name])
        return columns

    def from_v2(self, request) -> dict[str, list]:
        """V2 InferRequest with one input tensor per column -> columns."""
        inputs = request.inputs
        given = [i.name for i in inputs]
        if len(set(given)) != len(given):
            duplicate = next(n for n in given if given.count(n) > 1)
            raise InvalidInput(f"inputs[{duplicate}]: given more than once")
        if len(given) != len(self.names) or any(name not in self.by_name for name in given):
            self._wrong_keys(given, "inputs")
        columns: dict[str, list] = {}
        rows = None
        accepted = self._accepted
        for tensor in inputs:
            name, datatype, shape, data = tensor.name, tensor.datatype, tensor.shape, tensor.data
            if datatype not in accepted[name]:
                field = self.by_name[name]
                raise InvalidInput(f"inputs[{name}]: datatype {datatype} does not fit a {field.type} column; use {field.datatype}")
            if hasattr(data, "tolist"):
                data = data.tolist()
            if not isinstance(data, list):
                raise InvalidInput(f"inputs[{name}]: data must be a list")
            shape = list(shape or [])
            if len(shape) == 2 and shape[1] == 1:
                data = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in data]
            elif len(shape) != 1:
                raise InvalidInput(f"inputs[{name}]: shape {shape} is not supported; send shape [rows] (or [rows, 1])")
            if shape[0] != len(data):
                raise InvalidInput(f"inputs[{name}]: shape says {shape[0]} rows but data has {len(data)} values")
            if rows is None:
                rows = len(data)
                if rows == 0:
                    raise InvalidInput(f"inputs[{name}]: no rows")
                self._check_rows(rows, "inputs")
            elif len(data) != rows:
                raise InvalidInput(f"inputs[{name}]: has {len(data)} rows but inputs[{inputs[0].name}] has {rows}")
            columns[name] = data
        return {name: columns[name] for name in self.names}

    def _check_rows(self, rows: int, where: str) -> None:
        if rows > self.policy.max_rows:
            raise InvalidInput(f"{where}: {rows} rows is over the limit of {self.policy.max_rows} per request (KEEL_SERVE_MAX_ROWS)")

    def _wrong_keys(self, given, where: str) -> None:
        given = list(given)
        missing = [n for n in self.names if n not in given]
        if missing:
            raise InvalidInput(f"{where}: missing column {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        unknown = [n for n in given if n not in self.by_name]
        raise InvalidInput(
            f"{where}: unknown column {unknown[0]!r}; the model's columns are {self._known} (GET /v2/models/<name> lists them)"
        )

    # -- checking ---------------------------------------------------------------------------

    def check(self, columns: dict[str, list], locate: Callable[[str, int], str]) -> list[InputWarning]:
        """Checks every value in place; raises InvalidInput on the first violation.

        Integral floats in integer columns stay as they are (JSON has one number type).

        Returns:
            The policy warnings (out-of-range numbers, unseen categories) when the policy is `warn`.
        """
        warnings: list[InputWarning] = []
        policy = self.policy
        for field in self.fields:
            values = columns[field.name]
            kind, lo, hi, allowed = field.type, field.min, field.max, field.allowed
            for i, value in enumerate(values):
                if value is None:
                    if not field.nullable:
                        raise InvalidInput(f"{locate(field.name, i)}: is null, but the model was trained without missing values here")
                    continue
                t = type(value)
                if kind == "float" or kind == "integer":
                    if t is not int and t is not float:
                        raise InvalidInput(f"{locate(field.name, i)}: expected a number, got {_describe(value)}")
                    if t is float and not math.isfinite(value):
                        raise InvalidInput(f"{locate(field.name, i)}: {value} is not a finite number")
                    if kind == "integer" and t is float and not value.is_integer():
                        raise InvalidInput(f"{locate(field.name, i)}: expected a whole number, got {value}")
                    if (lo is not None and value < lo) or (hi is not None and value > hi):
                        if policy.out_of_range == "reject":
                            raise InvalidInput(
                                f"{locate(field.name, i)}: {value} is outside the training range [{lo}, {hi}] "
                                "(policy KEEL_SERVE_OUT_OF_RANGE=reject)"
                            )
                        warnings.append(InputWarning(field.name, "out_of_range", locate(field.name, i)))
                elif kind == "boolean":
                    if t is not bool:
                        raise InvalidInput(f"{locate(field.name, i)}: expected true or false, got {_describe(value)}")
                else:
                    if t is not str:
                        raise InvalidInput(f"{locate(field.name, i)}: expected a string, got {_describe(value)}")
                    if allowed is not None and value not in allowed:
                        if policy.unseen_category == "reject":
                            shown = ", ".join(sorted(map(str, allowed))[:8]) + (", …" if len(allowed) > 8 else "")
                            raise InvalidInput(
                                f"{locate(field.name, i)}: category {value[:40]!r} was not seen in training; "
                                f"expected one of {shown} (policy KEEL_SERVE_UNSEEN_CATEGORY=reject)"
                            )
                        warnings.append(InputWarning(field.name, "unseen_category", locate(field.name, i)))
        return warnings

    # -- probes ----------------------------------------------------------------------------

    def probe(self) -> dict[str, list]:
        """Rows that exercise every column's edges: bounds, mid-points, nulls, every known
        category and one unseen. Used to prove the compiled transform exact at load time."""
        n = max([len(f.allowed) + 1 for f in self.fields if f.allowed] + [4])
        columns = {}
        for f in self.fields:
            if f.type in ("integer", "float"):
                lo = f.min if f.min is not None else 0
                hi = f.max if f.max is not None else lo + 100
                mid = (lo + hi) / 2
                base = [lo, hi, int(mid) if f.type == "integer" else mid, None if f.nullable else lo]
            elif f.type == "boolean":
                base = [True, False, None if f.nullable else True]
            elif f.allowed:
                base = sorted(map(str, f.allowed)) + ["__keel_probe_unseen__"]
            else:
                base = ["a", "b", None if f.nullable else "c"]
            columns[f.name] = [base[i % len(base)] for i in range(n)]
        return columns
