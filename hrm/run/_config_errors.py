"""Turn pydantic's ValidationError into one ConfigError that names the key to change.

Unknown key -> the key and the nearest valid one; wrong type -> the field and its expected type.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails


class ConfigError(ValueError):
    """A config, preset or override is wrong; the message says which key and how to fix it."""


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _field_annotation(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[Any, tuple[str, ...]]:
    """The annotation of the deepest named field along loc, and that field's dotted path."""
    model: Any = root
    annotation: Any = None
    path: list[str] = []
    for part in loc:
        if not (_is_model(model) and isinstance(part, str) and part in model.model_fields):
            break
        annotation = model.model_fields[part].annotation
        path.append(part)
        model = annotation
    return annotation, tuple(path)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list [" + ", ".join(_type_name(a) for a in typing.get_args(tp)) + "]"
    if tp is type(None):
        return "null"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}
    if tp in names:
        return names[tp]
    if _is_model(tp):
        return "a mapping of keys"
    return getattr(tp, "__name__", str(tp))


def _all_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths: list[str] = []
    for name, info in model.model_fields.items():
        dotted = f"{prefix}{name}"
        paths.append(dotted)
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            paths.extend(_all_paths(sub, dotted + "."))
    return paths


def _nearest_key(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str | None, list[str]]:
    """Best suggestion for an unknown key at loc, and the keys valid at that level."""
    parent_ann, parent_path = _field_annotation(root, loc[:-1])
    parent = parent_ann if parent_path else root
    valid = list(parent.model_fields) if _is_model(parent) else []
    leaf = str(loc[-1])
    prefix = ".".join(parent_path)
    close = difflib.get_close_matches(leaf, valid, n=1, cutoff=0.6)
    if close:
        return (f"{prefix}.{close[0]}" if prefix else close[0]), valid
    # The right (or a near) name in the wrong section: train.lr -> optim.lr, train.lrr -> optim.lr.
    by_leaf: dict[str, str] = {}
    for path in _all_paths(root):
        if "." in path:
            by_leaf.setdefault(path.rsplit(".", 1)[-1], path)
    close = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
    if close:
        return by_leaf[close[0]], valid
    dotted = ".".join(str(p) for p in loc)
    close = difflib.get_close_matches(dotted, [p for p in _all_paths(root) if "." in p], n=1, cutoff=0.5)
    return (close[0] if close else None), valid


def _describe(err: ErrorDetails, root: type[BaseModel]) -> str:
    loc = tuple(err.get("loc", ()))
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        suggestion, valid = _nearest_key(root, loc)
        hint = f"; did you mean '{suggestion}'?" if suggestion else ""
        return f"unknown key '{dotted}'{hint} (valid here: {', '.join(valid)})"
    msg = str(err.get("msg", "invalid value"))
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
        _, path = _field_annotation(root, loc)
        field = ".".join(path)
        # A model-level check names its keys itself; a field-level one is prefixed with its key.
        return msg if not field or len(path) < len(loc) or msg.startswith(field) else f"{field}: {msg}"
    annotation, path = _field_annotation(root, loc)
    field = ".".join(path) or dotted
    expected = f"; expected {_type_name(annotation)}" if annotation is not None else ""
    got = err.get("input")
    return f"{field}: {msg} (got {got!r}){expected}"


def translate_validation_error(exc: ValidationError, root: type[BaseModel], source: str) -> ConfigError:
    lines = [_describe(e, root) for e in exc.errors()]
    if len(lines) == 1:
        return ConfigError(f"{source}: {lines[0]}")
    return ConfigError(f"{source}: {len(lines)} problems:\n  " + "\n  ".join(lines))
