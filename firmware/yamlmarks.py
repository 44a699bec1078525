"""YAML loading that remembers where every value came from, so errors can say ``file:line``.

``load_located(text)`` returns plain-looking ``dict``/``list`` subclasses (``LocDict``, ``LocList``) that
carry the 1-based line of themselves and of each key/item. Scalars stay plain Python values.

It does the job of ``tds_core.yamlconf`` on purpose: the firmware may import nothing of the core but
``tds_core.protocol`` (a board installs nothing else of it; tests/test_layout.py checks the rule).
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["LocDict", "LocList", "YamlSyntaxError", "line_of", "load_located"]


class LocDict(dict):
    """A mapping with ``line`` (where it starts) and ``key_lines`` (key -> line of its value)."""

    line: int = 0
    key_lines: dict[Any, int]

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.key_lines = {}


class LocList(list):
    """A sequence with ``line`` (where it starts) and ``item_lines`` (index -> line)."""

    line: int = 0
    item_lines: list[int]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.item_lines = []


class YamlSyntaxError(ValueError):
    """The text is not YAML; ``line`` is 1-based (0 when unknown)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LocDict:
    loader.flatten_mapping(node)
    out = LocDict()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise YamlSyntaxError(key_node.start_mark.line + 1, "unhashable mapping key") from None
        if key in out:
            raise YamlSyntaxError(key_node.start_mark.line + 1, f"duplicate key {key!r}")
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = value_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LocList:
    out = LocList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_located(text: str) -> Any:
    """Parse one YAML document with line tracking. Raises ``YamlSyntaxError``."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise YamlSyntaxError(line, f"{exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(0, str(exc)) from None


def line_of(container: Any, key: Any, default: int = 0) -> int:
    """Line of ``container[key]`` if known, else the container's own line, else ``default``."""
    if isinstance(container, LocDict):
        return container.key_lines.get(key, container.line or default)
    if isinstance(container, LocList):
        if isinstance(key, int) and 0 <= key < len(container.item_lines):
            return container.item_lines[key]
        return container.line or default
    return default
