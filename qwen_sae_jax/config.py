"""Typed dataclass configs loaded from YAML, with dotted ``key=value`` overrides.

A config is a tree of ``@dataclasses.dataclass`` classes whose fields carry type annotations
(``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, ``X | None``, ``list[X]``, ``tuple[X, ...]``,
``dict[str, X]`` and nested dataclasses). The help text of a field is the string literal written on the
line after it (an attribute docstring, as in sparsify / simple_parsing), or ``field(metadata={"help": ...})``.

    cfg = load_config(TrainConfig, "configs/tiny.yaml", ["saes.0.k=64", "data.ctx_len=256"])
    print(dump_yaml(cfg))
    print(format_help(TrainConfig))

Every problem (unknown key, wrong type, bad value) is a ``UserError`` naming the dotted key; an unknown key
names the closest valid one. Overrides parse their value as YAML (``k=64`` is an int, ``hooks=[layers.0,
layers.1]`` a list, ``x=null`` None). List items are addressed by index (``saes.0.k``).
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import inspect
import math
import textwrap
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence, TypeVar

import yaml

from qwen_sae_jax.errors import UserError, did_you_mean

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")  # every config class is a dataclass

__all__ = [
    "load_config", "from_dict", "to_dict", "dump_yaml", "apply_overrides", "field_docs",
    "describe_fields", "format_help", "FieldDoc",
]


# --------------------------------------------------------------------------------------------- help text
@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Help text per field of a dataclass: ``metadata['help']``, else the attribute docstring."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, nxt in zip(body, body[1:] + [None]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            docs[f.name] = f.metadata["help"]
    return docs


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "|".join(repr(a) if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin in (list, Sequence):
        return f"list[{_type_name(args[0])}]"
    if origin is tuple:
        return f"tuple[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]"
    if origin in (dict, Mapping):
        return f"dict[{_type_name(args[0])}, {_type_name(args[1])}]"
    return getattr(tp, "__name__", str(tp))


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One documented config key."""

    key: str          # dotted, list items shown as ``N``
    type: str
    default: str      # "required" when the field has no default
    help: str


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _dataclass_in(tp: Any) -> tuple[Any, str]:
    """The dataclass nested in ``tp`` (itself, an Optional, or a list item) and the key suffix to reach it."""
    if dataclasses.is_dataclass(tp):
        return tp, ""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for a in args:
            if dataclasses.is_dataclass(a):
                return a, ""
    if origin in (list, Sequence, tuple) and args and dataclasses.is_dataclass(args[0]):
        return args[0], ".N"
    return None, ""


