"""The config reference, generated from the pydantic config models.

    python -m keel.pipelines.config_reference           # rewrite pipelines/config-reference.md
    python -m keel.pipelines.config_reference --check   # exit 1 when the committed file is stale

For every pipeline kind's model, every field, recursively through nested
models: its dotted path, type (with its constraints), default and description
(the field's `Field(description=...)` and, for a section, its class
docstring). The output depends only on the models, so it is deterministic.
"""

from __future__ import annotations

import argparse
import enum
import inspect
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

OUTPUT = Path(__file__).with_name("config-reference.md")


def config_models() -> dict[str, type[BaseModel]]:
    """{pipeline kind (the config's `pipeline:` value): its config model}, from the pipeline registry."""
    from keel.pipelines import registry

    return {p.kind: p.config_model for p in registry.all_pipelines()}


def _doc(cls: type) -> str:
    """The class's own docstring (not an inherited one), on one line."""
    doc = cls.__dict__.get("__doc__")
    return " ".join(inspect.cleandoc(doc).split()) if doc else ""


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(_plain(a)) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]" if args else name
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _constraints(field: FieldInfo) -> str:
    parts = []
    for meta in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="),
                           ("min_length", "min length"), ("max_length", "max length"), ("pattern", "pattern")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sign} `{value}`" if attr == "pattern" else f"{sign} {value}")
    return ", ".join(parts)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _nested_models(tp: Any) -> list[tuple[str, type[BaseModel]]]:
    """The models a field's type holds, each with the path suffix it sits under (`[]` in a list, `.<key>` in a dict)."""
    if _is_model(tp):
        return [("", tp)]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _nested_models(args[0])
    if origin in (typing.Union, types.UnionType):
        found = []
        for arg in args:
            found += [item for item in _nested_models(arg) if item not in found]
        return found
    if origin in (list, tuple, set, frozenset) and args:
        return [("[]" + suffix, m) for a in args if a is not Ellipsis for suffix, m in _nested_models(a)]
    if origin is dict and len(args) == 2:
        return [(".<key>" + suffix, m) for suffix, m in _nested_models(args[1])]
    return []


_NO_DEFAULT = object()


def _default_of(field: FieldInfo, owner_default: Any, name: str) -> Any:
    """The value a field takes when the config leaves it out: the enclosing default instance's, else the field's own."""
    if isinstance(owner_default, BaseModel):
        return getattr(owner_default, name)
    if field.is_required():
        return _NO_DEFAULT
    if field.default_factory is not None:
        try:
            return field.get_default(call_default_factory=True, validated_data={})
        except Exception:  # a factory that needs other fields' values
            return _NO_DEFAULT
    return field.default


def _render_default(field: FieldInfo, value: Any) -> str:
    if value is _NO_DEFAULT:
        return "required" if field.is_required() else "computed"
    if isinstance(value, BaseModel):
        return "(section defaults)"
    return f"`{json.dumps(_plain(value), sort_keys=False, default=str)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") if text else ""


def _section(lines: list[str], path: str, model: type[BaseModel], default: Any, description: str) -> None:
    rows, nested = [], []
    for name, field in model.model_fields.items():
        tp = field.annotation
        value = _default_of(field, default, name)
        kind = _type_name(tp)
        limits = _constraints(field)
        rows.append(f"| `{path}{name}` | `{_cell(kind)}`{', ' + _cell(limits) if limits else ''} | "
                    f"{_render_default(field, value)} | {_cell(field.description or '')} |")
        for suffix, sub in _nested_models(tp):
            sub_default = value if isinstance(value, sub) and not suffix else None
            nested.append((f"{path}{name}{suffix}", sub, sub_default, field.description or ""))
    if path:
        lines += [f"### `{path.rstrip('.')}`", ""]
        text = " ".join(t if t.endswith((".", ":", ")")) else t + "." for t in (_cell(description), _cell(_doc(model))) if t)
        lines += [f"{model.__name__}. {text}" if text else f"{model.__name__}.", ""]
    lines += ["| field | type | default | description |", "|---|---|---|---|", *rows, ""]
    for sub_path, sub, sub_default, sub_description in nested:
        _section(lines, sub_path + ".", sub, sub_default, sub_description)


def render() -> str:
    """The whole reference, as Markdown."""
    lines = [
        "# Config reference",
        "",
        "<!-- Generated from the pydantic config models by `make docs`"
        " (python -m keel.pipelines.config_reference); do not edit by hand. -->",
        "",
        "One YAML file per run; its `pipeline:` key picks the model (default `training`;",
        "a `training` config with a `tune` section runs the `training-tuned` pipeline).",
        "Unknown keys and wrong types are errors that name the field and the allowed values.",
        "A default of `(section defaults)` means the section's own fields' defaults apply;",
        "`required` fields have no default. Each nested section has its own table below its parent's.",
        "",
    ]
    models = config_models()
    lines += ["Pipelines: " + ", ".join(f"[`{kind}`](#pipeline-{kind})" for kind in models), ""]
    for kind, model in models.items():
        lines += [f"## pipeline: {kind}", ""]
        if _doc(model):
            lines += [f"{model.__name__}. {_doc(model)}", ""]
        _section(lines, "", model, None, "")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keel.pipelines.config_reference", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help=f"exit 1 when {OUTPUT.name} differs from the models")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT}: out of date with the config models; run `make docs`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
