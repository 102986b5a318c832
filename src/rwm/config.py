"""Typed configuration: nested ``@dataclass`` configs <-> plain dicts <-> YAML, strictly checked.

Why this exists: every experiment setting lives in a dataclass field with a type annotation
and a named default (mjlab / CleanRL style), so one YAML file fully describes a run. Loading
is strict on purpose: a misspelled key or a string where a number belongs would otherwise
silently become a *different* experiment. We fail at startup instead, with one sentence that
names the full dotted key and what was expected. Instances are always built through the
class, so each dataclass's ``__post_init__`` range checks (written with :func:`check`) also
fire after loading a file and after command-line overrides.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import numbers
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from rwm.io import atomic_write_text

__all__ = ["ConfigError", "check", "check_interval", "to_dict", "from_dict", "apply_overrides", "save_yaml", "load_yaml",
           "config_hash"]

T = TypeVar("T")
_UNION = (Union, types.UnionType)
_NONE = type(None)


class ConfigError(ValueError):
    """A user-facing configuration mistake; the message is one sentence naming key and expectation."""


class _Mismatch(ConfigError):
    """A value of the wrong type at exactly ``key``; unions catch it to re-word their message."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition``; used by ``__post_init__``."""
    if not condition:
        raise ConfigError(message)


def check_interval(key: str, interval: Sequence[float], low: float = -math.inf) -> None:
    """Raise :class:`ConfigError` unless ``interval`` is a range (low, high) with ``low`` <= its low <= its high."""
    check(
        interval[0] <= interval[1] and interval[0] >= low,
        f"{key} = {tuple(interval)} is not a valid range; expected (low, high) with "
        f"{'' if low == -math.inf else f'{low} <= '}low <= high.",
    )


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float (YAML 1.2) instead of PyYAML's YAML-1.1 string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _Dumper(yaml.SafeDumper):
    """Block-style mappings (one reward term per line) but ``[128, 128]`` for lists of scalars."""


_Dumper.add_representer(
    list,
    lambda dumper, data: dumper.represent_sequence(
        "tag:yaml.org,2002:seq", data, flow_style=not any(isinstance(x, (dict, list)) for x in data)
    ),
)


# ----------------------------------------------------------------------------- helpers
def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """Resolved annotations; ``get_type_hints`` turns ``from __future__`` strings into types."""
    return typing.get_type_hints(cls)


def _init_fields(cls: type) -> dict[str, dataclasses.Field]:
    """Only ``init=True`` fields are configuration; ``init=False`` ones are derived in code."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X`` (used to see what an override path walks into)."""
    if get_origin(tp) in _UNION:
        rest = [a for a in get_args(tp) if a is not _NONE]
        if len(rest) == 1:
            return rest[0]
    return tp


def _fmt(tp: Any) -> str:
    """Short spelling of an annotation, e.g. ``tuple[float, float]``."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is _NONE:
        return "None"
    if origin in _UNION:
        return " | ".join(_fmt(a) for a in args)
    if origin is None:
        return getattr(tp, "__name__", repr(tp))
    inner = ", ".join("..." if a is Ellipsis else _fmt(a) for a in args)
    return f"{getattr(origin, '__name__', repr(origin))}[{inner}]"


def _describe(tp: Any) -> str:
    """What an annotation expects, as a phrase: 'an int', "one of 'elu', 'relu'", 'a str or null'."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is _NONE:
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in _UNION:
        return " or ".join(_describe(a) for a in args)
    if _is_dataclass_type(tp):
        return f"a mapping of {tp.__name__} fields"
    name = _fmt(tp)
    return f"an {name}" if name[:1] in "aeiouAEIOU" else f"a {name}"


def _mismatch(key: str, tp: Any, value: Any, detail: str = "") -> _Mismatch:
    return _Mismatch(f"config key '{key}' expects {_describe(tp)}{detail}, got {_short(value)}", key)


