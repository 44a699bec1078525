"""The line-aware YAML loader: every error names file:line and the field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tds_core.yamlconf import (
    ConfigError,
    check_keys,
    items,
    load_yaml,
    load_yaml_text,
    one_of,
    optional,
    require,
    require_float,
    require_int,
    require_list,
    require_str,
)

DOC = """\
name: demo
fleet:
  gateways:
    - mac: "aa:bb:cc:dd:ee:01"
      port: 1883
    - mac: zz
      port: "1883"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _mac(value: object) -> str:
    if not isinstance(value, str) or len(value.split(":")) != 6:
        raise ValueError(value)
    return value


def test_error_names_file_line_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, DOC)
    doc = load_yaml(path)
    gws = require_list(doc["fleet"], "gateways")
    assert [g.path for g in items(gws)] == ["fleet.gateways[0]", "fleet.gateways[1]"]
    with pytest.raises(ConfigError) as err:
        for g in items(gws):
            require(g, "mac", _mac, expected="a MAC like aa:bb:cc:dd:ee:ff")
    e = err.value
    assert (e.file, e.line, e.field) == (str(path), 6, "fleet.gateways[1].mac")
    assert str(e) == f"{path}:6: fleet.gateways[1].mac: expected a MAC like aa:bb:cc:dd:ee:ff, got 'zz'"
    assert isinstance(e, ValueError)


def test_wrong_type_line(tmp_path: Path) -> None:
    doc = load_yaml(_write(tmp_path, DOC))
    g0, g1 = doc["fleet"]["gateways"]
    assert require_int(g0, "port", min=1, max=65535) == 1883
    with pytest.raises(ConfigError, match=r"conf.yaml:7: fleet.gateways\[1\].port: expected an integer, "
                                          r"got a string '1883'"):
        require_int(g1, "port", min=1, max=65535)
    with pytest.raises(ConfigError, match="expected an integer from 1 to 100, got 1883"):
        require_int(g0, "port", min=1, max=100)
    with pytest.raises(ConfigError, match="expected a non-empty string, got an integer 1883"):
        require_str(g0, "port")


def test_booleans_are_not_integers() -> None:
    doc = load_yaml_text("n: true\nx: 1\n")
    with pytest.raises(ConfigError, match="<string>:1: n: expected an integer, got a boolean"):
        require_int(doc, "n")
    assert require_float(doc, "x") == 1.0


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    assert err.value.line == 3
    assert str(err.value).startswith(f"{path}:3: YAML syntax error: ")
    assert "line 2" in str(err.value)  # where the unclosed list started


def test_bad_indentation_line() -> None:
    with pytest.raises(ConfigError, match=r"^x.yaml:2: YAML syntax error: mapping values are not allowed"):
        load_yaml_text("a: 1\n  b: 2\n", "x.yaml")


def test_unknown_key_suggests() -> None:
    doc = load_yaml_text("gateways:\n  - mac: x\n    payload_fromat: v1\n", "f.yaml")
    with pytest.raises(ConfigError) as err:
        check_keys(doc["gateways"][0], {"mac", "code", "payload_format"})
    assert str(err.value) == (
        "f.yaml:3: gateways[0].payload_fromat: unknown key (did you mean 'payload_format'?) "
        "(allowed: code, mac, payload_format)"
    )


def test_missing_required_key_names_container() -> None:
    doc = load_yaml_text("a: 1\nitems:\n  - {x: 1}\n", "f.yaml")
    with pytest.raises(ConfigError, match=r"^f.yaml:3: items\[0\]: missing required key 'y'$"):
        check_keys(doc["items"][0], {"x", "y"}, required={"y"})


def test_one_of_and_optional() -> None:
    doc = load_yaml_text("fmt: legasy\nn: null\n", "f.yaml")
    with pytest.raises(ConfigError, match=r"f.yaml:1: fmt: expected one of legacy, v1, got 'legasy' "
                                          r"\(did you mean 'legacy'\?\)"):
        one_of(doc, "fmt", ("v1", "legacy"))
    assert optional(doc, "n", require_int, default=7) == 7
    assert optional(doc, "absent", require_int, default=7) == 7
    assert require_int(doc, "absent", default=3) == 3


def test_duplicate_keys_are_errors_but_merge_keys_work() -> None:
    with pytest.raises(ConfigError, match=r"^f.yaml:3: duplicate key 'a' \(first at line 1\)$"):
        load_yaml_text("a: 1\nb: 2\na: 3\n", "f.yaml")
    doc = load_yaml_text("base: &b {x: 1, y: 2}\nitem:\n  <<: *b\n  y: 3\n", "f.yaml")
    assert doc["item"] == {"x": 1, "y": 3}
    assert doc["item"].line_of("y") == 4


def test_top_level_must_be_mapping() -> None:
    with pytest.raises(ConfigError, match=r"f.yaml:1: expected a mapping at the top level, got a list"):
        load_yaml_text("- 1\n", "f.yaml")
    with pytest.raises(ConfigError, match="got an empty document"):
        load_yaml_text("", "f.yaml")


def test_items_refuses_non_mapping() -> None:
    doc = load_yaml_text("l:\n  - {a: 1}\n  - 5\n", "f.yaml")
    with pytest.raises(ConfigError, match=r"f.yaml:3: l\[1\]: expected a mapping, got an integer 5"):
        list(items(doc["l"]))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read file"):
        load_yaml(tmp_path / "nope.yaml")


def test_unsafe_tags_refused() -> None:
    with pytest.raises(ConfigError, match=r"f.yaml:1: YAML error: could not determine a constructor"):
        load_yaml_text("a: !!python/object/apply:os.system ['true']\n", "f.yaml")
