"""Topic rules (tds_core.broker.acl) and the Mosquitto files generated from them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tds_core.broker.acl import Acl, filter_within, split_shared, topic_matches
from tds_core.broker.mosquitto import MosquittoConfig, generate_acl, generate_config

A = "aa:bb:cc:dd:ee:01"
B = "aa:bb:cc:dd:ee:02"
ACL = Acl.build(["tds-consumer"], {A: ["GW-A"]})


@pytest.mark.parametrize(("topic", "pattern", "expected"), [
    ("a/b/c", "a/+/c", True), ("a/b/c", "a/#", True), ("a", "a/#", True), ("a/b", "a/+/c", False),
    ("a/b/c/d", "a/+/c", False), ("$SYS/x", "#", False), ("$SYS/x", "$SYS/#", True),
])
def test_topic_matches(topic: str, pattern: str, expected: bool) -> None:
    assert topic_matches(topic, pattern) is expected


@pytest.mark.parametrize(("flt", "pattern", "expected"), [
    ("tds_new/devices/x/commands/#", "tds_new/devices/x/commands/#", True),
    ("tds_new/devices/x/commands/config", "tds_new/devices/x/commands/#", True),
    ("tds_new/devices/x/commands/+", "tds_new/devices/x/commands/#", True),
    ("tds_new/devices/+/commands/#", "tds_new/devices/x/commands/#", False),
    ("#", "tds_new/devices/x/commands/#", False),
    ("tds_new/#", "tds_new/devices/x/commands/#", False),
    ("tds_new/devices/x/#", "tds_new/devices/x/commands/#", False),
    ("tds_new/devices/+/telemetry", "tds_new/devices/+/telemetry", True),
    ("tds_new/devices/x/telemetry", "tds_new/devices/+/telemetry", True),
    ("tds_new/devices/#", "tds_new/devices/+/telemetry", False),
])
def test_filter_within(flt: str, pattern: str, expected: bool) -> None:
    assert filter_within(flt, pattern) is expected


level = st.sampled_from(["a", "b", "tds_new", "x"])
flt_level = st.sampled_from(["a", "b", "tds_new", "x", "+"])


@given(flt=st.lists(flt_level, min_size=1, max_size=4).map("/".join),
       pattern=st.lists(flt_level, min_size=1, max_size=4).map("/".join),
       hash_f=st.booleans(), hash_p=st.booleans(),
       topic=st.lists(level, min_size=1, max_size=6).map("/".join))
def test_filter_within_is_sound(flt: str, pattern: str, hash_f: bool, hash_p: bool, topic: str) -> None:
    """Whatever a permitted filter matches, the pattern matches too (no leak through wildcards)."""
    flt = flt + "/#" if hash_f else flt
    pattern = pattern + "/#" if hash_p else pattern
    if filter_within(flt, pattern) and topic_matches(topic, flt):
        assert topic_matches(topic, pattern)


def test_split_shared() -> None:
    assert split_shared("$share/g/a/+") == ("g", "a/+")
    assert split_shared("a/b") == (None, "a/b")
    assert split_shared("$share/g") == (None, "$share/g")


def test_device_rules() -> None:
    assert ACL.can_publish(A, f"tds_new/devices/{A}/telemetry")
    assert ACL.can_publish(A, f"tds_new/devices/{A}/status")
    assert ACL.can_publish(A, "telemetry/GW-A/D01/data")
    assert not ACL.can_publish(A, "telemetry/GW-B/D01/data")
    assert not ACL.can_publish(A, f"tds_new/devices/{B}/telemetry")
    assert not ACL.can_publish(A, f"tds_new/devices/{A}/commands/config")
    assert ACL.can_subscribe(A, f"tds_new/devices/{A}/commands/#")
    assert not ACL.can_subscribe(A, "#")
    assert not ACL.can_subscribe(A, "$share/ingest/tds_new/devices/+/telemetry")
    assert ACL.can_receive(A, f"tds_new/devices/{A}/commands/ota")
    assert not ACL.can_receive(A, f"tds_new/devices/{B}/commands/ota")
    assert not ACL.can_publish("a/+", "a/+/telemetry")  # a username with wildcards gets nothing


def test_consumer_rules() -> None:
    assert ACL.can_subscribe("tds-consumer", "$share/ingest/tds_new/devices/+/telemetry")
    assert ACL.can_subscribe("tds-consumer", "telemetry/+/+/data")
    assert ACL.can_receive("tds-consumer", f"tds_new/devices/{B}/status")
    assert ACL.can_publish("tds-consumer", f"tds_new/devices/{B}/commands/reboot")
    assert not ACL.can_publish("tds-consumer", f"tds_new/devices/{B}/telemetry")
    assert not ACL.can_publish("tds-consumer", "telemetry/GW-A/D01/data")


def test_bad_names_rejected_with_field() -> None:
    with pytest.raises(ValueError, match="consumer_cns"):
        Acl.build(["a/b"])
    with pytest.raises(ValueError, match="legacy_gateways"):
        Acl.build([], {A: ["GW/+"]})


def test_generated_acl_has_seed_rules() -> None:
    text = generate_acl(["tds-consumer"], [(A, "GW-A")])
    lines = set(text.splitlines())
    assert {"pattern write tds_new/devices/%u/telemetry", "pattern write tds_new/devices/%u/status",
            "pattern read tds_new/devices/%u/commands/#", "user tds-consumer",
            "topic read tds_new/devices/+/telemetry", "topic read $share/+/tds_new/devices/+/telemetry",
            "topic write tds_new/devices/+/commands/#", f"user {A}", "topic write telemetry/GW-A/+/data",
            } <= lines
    assert "topic write tds_new/devices/+/telemetry" not in lines


def test_generated_config_has_tls_only_listener(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = MosquittoConfig(cafile=tmp_path / "ca.crt", certfile=tmp_path / "b.crt", keyfile=tmp_path / "b.key",
                          crlfile=tmp_path / "crl.pem", acl_file=tmp_path / "acl.conf", port=8883,
                          persistence_dir=tmp_path / "data")
    lines = generate_config(cfg).splitlines()
    for needed in ("listener 8883 127.0.0.1", "require_certificate true", "use_identity_as_username true",
                   "use_username_as_clientid true", f"crlfile {tmp_path / 'crl.pem'}", "persistence true",
                   "max_inflight_messages 1000", "max_queued_messages 1000000", "allow_anonymous false"):
        assert needed in lines
    assert sum(1 for line in lines if line.startswith("listener ")) == 1
    with pytest.raises(ValueError, match="port"):
        MosquittoConfig(cafile=tmp_path, certfile=tmp_path, keyfile=tmp_path, crlfile=tmp_path,
                        acl_file=tmp_path, port=0)
