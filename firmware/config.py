"""The gateway config file (YAML): schema, validation with ``file:line: field.path: reason`` errors.

Example (every key below the ``meters`` list has a default except ``mac``, ``broker.url``, ``modbus.port``)::

    mac: "aa:bb:cc:dd:ee:ff"
    gateway_code: GW-TEST-001          # required when payload_format is legacy
    payload_format: v1                 # v1 | legacy
    poll_interval_s: 300
    broker:
      url: mqtts://broker.example:8883 # mqtt:// (no TLS) or mqtts:// (needs ca, cert, key)
      ca: certs/ca.crt                 # paths are relative to this file
      cert: certs/device.crt
      key: certs/device.key
    modbus:
      port: /dev/ttyUSB0               # or tcp://127.0.0.1:5020 (RTU frames over TCP unless framer: socket)
      baudrate: 9600
    queue: {max_messages: 10000}
    meters:
      - {code: D01, slave_id: 1, register: 0, data_type: uint16, scale: 0.01, unit: kWh, kind: energy}

Config changes received by command are an *overlay* (a JSON object of top-level keys) applied on top of
the file and validated by the same code (``GatewayConfig.with_overlay``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tds_core.protocol import KNOWN_UNITS, normalize_mac

from .registers import DATA_TYPES, WORD_ORDERS
from .yamlmarks import YamlSyntaxError, line_of, load_located

__all__ = [
    "COMMAND_KEYS",
    "KIND_TO_TIPO",
    "BrokerConfig",
    "ConfigError",
    "GatewayConfig",
    "MeterConfig",
    "ModbusConfig",
    "QueueConfig",
    "ReconnectConfig",
    "load_config",
    "parse_config",
]

MAX_METERS = 8
KIND_TO_TIPO = {"energy": "energia", "water": "agua", "temperature": "temperatura", "other": "outro"}
COMMAND_KEYS = frozenset({"poll_interval_s", "payload_format", "gateway_code", "meters"})
"""Top-level keys a ``config`` command may change (identity, broker and bus wiring stay in the file)."""

_DEVICE_CODE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")  # as tds_core.protocol accepts device codes
_GATEWAY_CODE_RE = re.compile(r"[^/+#\x00]{1,64}")


class ConfigError(ValueError):
    """Invalid config. ``errors`` holds one line per problem: ``source:line: path: reason``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(errors[0] if len(errors) == 1 else f"{errors[0]} (and {len(errors) - 1} more)")
        self.errors = errors


@dataclass(frozen=True)
class MeterConfig:
    """One Modbus meter behind the gateway."""

    code: str
    slave_id: int
    register: int
    data_type: str = "uint16"
    word_order: str = "big"
    scale: float = 1.0
    unit: str = "kWh"
    kind: str = "other"
    function: str = "holding"  # holding (0x03) | input (0x04)
    tipo: str = "outro"  # the legacy payload's "tipo"


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how to connect."""

    url: str
    host: str
    port: int
    tls: bool
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    keepalive_s: int = 60


@dataclass(frozen=True)
class ModbusConfig:
    """The bus and the read policy (timeout per attempt, attempts, backoff after each failed attempt)."""

    port: str
    framer: str = "rtu"
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1
    timeout_s: float = 5.0
    attempts: int = 3
    backoff_s: tuple[float, ...] = (1.0, 2.0, 4.0)


@dataclass(frozen=True)
class QueueConfig:
    """Store-and-forward: capacity on flash, PUBACK window, how long to wait for one PUBACK."""

    max_messages: int = 10_000
    inflight: int = 10
    ack_timeout_s: float = 30.0


@dataclass(frozen=True)
class ReconnectConfig:
    """Reconnect backoff: ``initial_s`` doubling up to ``max_s``, with jitter."""

    initial_s: float = 1.0
    max_s: float = 60.0


@dataclass(frozen=True)
class GatewayConfig:
    """A validated gateway config. ``raw`` is the document it was built from (for overlays)."""

    mac: str
    broker: BrokerConfig
    modbus: ModbusConfig
    meters: tuple[MeterConfig, ...]
    payload_format: str = "v1"
    gateway_code: str | None = None
    poll_interval_s: float = 300.0
    queue: QueueConfig = field(default_factory=QueueConfig)
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    storage_dir: str = "/var/lib/tds-gateway"
    source: str = "<config>"
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    base_dir: str = "."

    def with_overlay(self, overlay: Mapping[str, Any], source: str = "command config") -> GatewayConfig:
        """This config with ``overlay``'s top-level keys replaced; validated like a file. Raises ConfigError."""
        if not isinstance(overlay, Mapping):
            raise ConfigError([f"{source}: expected a JSON object, got {type(overlay).__name__}"])
        bad = sorted(str(k) for k in overlay if k not in COMMAND_KEYS)
        if bad:
            raise ConfigError([
                f"{source}: {k}: cannot be changed by command (allowed: {', '.join(sorted(COMMAND_KEYS))})"
                for k in bad
            ])
        merged = dict(self.raw)
        merged.update(overlay)
        return parse_config(merged, source=source, base_dir=self.base_dir, check_files=False)