def describe_fields(cls: type, prefix: str = "") -> list[FieldDoc]:
    """Every leaf key of ``cls`` (recursively), with type, default and help."""
    out: list[FieldDoc] = []
    docs, hints = field_docs(cls), _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = prefix + f.name
        sub, suffix = _dataclass_in(hints[f.name])
        if sub is not None:
            if docs.get(f.name):
                out.append(FieldDoc(key, _type_name(hints[f.name]), "", docs[f.name]))
            out.extend(describe_fields(sub, key + suffix + "."))
            continue
        default = _default_of(f)
        shown = "required" if default is dataclasses.MISSING else yaml.safe_dump(
            _plain(default), default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
        out.append(FieldDoc(key, _type_name(hints[f.name]), shown, docs.get(f.name, "")))
    return out


def format_help(cls: type, width: int = 100) -> str:
    """A readable listing of every key of ``cls`` for ``--help``."""
    lines = []
    for d in describe_fields(cls):
        head = f"  {d.key}: {d.type}" + (f" = {d.default}" if d.default else "")
        lines.append(head)
        if d.help:
            lines.extend(textwrap.wrap(d.help, width=width, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ typed conversion
def _fail(path: str, msg: str) -> UserError:
    return UserError(f"config key {path!r}: {msg}" if path else f"config: {msg}")


# long: one branch per kind of annotation the configs use (optional, union, literal, list, dict, dataclass, scalar)
def _convert(value: Any, tp: Any, path: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` (strict; raises UserError naming ``path``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is not None:
            raise _fail(path, f"expected null, got {value!r}")
        return None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, path)
            except UserError as err:
                errors.append(str(err))
        if len(errors) == 1:   # one non-null alternative (``float | None``): its own, more precise reason
            raise UserError(errors[0])
        raise _fail(path, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        hint = did_you_mean(str(value), [str(a) for a in args]) if isinstance(value, str) else ""
        raise _fail(path, f"{value!r} is not one of {', '.join(repr(a) for a in args)}{hint}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, path)
    if origin in (list, Sequence) or tp is list:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _fail(path, f"expected a list, got {value!r}")
        item = args[0] if args else Any
        return [_convert(v, item, f"{path}.{i}") for i, v in enumerate(value)]
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _fail(path, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}.{i}") for i, v in enumerate(value))
        if len(args) != len(value):
            raise _fail(path, f"expected {len(args)} items, got {len(value)}")
        return tuple(_convert(v, a, f"{path}.{i}") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise _fail(path, f"expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_convert(k, kt, path): _convert(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(path, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):   # "1e6", "1_000_000"
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise _fail(path, f"expected an integer, got {value!r}")
    if tp is float:   # every float setting must be finite: nan / inf never mean anything here
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):   # YAML reads "1e-3" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise _fail(path, f"expected a number, got {value!r}")
        if not math.isfinite(number):
            raise _fail(path, f"expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _fail(path, f"expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _fail(path, f"unsupported value {value!r} for type {_type_name(tp)}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown_key(cls: type, path: str, key: str) -> UserError:
    valid = [_join(path, f.name) for f in dataclasses.fields(cls) if f.init]
    return UserError(f"unknown config key {_join(path, key)!r}{did_you_mean(_join(path, key), valid)}; "
                     f"valid keys here: {', '.join(v.rsplit('.', 1)[-1] for v in valid)}")


def from_dict(cls: type[T], data: Mapping[str, Any] | None, path: str = "") -> T:
    """Build ``cls`` from a mapping, recursively and strictly typed."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _fail(path, f"expected a mapping of keys for {cls.__name__}, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise _unknown_key(cls, path, str(key))
    hints = _hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], _join(path, name))
        elif _default_of(f) is dataclasses.MISSING:
            raise _fail(_join(path, name), "is required")
    try:
        return cls(**kwargs)
    except UserError:
        raise
    except (TypeError, ValueError) as err:
        raise _fail(path, str(err)) from None


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict / list form of a config (YAML / JSON serialisable)."""
    return _plain(obj)


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=None, width=110)


# ------------------------------------------------------------------------------------------- overrides
def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise UserError(f"override {item!r} is not of the form dotted.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise UserError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set(obj: Any, tp: Any, parts: list[str], value: Any, path: str) -> Any:
    """A copy of ``obj`` (of annotated type ``tp``) with ``parts`` set to ``value``."""
    if not parts:
        return _convert(value, tp, path)
    head, rest = parts[0], parts[1:]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        if head not in fields:
            raise _unknown_key(cls, path, head)
        new = _set(getattr(obj, head), _hints(cls)[head], rest, value, _join(path, head))
        copied = copy.copy(obj)     # validation (__post_init__) runs once, after every override
        object.__setattr__(copied, head, new)
        return copied
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if obj is None:
            sub, _ = _dataclass_in(tp)
            if sub is None:
                raise _fail(path, f"is null; set it as a whole ({path}=...)")
            obj = sub()
        def matches(a: Any) -> bool:
            base = typing.get_origin(a) or a
            return isinstance(base, type) and isinstance(obj, base)
        return _set(obj, next((a for a in inner if matches(a)), inner[0]), parts, value, path)
    if isinstance(obj, (list, tuple)):
        try:
            index = int(head)
        except ValueError:
            raise _fail(_join(path, head),
                        f"{path!r} is a list: address its items by index 0..{len(obj) - 1}") from None
        if not 0 <= index < len(obj):
            raise _fail(_join(path, head), f"index out of range: {path!r} has {len(obj)} item(s)")
        item_tp = args[0] if args else Any
        items = list(obj)
        items[index] = _set(items[index], item_tp, rest, value, _join(path, head))
        return type(obj)(items)
    if isinstance(obj, Mapping):
        if rest and head not in obj:
            raise _fail(_join(path, head), f"does not exist{did_you_mean(head, list(obj))}")
        vt = args[1] if len(args) == 2 else Any
        return {**obj, head: _set(obj.get(head), vt, rest, value, _join(path, head))}
    raise _fail(_join(path, head), f"{path!r} is a {_type_name(tp)}, it has no key {head!r}")


def apply_overrides(cfg: T, overrides: Sequence[str]) -> T:
    """``cfg`` with each ``dotted.key=value`` applied in order: each value is typed at once, the whole
    config is validated after the last one (so ``cache.mode=write cache.dir=x`` works in either order)."""
    if not overrides:
        return cfg
    for item in overrides:
        parts, value = _parse_override(item)
        cfg = _set(cfg, type(cfg), parts, value, "")
    return from_dict(type(cfg), to_dict(cfg))   # re-validate the whole tree


def load_config(cls: type[T], source: str | Path | Mapping | None = None, overrides: Sequence[str] = ()) -> T:
    """Load ``cls`` from a YAML file (or a mapping, or defaults when None), then apply overrides."""
    if source is None:
        data: Any = {}
    elif isinstance(source, Mapping):
        data = source
    else:
        path = Path(source)
        if path.is_dir():
            raise UserError(f"config file {str(path)!r} is a folder; give a YAML file")
        if not path.is_file():
            raise UserError(f"config file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
        except UnicodeDecodeError as err:
            raise UserError(f"config file {str(path)!r} is not UTF-8 text (byte offset {err.start})") from None
        except yaml.YAMLError as err:
            # one line: the problem and where it is, not PyYAML's multi-line excerpt with a caret
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or " ".join(str(err).split())
            raise UserError(f"config file {str(path)!r} is not valid YAML{where}: {problem}") from None
    return apply_overrides(from_dict(cls, data), overrides)
