"""The core's line-aware YAML loader: every config error names `file:line: field.path: problem`.

    doc = load_yaml("fleet.yaml")                       # a YMap (a dict that knows its lines)
    check_keys(doc, allowed={"tenants"}, required={"tenants"})
    for tenant in items(require_list(doc, "tenants")):  # each item a YMap, path "tenants[0]"
        code = require_str(tenant, "code")
        port = require_int(tenant, "port", min=1, max=65535, default=1883)
        mac = require(tenant, "mac", normalize_mac, expected="a MAC like aa:bb:cc:dd:ee:ff")

Errors raise :class:`ConfigError` whose str() is one line, e.g.
`fleet.yaml:12: tenants[0].gateways[3].mac: expected a MAC like aa:bb:cc:dd:ee:ff, got 'zz'`.
Mappings and sequences are loaded as :class:`YMap` / :class:`YList` (plain dict / list subclasses) that
carry their file, line and field path; scalars stay plain Python values (their lines live in the parent).
Duplicate keys are an error (PyYAML would silently keep the last); merge keys (`<<: *anchor`) work.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
_MISSING: Any = object()
_MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigError(ValueError):
    """A configuration problem at a place in a file. str() is `file:line: field: message`."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.line, self.field, self.message = file, line, field or None, message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        return ": ".join(p for p in (where, self.field, self.message) if p)


class _Located:
    """Where a container came from, and the line of each of its members."""

    # Defaults for containers built in code (e.g. an empty YList() default); the loader sets real values.
    file: str = "<config>"
    line: int | None = None
    path: str = ""
    _lines: Mapping[Any, int] = MappingProxyType({})

    def line_of(self, member: Any) -> int | None:
        """Line of a key (YMap) or index (YList); the container's own line when unknown."""
        return self._lines.get(member, self.line)

    def error(self, member: Any, message: str) -> ConfigError:
        """A ConfigError about `member` (a key or index; None for the container itself)."""
        if member is None:
            return ConfigError(message, file=self.file, line=self.line, field=self.path)
        return ConfigError(message, file=self.file, line=self.line_of(member), field=self.child_path(member))

    def child_path(self, member: Any) -> str:
        if isinstance(member, int) and isinstance(self, list):
            return f"{self.path}[{member}]"
        return f"{self.path}.{member}" if self.path else str(member)


class YMap(dict, _Located):
    """A mapping loaded from YAML, with `file`, `line`, `path` and `line_of(key)`."""


class YList(list, _Located):
    """A sequence loaded from YAML, with `file`, `line`, `path` and `line_of(index)`."""


def _locate(obj: _Located, loader: yaml.SafeLoader, node: yaml.Node) -> None:
    obj.file, obj.line, obj.path, obj._lines = loader.name, node.start_mark.line + 1, "", {}


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> YMap:
    explicit = sum(1 for key, _ in node.value if key.tag != _MERGE_TAG)
    loader.flatten_mapping(node)
    merged = len(node.value) - explicit  # merged pairs come first; explicit keys may override them
    out = YMap()
    _locate(out, loader, node)
    explicit_keys: set[Any] = set()
    for i, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise ConfigError("a mapping key must be a scalar", file=loader.name, line=line) from None
        if i >= merged:
            if key in explicit_keys:
                raise ConfigError(f"duplicate key {key!r} (first at line {out.line_of(key)})",
                                  file=loader.name, line=line, field=None)
            explicit_keys.add(key)
        out[key] = loader.construct_object(value_node, deep=True)
        out._lines[key] = line
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> YList:
    out = YList()
    _locate(out, loader, node)
    for i, child in enumerate(node.value):
        out.append(loader.construct_object(child, deep=True))
        out._lines[i] = child.start_mark.line + 1
    return out


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences remember their source lines."""


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _assign_paths(obj: Any, path: str, seen: set[int]) -> None:
    if not isinstance(obj, _Located) or id(obj) in seen:
        return  # an anchored node reused by an alias keeps the path of its first occurrence
    seen.add(id(obj))
    obj.path = path
    members = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in members:
        _assign_paths(value, obj.child_path(key), seen)


def load_yaml_text(text: str, name: str = "<string>") -> YMap:
    """Parse YAML text whose top level must be a mapping; `name` is the file name used in errors."""
    loader = _Loader(text)
    loader.name = name
    try:
        doc = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "unparsable"
        if exc.context and exc.problem:
            at = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
            problem = f"{exc.problem} ({exc.context}{at})"
        kind = "YAML error" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise ConfigError(f"{kind}: {problem}", file=name,
                          line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", file=name) from None
    finally:
        loader.dispose()
    if not isinstance(doc, YMap):
        got = "an empty document" if doc is None else _type_name(doc)
        raise ConfigError(f"expected a mapping at the top level, got {got}", file=name, line=1)
    _assign_paths(doc, "", set())
    return doc


def load_yaml(path: str | Path) -> YMap:
    """Load a YAML file whose top level is a mapping. Raises ConfigError (also for an unreadable file)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file: {getattr(exc, 'strerror', None) or exc}", file=str(path)) from None
    return load_yaml_text(text, str(path))