def _unknown_key(name: Any, valid: Mapping[str, Any], prefix: str) -> ConfigError:
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    hint = f"; did you mean '{_join(prefix, close[0])}'?" if close else ""
    where = f" under '{prefix}'" if prefix else ""
    return ConfigError(
        f"unknown config key '{_join(prefix, str(name))}'{hint} (valid keys{where}: {', '.join(valid)})"
    )


# ----------------------------------------------------------------------------- coercion
def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and return it in canonical form (or raise)."""
    if tp is Any or tp is object:
        return value
    origin, args = get_origin(tp), get_args(tp)
    if origin in _UNION:
        if value is None and _NONE in args:
            return None
        # Try the option whose type matches exactly first, so ``int | float`` keeps 2.0 a float.
        options = sorted((a for a in args if a is not _NONE), key=lambda a: a is not type(value))
        errors: list[ConfigError] = []
        for option in options:
            try:
                return _coerce(option, value, key)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1 and not (isinstance(errors[0], _Mismatch) and errors[0].key == key):
            raise errors[0]  # a deeper problem (e.g. bad key inside an Optional section) says more
        raise _mismatch(key, tp, value)
    if origin is Literal:
        for option in args:  # the type check keeps True from matching Literal[1]
            if value == option and type(value) is type(option):
                return option
        raise _mismatch(key, tp, value)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            value = to_dict(value)
        if isinstance(value, Mapping):
            return from_dict(tp, value, key_prefix=key)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:  # bool is an int subclass in Python but never a sensible count
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif origin is tuple or tp is tuple:
        if isinstance(value, (list, tuple)):
            if not args:
                return tuple(value)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
            if len(value) != len(args):
                raise _mismatch(key, tp, value, f" with exactly {len(args)} items")
            return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    elif origin in (list, Sequence) or tp is list:
        if isinstance(value, (list, tuple)):
            item = args[0] if args else Any
            return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin in (dict, Mapping) or tp is dict:
        if isinstance(value, Mapping):
            kt, vt = args if args else (Any, Any)
            return {
                _coerce(kt, k, f"{key} (dict key)"): _coerce(vt, v, _join(key, str(k)))
                for k, v in value.items()
            }
    elif origin is None and isinstance(tp, type):  # str, None, and other plain classes
        if isinstance(value, tp):
            return value
    else:
        raise TypeError(f"config key '{key}' has an unsupported annotation {_fmt(tp)}")
    raise _mismatch(key, tp, value)


# ----------------------------------------------------------------------------- public API
def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested dataclass -> plain dicts/lists/scalars (tuples become lists), safe for ``yaml.safe_dump``."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"to_dict needs a dataclass instance, got {cfg!r}")
    return _plain(cfg, "")


def _plain(value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {n: _plain(getattr(value, n), _join(key, n)) for n in _init_fields(type(value))}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):  # also numpy ints, which safe_dump would refuse
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        return {_plain(k, key): _plain(v, _join(key, str(k))) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(f"config key '{key}' holds a {type(value).__name__}, which cannot be written as YAML")


def from_dict(cls: type[T], data: Mapping[str, Any], *, key_prefix: str = "") -> T:
    """Build ``cls`` from a mapping: unknown keys fail, missing keys take defaults, values are type-checked."""
    if not _is_dataclass_type(cls):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    if not isinstance(data, Mapping):
        where = f"config section '{key_prefix}'" if key_prefix else f"the {cls.__name__} config"
        raise ConfigError(f"{where} expects a mapping of keys to values, got {_short(data)}")
    fields, hints = _init_fields(cls), _hints(cls)
    for name in data:
        if name not in fields:
            raise _unknown_key(name, fields, key_prefix)
    kwargs = {}
    for name, f in fields.items():
        key = _join(key_prefix, name)
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"config key '{key}' is required but missing")
    try:
        return cls(**kwargs)  # runs __post_init__ range checks
    except ConfigError as err:
        if not key_prefix:
            raise
        raise ConfigError(f"{str(err).rstrip('.')} (in config section '{key_prefix}')") from err


def apply_overrides(cfg: T, overrides: Sequence[str]) -> T:
    """Return a NEW config with ``dotted.key=VALUE`` overrides applied (VALUE parsed as YAML), re-validated.

    A dict field takes single entries (``reward_weights.track_lin_vel=2.0``); a nested section
    can't be replaced by a scalar; a mapping value for a section is merged into it.
    """
    if isinstance(overrides, str):
        raise TypeError("overrides must be a list of 'KEY=VALUE' strings, not a single string")
    data = to_dict(cfg)  # fresh containers, so the input is never mutated
    for item in overrides:
        key, sep, raw = item.partition("=") if isinstance(item, str) else ("", "", "")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"override {_short(item)} is malformed; expected KEY=VALUE")
        try:
            value = yaml.load(raw, Loader=_Loader)
        except yaml.YAMLError as err:
            problem = _yaml_problem(err)
            raise ConfigError(f"override {_short(item)} has a value that is not valid YAML ({problem})") from None
        _set_path(type(cfg), data, parts, value, raw.strip(), "")
    return from_dict(type(cfg), data)


def _set_path(tp: Any, node: dict, parts: list[str], value: Any, raw: str, done: str) -> None:
    """Walk ``parts`` through the annotations (and the dict ``node``) and set the leaf."""
    tp, part = _strip_optional(tp), parts[0]
    key = _join(done, part)
    if _is_dataclass_type(tp):
        if part not in _init_fields(tp):
            raise _unknown_key(part, _init_fields(tp), done)
        child_tp = _hints(tp)[part]
    elif get_origin(tp) in (dict, Mapping) or tp is dict:
        child_tp = get_args(tp)[1] if get_args(tp) else Any
    else:
        full = _join(done, ".".join(parts))
        raise ConfigError(
            f"override key '{full}' is invalid because '{done}' holds {_describe(tp)}, not a section"
        )
    if len(parts) > 1:
        if not isinstance(node.get(part), dict):
            node[part] = {} if node.get(part) is None else node[part]
        _set_path(child_tp, node[part], parts[1:], value, raw, key)
        return
    leaf = _strip_optional(child_tp)
    if _is_dataclass_type(leaf) and value is not None:
        if not isinstance(value, Mapping):
            first = next(iter(_init_fields(leaf)), "field")
            raise ConfigError(
                f"override '{key}={raw}' cannot replace the config section '{key}' with a scalar; "
                f"set one of its fields instead, e.g. '{key}.{first}=...'"
            )
        value = {**(node.get(part) or {}), **value}
    if leaf is str and isinstance(value, (bool, int, float)):
        value = raw  # `run_name=2024` means the string "2024", not an int
    node[part] = value


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One-line summary of a PyYAML error (its str() spans several lines)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or type(err).__name__
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else str(problem)


def save_yaml(cfg: Any, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML atomically: a crash mid-write never leaves a truncated config behind."""
    path = Path(path)
    text = yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    atomic_write_text(path, text)


def load_yaml(cls: type[T], path: str | os.PathLike) -> T:
    """Read a YAML config file into ``cls`` with the same strict checks as :func:`from_dict`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file '{path}' could not be read ({err})") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML ({_yaml_problem(err)})") from None
    if not isinstance(data, dict):
        got = "an empty document" if data is None else _short(data)
        raise ConfigError(f"config file '{path}' must hold a mapping of config keys at top level, got {got}")
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{str(err).rstrip('.')} (in config file '{path}')") from err


def config_hash(cfg: Any) -> str:
    """sha256 of the canonical sorted-key JSON dump; equal on all ranks iff their configs agree.

    The config is round-tripped through :func:`from_dict` first so that, e.g., ``lr = 1`` set in
    code and ``lr: 1.0`` loaded from YAML hash the same.
    """
    canonical = to_dict(from_dict(type(cfg), to_dict(cfg)))
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
