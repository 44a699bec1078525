"""Stable rejection reason codes and the :class:`Rejection` exception raised by the decoder."""

from __future__ import annotations

import json
from enum import StrEnum

__all__ = ["Reason", "Rejection", "show"]

# Longest piece of an offending value quoted in a detail message (keeps dead-letter rows small).
MAX_SHOWN_CHARS = 60


class Reason(StrEnum):
    """Stable reason codes. The *values* are stored (dead_letters.reason, metrics labels): never rename them."""

    # decode: envelope
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    # decode: fields
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_NO_ZONE = "timestamp_no_zone"
    CLOCK_SKEW = "clock_skew"
    NO_READINGS = "no_readings"
    TOO_MANY_READINGS = "too_many_readings"
    DUPLICATE_DEVICE = "duplicate_device"
    MAC_MISMATCH = "mac_mismatch"
    BAD_MAC = "bad_mac"
    BAD_DEVICE_CODE = "bad_device_code"
    UNKNOWN_UNIT = "unknown_unit"
    BAD_TOPIC = "bad_topic"
    GATEWAY_MISMATCH = "gateway_mismatch"  # legacy: topic gateway code != payload gateway_code
    DEVICE_MISMATCH = "device_mismatch"  # legacy: topic device code != payload device_code
    # ingest (registry checks); defined here so every stored code lives in one enum
    UNKNOWN_GATEWAY = "unknown_gateway"
    UNKNOWN_DEVICE = "unknown_device"
    UNIT_MISMATCH = "unit_mismatch"
    GATEWAY_REVOKED = "gateway_revoked"
    IDENTITY_MISMATCH = "identity_mismatch"


def _safe_text(text: str) -> str:
    """Make text storable anywhere (PostgreSQL text refuses NUL and lone surrogates)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


_JSON_TYPE_NAMES = {str: "string", bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}


def show(value: object) -> str:
    """Render an offending value for a detail message: JSON-ish, truncated, with its JSON type name.

    Never raises (deeply nested values, odd objects): it runs on the rejection path of ``decode``.
    """
    if value is None:
        return "null"
    kind = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
    try:
        if isinstance(value, str):
            shown = value if len(value) <= MAX_SHOWN_CHARS else value[:MAX_SHOWN_CHARS] + "…"
            text = json.dumps(shown, ensure_ascii=False)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)  # ints past Python's 4300-digit str limit raise ValueError: handled below
            if len(text) > MAX_SHOWN_CHARS:
                text = f"{text[:MAX_SHOWN_CHARS]}… ({len(text)} digits)"
        else:
            text = json.dumps(value, ensure_ascii=False, default=repr)
            if len(text) > MAX_SHOWN_CHARS:
                text = text[:MAX_SHOWN_CHARS] + "…"
    except (RecursionError, ValueError, TypeError):
        text = "<deeply nested>" if isinstance(value, (list, dict)) else "<too large to print>"
    return f"{_safe_text(text)} ({kind})"


class Rejection(Exception):
    """A message the protocol refuses. ``reason`` is a stable :class:`Reason`; ``detail`` is for humans.

    ``detail`` names the field path, the offending value and what was expected, e.g.
    ``leituras[2].valor: expected a finite number, got "12.5" (string)``.
    """

    __slots__ = ("detail", "reason")

    def __init__(self, reason: Reason, detail: str) -> None:
        detail = _safe_text(detail)
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # picklable across processes (multiprocessing workers, pytest-xdist)
        return (type(self), (self.reason, self.detail))