# -- accessors ------------------------------------------------------------------------------------------

def _type_name(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                       (dict, "a mapping"), (list, "a list"), (type(None), "nothing")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _got(value: Any) -> str:
    return f"{_type_name(value)} {value!r}" if isinstance(value, (str, int, float)) else _type_name(value)


def _get(m: YMap, key: str, default: Any) -> Any:
    if key in m:
        return m[key]
    if default is _MISSING:
        raise m.error(None, f"missing required key {key!r}")
    return default


def require(m: YMap, key: str, convert: Callable[[Any], T], *, expected: str, default: Any = _MISSING) -> T:
    """`convert(m[key])`; a ValueError/TypeError from it becomes `field: expected <expected>, got <value>`."""
    if key not in m and default is not _MISSING:
        return default
    value = _get(m, key, default)
    try:
        return convert(value)
    except (ValueError, TypeError):
        raise m.error(key, f"expected {expected}, got {value!r}") from None


def require_str(m: YMap, key: str, *, default: Any = _MISSING, nonempty: bool = True) -> str:
    """A string value (numbers are not silently turned into strings: quote them in YAML)."""
    value = _get(m, key, default)
    if key in m and (not isinstance(value, str) or (nonempty and not value)):
        raise m.error(key, f"expected a non-empty string, got {_got(value)}")
    return value


def require_int(m: YMap, key: str, *, min: int | None = None, max: int | None = None,
                default: Any = _MISSING) -> int:
    """An integer (not a boolean) within [min, max]."""
    value = _get(m, key, default)
    if key not in m:
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        raise m.error(key, f"expected an integer, got {_got(value)}")
    if (min is not None and value < min) or (max is not None and value > max):
        raise m.error(key, f"expected an integer from {min} to {max}, got {value}")
    return value


def require_float(m: YMap, key: str, *, min: float | None = None, max: float | None = None,
                  default: Any = _MISSING) -> float:
    """A number (integers accepted, booleans not) within [min, max]."""
    value = _get(m, key, default)
    if key not in m:
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise m.error(key, f"expected a number, got {_got(value)}")
    if (min is not None and value < min) or (max is not None and value > max):
        raise m.error(key, f"expected a number from {min} to {max}, got {value}")
    return float(value)


def require_bool(m: YMap, key: str, *, default: Any = _MISSING) -> bool:
    """A YAML boolean (true/false)."""
    value = _get(m, key, default)
    if key in m and not isinstance(value, bool):
        raise m.error(key, f"expected true or false, got {_got(value)}")
    return value


def require_map(m: YMap, key: str, *, default: Any = _MISSING) -> YMap:
    """A nested mapping."""
    value = _get(m, key, default)
    if key in m and not isinstance(value, YMap):
        raise m.error(key, f"expected a mapping, got {_got(value)}")
    return value


def require_list(m: YMap, key: str, *, default: Any = _MISSING) -> YList:
    """A nested list."""
    value = _get(m, key, default)
    if key in m and not isinstance(value, YList):
        raise m.error(key, f"expected a list, got {_got(value)}")
    return value


def one_of(m: YMap, key: str, choices: Collection[str], *, default: Any = _MISSING) -> str:
    """A string that must be one of `choices` (with a "did you mean" hint)."""
    value = _get(m, key, default)
    if key in m and value not in choices:
        shown = ", ".join(sorted(map(str, choices)))
        raise m.error(key, f"expected one of {shown}, got {value!r}{_suggest(value, choices)}")
    return value


def optional(m: YMap, key: str, getter: Callable[..., T], default: Any = None, **kwargs: Any) -> T | Any:
    """`getter(m, key, **kwargs)` when the key is present (and not null), else `default`."""
    if m.get(key) is None:
        return default
    return getter(m, key, **kwargs)


def items(lst: YList, *, what: str = "a mapping") -> Iterator[YMap]:
    """Each item of a list of mappings (an error names the item that is not one)."""
    for i, item in enumerate(lst):
        if not isinstance(item, YMap):
            raise lst.error(i, f"expected {what}, got {_got(item)}")
        yield item


def check_keys(m: YMap, allowed: Collection[str], required: Collection[str] = ()) -> None:
    """Refuse unknown keys (suggesting the nearest allowed one) and report missing required keys."""
    for key in m:
        if key not in allowed:
            raise m.error(key, f"unknown key{_suggest(key, allowed) or ''} (allowed: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in m:
            raise m.error(None, f"missing required key {key!r}")


def _suggest(value: Any, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