# ------------------------------------------------------------------------------------------ validation
_MISSING = object()


class _Checker:
    """Collects errors with their location; typed getters return a default placeholder on error."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []

    def error(self, container: Any, key: Any, path: str, message: str) -> None:
        line = line_of(container, key)
        where = f"{self.source}:{line}" if line else self.source
        self.errors.append(f"{where}: {path}: {message}")

    def mapping(self, value: Any, container: Any, key: Any, path: str) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.error(container, key, path, f"expected a mapping, got {_show(value)}")
            return None
        return value

    def unknown_keys(self, mapping: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
        for k in mapping:
            if k not in allowed:
                self.error(mapping, k, f"{prefix}{k}", f"unknown key (expected one of {', '.join(sorted(allowed))})")

    def get(self, m: Mapping[str, Any], key: str, path: str, default: Any = _MISSING) -> Any:
        if key not in m or m[key] is None:
            if default is _MISSING:
                self.error(m, key, path, "required")
            return default
        return m[key]

    def integer(self, m: Mapping[str, Any], key: str, path: str, lo: int, hi: int, default: Any = _MISSING) -> int:
        v = self.get(m, key, path, default)
        if v is _MISSING:
            return lo
        if type(v) is not int or not lo <= v <= hi:
            self.error(m, key, path, f"expected an integer {lo}..{hi}, got {_show(v)}")
            return lo
        return v

    def number(
        self, m: Mapping[str, Any], key: str, path: str, lo: float, hi: float, default: Any = _MISSING,
        *, exclusive_lo: bool = False,
    ) -> float:
        v = self.get(m, key, path, default)
        if v is _MISSING:
            return lo
        ok = type(v) in (int, float) and math.isfinite(v) and (v > lo if exclusive_lo else v >= lo) and v <= hi
        if not ok:
            low = f">{lo:g}" if exclusive_lo else f"{lo:g}"
            self.error(m, key, path, f"expected a number {low}..{hi:g}, got {_show(v)}")
            return max(lo, 1e-9)
        return float(v)

    def choice(
        self, m: Mapping[str, Any], key: str, path: str, options: tuple[str, ...], default: Any = _MISSING
    ) -> str:
        v = self.get(m, key, path, default)
        if v is _MISSING:
            return options[0]
        if v not in options:
            self.error(m, key, path, f"expected one of {', '.join(options)}, got {_show(v)}")
            return options[0]
        return v

    def string(self, m: Mapping[str, Any], key: str, path: str, default: Any = _MISSING) -> str:
        v = self.get(m, key, path, default)
        if v is _MISSING:
            return ""
        if not isinstance(v, str) or not v:
            self.error(m, key, path, f"expected a non-empty string, got {_show(v)}")
            return ""
        return v


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (boolean)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value) if isinstance(value, str) else str(value)


def parse_config(
    doc: Any, *, source: str = "<config>", base_dir: str | Path = ".", check_files: bool = True
) -> GatewayConfig:
    """Validate a loaded document (from ``yamlmarks.load_located`` or a plain dict). Raises ConfigError."""
    c = _Checker(source)
    base = Path(base_dir)
    top = c.mapping(doc, doc, None, "(document)")
    if top is None:
        raise ConfigError(c.errors)
    c.unknown_keys(top, {
        "mac", "gateway_code", "payload_format", "poll_interval_s", "broker", "modbus", "queue",
        "reconnect", "meters", "storage_dir",
    }, "")

    mac = ""
    raw_mac = c.string(top, "mac", "mac")
    if raw_mac:
        try:
            mac = normalize_mac(raw_mac)
        except ValueError:
            c.error(top, "mac", "mac", f"expected six hex pairs like aa:bb:cc:dd:ee:ff, got {raw_mac!r}")

    payload_format = c.choice(top, "payload_format", "payload_format", ("v1", "legacy"), "v1")
    gateway_code = c.get(top, "gateway_code", "gateway_code", None)
    if gateway_code is not None and (not isinstance(gateway_code, str) or not _GATEWAY_CODE_RE.fullmatch(gateway_code)):
        c.error(top, "gateway_code", "gateway_code",
                f"expected 1-64 characters without '/', '+', '#', got {_show(gateway_code)}")
        gateway_code = None
    elif gateway_code is None and payload_format == "legacy":
        c.error(top, "payload_format", "gateway_code", "required when payload_format is legacy")
    poll = c.number(top, "poll_interval_s", "poll_interval_s", 0.0, 86400.0, 300.0, exclusive_lo=True)

    broker = _parse_broker(c, top, base, check_files)
    modbus = _parse_modbus(c, top)
    queue = _parse_queue(c, top)
    reconnect = _parse_reconnect(c, top)
    meters = _parse_meters(c, top)
    storage_dir = c.string(top, "storage_dir", "storage_dir", "/var/lib/tds-gateway")

    if c.errors:
        raise ConfigError(c.errors)
    return GatewayConfig(
        mac=mac, broker=broker, modbus=modbus, meters=meters, payload_format=payload_format,
        gateway_code=gateway_code, poll_interval_s=poll, queue=queue, reconnect=reconnect,
        storage_dir=str(base / storage_dir), source=source, raw=top, base_dir=str(base),
    )


def _parse_broker(c: _Checker, top: Mapping[str, Any], base: Path, check_files: bool) -> BrokerConfig:
    b = c.mapping(c.get(top, "broker", "broker", {}), top, "broker", "broker") or {}
    c.unknown_keys(b, {"url", "ca", "cert", "key", "keepalive_s"}, "broker.")
    url = c.string(b, "url", "broker.url")
    host, port, tls = "", 0, False
    if url:
        parts = urlsplit(url)
        try:
            port_part = parts.port
        except ValueError:
            port_part = -1
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or port_part == -1:
            c.error(b, "url", "broker.url", f"expected mqtt://host[:port] or mqtts://host[:port], got {url!r}")
        else:
            tls = parts.scheme == "mqtts"
            host, port = parts.hostname, port_part or (8883 if tls else 1883)
    files: dict[str, str | None] = {}
    for name in ("ca", "cert", "key"):
        v = c.get(b, name, f"broker.{name}", None)
        if v is None:
            files[name] = None
            if tls:
                c.error(b, "url", f"broker.{name}", "required for mqtts:// (mutual TLS)")
            continue
        if not isinstance(v, str) or not v:
            c.error(b, name, f"broker.{name}", f"expected a file path, got {_show(v)}")
            files[name] = None
            continue
        path = str(base / v)
        if check_files and not Path(path).is_file():
            c.error(b, name, f"broker.{name}", f"file not found: {path}")
        files[name] = path
    keepalive = c.integer(b, "keepalive_s", "broker.keepalive_s", 5, 3600, 60)
    return BrokerConfig(url=url, host=host, port=port, tls=tls, ca=files["ca"], cert=files["cert"],
                        key=files["key"], keepalive_s=keepalive)


def _parse_modbus(c: _Checker, top: Mapping[str, Any]) -> ModbusConfig:
    m = c.mapping(c.get(top, "modbus", "modbus", {}), top, "modbus", "modbus") or {}
    c.unknown_keys(m, {"port", "framer", "baudrate", "bytesize", "parity", "stopbits", "timeout_s",
                       "attempts", "backoff_s"}, "modbus.")
    port = c.string(m, "port", "modbus.port")
    if port.startswith("tcp://"):
        parts = urlsplit(port)
        try:
            ok = bool(parts.hostname) and parts.port is not None
        except ValueError:
            ok = False
        if not ok:
            c.error(m, "port", "modbus.port", f"expected tcp://host:port or a serial device path, got {port!r}")
    framer = c.choice(m, "framer", "modbus.framer", ("rtu", "socket"), "rtu")
    if framer == "socket" and port and not port.startswith("tcp://"):
        c.error(m, "framer", "modbus.framer", "socket framing needs a tcp:// port")
    baud = c.integer(m, "baudrate", "modbus.baudrate", 300, 921600, 9600)
    bytesize = c.integer(m, "bytesize", "modbus.bytesize", 5, 8, 8)
    parity = c.choice(m, "parity", "modbus.parity", ("N", "E", "O"), "N")
    stopbits = c.integer(m, "stopbits", "modbus.stopbits", 1, 2, 1)
    timeout = c.number(m, "timeout_s", "modbus.timeout_s", 0.0, 60.0, 5.0, exclusive_lo=True)
    attempts = c.integer(m, "attempts", "modbus.attempts", 1, 10, 3)
    backoff_raw = c.get(m, "backoff_s", "modbus.backoff_s", [1.0, 2.0, 4.0])
    backoff: tuple[float, ...] = (1.0, 2.0, 4.0)
    if not isinstance(backoff_raw, list) or not backoff_raw or not all(
        type(x) in (int, float) and math.isfinite(x) and 0 <= x <= 600 for x in backoff_raw
    ):
        c.error(m, "backoff_s", "modbus.backoff_s",
                f"expected a non-empty list of seconds 0..600, got {_show(backoff_raw)}")
    else:
        backoff = tuple(float(x) for x in backoff_raw)
    return ModbusConfig(port=port, framer=framer, baudrate=baud, bytesize=bytesize, parity=parity,
                        stopbits=stopbits, timeout_s=timeout, attempts=attempts, backoff_s=backoff)


def _parse_queue(c: _Checker, top: Mapping[str, Any]) -> QueueConfig:
    q = c.mapping(c.get(top, "queue", "queue", {}), top, "queue", "queue") or {}
    c.unknown_keys(q, {"max_messages", "inflight", "ack_timeout_s"}, "queue.")
    return QueueConfig(
        max_messages=c.integer(q, "max_messages", "queue.max_messages", 1, 1_000_000, 10_000),
        inflight=c.integer(q, "inflight", "queue.inflight", 1, 1000, 10),
        ack_timeout_s=c.number(q, "ack_timeout_s", "queue.ack_timeout_s", 0.0, 3600.0, 30.0, exclusive_lo=True),
    )


def _parse_reconnect(c: _Checker, top: Mapping[str, Any]) -> ReconnectConfig:
    r = c.mapping(c.get(top, "reconnect", "reconnect", {}), top, "reconnect", "reconnect") or {}
    c.unknown_keys(r, {"initial_s", "max_s"}, "reconnect.")
    initial = c.number(r, "initial_s", "reconnect.initial_s", 0.0, 3600.0, 1.0, exclusive_lo=True)
    cap = c.number(r, "max_s", "reconnect.max_s", 0.0, 86400.0, 60.0, exclusive_lo=True)
    if cap < initial:
        c.error(r, "max_s", "reconnect.max_s", f"expected >= reconnect.initial_s ({initial:g}), got {cap:g}")
    return ReconnectConfig(initial_s=initial, max_s=cap)


_METER_KEYS = {"code", "slave_id", "register", "data_type", "word_order", "scale", "unit", "kind", "function", "tipo"}


def _parse_meters(c: _Checker, top: Mapping[str, Any]) -> tuple[MeterConfig, ...]:
    raw = c.get(top, "meters", "meters")
    if raw is _MISSING:
        return ()
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_METERS:
        got = f"{len(raw)} meters" if isinstance(raw, list) else _show(raw)
        c.error(top, "meters", "meters", f"expected a list of 1..{MAX_METERS} meters, got {got}")
        return ()
    meters: list[MeterConfig] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        p = f"meters[{i}]"
        m = c.mapping(item, raw, i, p)
        if m is None:
            continue
        c.unknown_keys(m, _METER_KEYS, f"{p}.")
        code = c.string(m, "code", f"{p}.code")
        if code and not _DEVICE_CODE_RE.fullmatch(code):
            c.error(m, "code", f"{p}.code", f"expected 1-32 characters of A-Z a-z 0-9 _ . -, got {code!r}")
        elif code in seen:
            c.error(m, "code", f"{p}.code", f"duplicate code {code!r} (also meters[{seen[code]}])")
        elif code:
            seen[code] = i
        unit = c.string(m, "unit", f"{p}.unit")
        if unit and unit not in KNOWN_UNITS:
            c.error(m, "unit", f"{p}.unit", f"expected one of {', '.join(sorted(KNOWN_UNITS))}, got {unit!r}")
        kind = c.choice(m, "kind", f"{p}.kind", tuple(KIND_TO_TIPO), "other")
        tipo = c.string(m, "tipo", f"{p}.tipo", KIND_TO_TIPO[kind])
        meters.append(MeterConfig(
            code=code,
            slave_id=c.integer(m, "slave_id", f"{p}.slave_id", 1, 247),
            register=c.integer(m, "register", f"{p}.register", 0, 65535),
            data_type=c.choice(m, "data_type", f"{p}.data_type", DATA_TYPES, "uint16"),
            word_order=c.choice(m, "word_order", f"{p}.word_order", WORD_ORDERS, "big"),
            scale=_scale(c, m, p),
            unit=unit,
            kind=kind,
            function=c.choice(m, "function", f"{p}.function", ("holding", "input"), "holding"),
            tipo=tipo,
        ))
    return tuple(meters)


def _scale(c: _Checker, m: Mapping[str, Any], p: str) -> float:
    v = c.get(m, "scale", f"{p}.scale", 1.0)
    if type(v) not in (int, float) or not math.isfinite(v) or v == 0:
        c.error(m, "scale", f"{p}.scale", f"expected a finite non-zero number, got {_show(v)}")
        return 1.0
    return float(v)


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a YAML config file. Raises ConfigError (one line per problem, ``file:line``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text: {exc.reason}"]) from None
    try:
        doc = load_located(text)
    except YamlSyntaxError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise ConfigError([f"{where}: invalid YAML: {exc}"]) from None
    return parse_config(doc, source=str(path), base_dir=p.parent)
