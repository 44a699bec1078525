"""The fleet engine against the embedded broker: real time, virtual time, outages, power loss, Modbus faults.

What the subscriber receives is decoded with ``tds_core.protocol.decode`` and compared with the fleet's own
accounting (which parses independently): both sides must agree.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from fleet_testkit import Subscriber, make_specs, past_start

from firmware.hal import TransportError
from simulators.fleet import Fleet
from tds_core.protocol import decode, status_topic

pytestmark = pytest.mark.timeout(120)


def _rows(sub: Subscriber) -> list[tuple[str, str, datetime, float]]:
    """(mac or gateway code, device, timestamp, value) of every telemetry reading received, in arrival order."""
    out = []
    for topic, payload in sub.telemetry():
        tel = decode(topic, payload)
        who = tel.gateway_mac or tel.gateway_code
        out.extend((who, r.device_code, tel.timestamp, r.value) for r in tel.readings)
    return out


def _mac_of(fleet: Fleet) -> dict[str, str]:
    """Gateway code -> MAC (legacy messages carry the code)."""
    return {gw.spec.code: gw.mac for gw in fleet.gateways.values()}


def _received_rows(fleet: Fleet, sub: Subscriber) -> list[tuple[str, str, datetime]]:
    codes = _mac_of(fleet)
    return [(codes.get(who, who), dev, ts) for who, dev, ts, _ in _rows(sub)]


def test_real_time_fleet_publishes_decodable_messages(broker, subscriber):
    async def scenario() -> Fleet:
        specs = make_specs(2, 2, legacy_every=2, poll_interval_s=0.5, prefix="aa:bb:cc:10")
        fleet = Fleet(specs, broker_url=broker.url, clock="real", start=datetime.now(UTC))
        await fleet.start()
        await fleet.run_until(fleet.now() + timedelta(seconds=1.6))
        assert await fleet.drain(10)
        await fleet.stop()
        return fleet

    fleet = asyncio.run(scenario())
    acked = sum(fleet.accounting.acked.values())
    subscriber.wait_for(lambda: len(subscriber.telemetry()) >= acked, f"{acked} telemetry messages")
    rows = _received_rows(fleet, subscriber)
    assert {(m, d) for m, d, _ in rows} == {(gw.mac, c) for gw in fleet.gateways.values() for c in ("D01", "D02")}
    assert set(rows) == fleet.accounting.expected_rows()
    assert acked >= 4  # both gateways polled at least twice (polls at 0, 0.5, 1.0, 1.5 s)
    statuses = [(t, p) for t, p, _ in subscriber.snapshot() if t.endswith("/status")]
    for gw in fleet.gateways.values():  # said online, then offline on the clean stop
        assert [p for t, p in statuses if t == status_topic(gw.mac)][-2:] == [b"online", b"offline"]


def test_virtual_two_hours_on_the_grid_and_accounted(broker, subscriber):
    hours = 2
    start = past_start(timedelta(hours=hours))

    async def scenario() -> Fleet:
        fleet = Fleet(make_specs(5, 3, legacy_every=5, prefix="aa:bb:cc:20"), broker_url=broker.url,
                      clock="virtual", start=start)
        await fleet.start()
        await fleet.run_until(start + timedelta(hours=hours))
        assert fleet.now() == start + timedelta(hours=hours)
        assert await fleet.drain(30)
        await fleet.stop()
        return fleet

    fleet = asyncio.run(scenario())
    acc = fleet.accounting
    grid = {start + timedelta(minutes=5 * i) for i in range(hours * 12 + 1)}
    expected = acc.expected_rows()
    assert len(expected) == 5 * 3 * len(grid)  # every poll of every meter, including the one at the end
    assert {ts for _, _, ts in expected} == grid
    subscriber.wait_for(lambda: len(_rows(subscriber)) >= len(expected), f"{len(expected)} readings")
    received = _received_rows(fleet, subscriber)
    assert len(received) == len(set(received)) == len(expected)
    assert set(received) == expected
    # what the meters served equals what was published, value for value (independent of the decoder)
    values = {(m, d, ts): v for m, d, ts, v in ((_mac_of(fleet).get(w, w), d, ts, v)
                                                for w, d, ts, v in _rows(subscriber))}
    for (mac, code), served in acc.produced.items():
        assert len(served) == len(grid)
        for at, value in served:
            assert values[(mac, code, at)] == pytest.approx(value, abs=1e-9)
    snap = acc.snapshot()
    assert snap["dropped"] == snap["failed_polls"] == snap["unparseable"] == 0
    assert snap["published"] == snap["acked"] == 4 * len(grid) + 3 * len(grid)  # 4 v1 gw, 1 legacy (3 msgs)


def test_network_down_then_replay_in_order_with_original_timestamps(broker, subscriber):
    start = past_start(timedelta(hours=2))
    specs = make_specs(2, 2, prefix="aa:bb:cc:30")
    cut = specs[0].mac

    async def scenario() -> Fleet:
        fleet = Fleet(specs, broker_url=broker.url, clock="virtual", start=start,
                      config_extra={"reconnect": {"initial_s": 1, "max_s": 30}})
        await fleet.start()
        await fleet.run_until(start + timedelta(minutes=32))
        fleet.network_down([cut], until=start + timedelta(minutes=62))
        await fleet.run_until(start + timedelta(minutes=61))
        assert fleet.gateway(cut).queue_depth() == 6  # polls at 35..60 wait on flash
        await fleet.run_until(start + timedelta(hours=2))
        assert await fleet.drain(30)
        await fleet.stop()
        return fleet

    fleet = asyncio.run(scenario())
    acc = fleet.accounting
    subscriber.wait_for(lambda: len(_rows(subscriber)) >= acc.expected_count(), "all readings")
    grid = [start + timedelta(minutes=5 * i) for i in range(25)]
    for mac in (cut, specs[1].mac):
        stamps = [ts for m, d, ts in _received_rows(fleet, subscriber) if m == mac and d == "D01"]
        assert stamps == grid, f"{mac}: every reading once, in order, with its poll's timestamp"
        assert acc.acked_order(mac) == grid
    # the cut was a dead link, not a clean disconnect: the broker published the LWT
    status = [p for t, p, _ in subscriber.snapshot() if t == status_topic(cut)]
    assert status[:3] == [b"online", b"offline", b"online"]
    assert fleet.gateway(cut).transport.cuts == 1 and fleet.gateway(cut).transport.refused >= 1


def test_power_loss_loses_only_the_unsynced_tail_and_counts_it(broker, subscriber):
    start = past_start(timedelta(hours=2))
    specs = make_specs(1, 2, prefix="aa:bb:cc:40")
    mac = specs[0].mac

    async def scenario() -> Fleet:
        fleet = Fleet(specs, broker_url=broker.url, clock="virtual", start=start, flash_write_s=0.01)
        await fleet.start()
        fleet.network_down([mac], until=start + timedelta(minutes=40))
        # the poll at 20 min has started its flash write (takes 0.01 s) when the power goes
        await fleet.run_until(start + timedelta(minutes=20, seconds=0.005))
        assert fleet.gateway(mac).queue_depth() == 5  # 0, 5, 10, 15 stored + 20 being written
        fleet.power_loss([mac], until=start + timedelta(minutes=30))
        await fleet.run_until(start + timedelta(minutes=29))
        assert fleet.gateway(mac).queue_depth() == 4  # the synced queue survived, the tail did not
        await fleet.run_until(start + timedelta(hours=1))
        assert await fleet.drain(30)
        await fleet.stop()
        return fleet

    fleet = asyncio.run(scenario())
    acc = fleet.accounting
    assert acc.lost_on_power_loss == {mac: 1} and acc.dropped == {mac: 1}
    assert fleet.gateway(mac).boots == 2
    subscriber.wait_for(lambda: len(_rows(subscriber)) >= acc.expected_count(), "all readings")
    stamps = sorted({ts for m, _, ts in _received_rows(fleet, subscriber) if m == mac})
    lost = start + timedelta(minutes=20)
    off = {start + timedelta(minutes=25)}  # powered off: no poll at 25
    assert stamps == [start + timedelta(minutes=5 * i) for i in range(13)
                      if start + timedelta(minutes=5 * i) not in off | {lost}]
    # the meters served the lost poll: the harness knows a reading is missing, whatever the core says
    assert lost in {at for at, _ in acc.produced[(mac, "D01")]}
    assert (mac, "D01", lost) not in acc.expected_rows()


def test_modbus_no_reply_fails_polls_and_publishes_no_zero(broker, subscriber):
    start = past_start(timedelta(hours=2))
    specs = make_specs(1, 3, prefix="aa:bb:cc:50")
    mac = specs[0].mac

    async def scenario() -> Fleet:
        fleet = Fleet(specs, broker_url=broker.url, clock="virtual", start=start)
        await fleet.start()
        await fleet.run_until(start + timedelta(minutes=12))
        fleet.modbus_fault(mac, 2, "no_reply", until=start + timedelta(minutes=27))
        fleet.modbus_fault(mac, 3, "exception", until=start + timedelta(minutes=17), code=4)
        await fleet.run_until(start + timedelta(minutes=60))
        assert await fleet.drain(30)
        await fleet.stop()
        return fleet

    fleet = asyncio.run(scenario())
    acc = fleet.accounting
    # D02 silent for the polls at 15, 20, 25; D03 answering exception 4 at 15
    assert acc.failed_polls == {(mac, "D02"): 3, (mac, "D03"): 1}
    assert acc.failed_attempts == {(mac, 2): 9, (mac, 3): 3}  # 3 attempts each
    subscriber.wait_for(lambda: len(_rows(subscriber)) >= acc.expected_count(), "all readings")
    rows = _rows(subscriber)
    d02 = {ts for _, d, ts, _ in rows if d == "D02"}
    silent = {start + timedelta(minutes=m) for m in (15, 20, 25)}
    assert not d02 & silent and len(d02) == 13 - 3
    assert all(v > 0 for _, _, _, v in rows)  # never a zero for a failed read
    assert {ts for _, d, ts, _ in rows if d == "D01"} >= silent  # the healthy meter is still published
    # retries ran on the gateway clock: the messages of the failed polls still carry the poll's time
    assert {ts for _, d, ts, _ in rows if d == "D01"} == {start + timedelta(minutes=5 * i) for i in range(13)}


def test_clock_drift_shows_against_the_meters_true_time(broker):
    start = past_start(timedelta(hours=2))
    specs = make_specs(1, 1, prefix="aa:bb:cc:60")
    mac = specs[0].mac

    async def scenario() -> Fleet:
        fleet = Fleet(specs, broker_url=broker.url, clock="virtual", start=start)
        await fleet.start()
        await fleet.run_until(start + timedelta(minutes=1))
        fleet.clock_drift([mac], 1000)  # 1000 ppm fast from minute 1
        await fleet.run_until(start + timedelta(minutes=31))
        assert await fleet.drain(30)
        await fleet.stop()
        return fleet

    acc = asyncio.run(scenario()).accounting
    stamped = [ts for ts, _ in acc.acked_readings(mac, "D01")]
    served = [at for at, _ in acc.produced[(mac, "D01")]]
    # the gateway still stamps its own 5-minute grid ...
    assert stamped == [start + timedelta(minutes=5 * i) for i in range(len(stamped))]
    assert len(stamped) == 7
    # ... but it polls early in true time: 1000 ppm of the time since the drift began
    for ts, at in zip(stamped[1:], served[1:], strict=True):
        lead = (ts - at).total_seconds()
        assert lead == pytest.approx((ts - start).total_seconds() - 60 - ((ts - start).total_seconds() - 60) / 1.001,
                                     abs=1e-3)


def test_publish_raw_uses_the_gateways_identity(broker, subscriber):
    start = past_start(timedelta(hours=2))
    specs = make_specs(1, 1, prefix="aa:bb:cc:70")
    mac = specs[0].mac
    topic = f"tds_new/devices/{mac}/telemetry"

    async def scenario() -> tuple[Fleet, list[str]]:
        fleet = Fleet(specs, broker_url=broker.url, clock="virtual", start=start)
        await fleet.start()
        await fleet.run_until(start + timedelta(minutes=1))
        how = [await fleet.gateway(mac).publish_raw(topic, b"{not json")]  # on the firmware's connection
        fleet.power_loss([mac])  # stays off: no live connection, the identity is used on a separate one
        await fleet.run_until(start + timedelta(minutes=2))
        how.append(await fleet.gateway(mac).publish_raw(topic, b"\xff\xfe"))
        fleet.network_down([mac])
        with pytest.raises(TransportError, match="network is down"):
            await fleet.publish_raw(mac, topic, b"never")
        fleet.network_up([mac])
        fleet.power_on([mac])
        await fleet.run_until(start + timedelta(minutes=6))
        assert await fleet.drain(30)
        await fleet.stop()
        return fleet, how

    fleet, how = asyncio.run(scenario())
    assert how == ["live", "separate"]
    assert fleet.accounting.raw_published == {mac: 2}
    subscriber.wait_for(lambda: len([p for t, p in subscriber.telemetry() if t == topic]) >= 4, "4 messages")
    payloads = [p for t, p in subscriber.telemetry() if t == topic]
    assert b"{not json" in payloads and b"\xff\xfe" in payloads and b"never" not in payloads
    # the injections are not readings: accounting counts 2 polls (0 and 5 min; off at 2, booted at 2)
    assert fleet.accounting.published[mac] == fleet.accounting.acked[mac]


def test_drain_reports_a_gateway_that_cannot_deliver_and_stops_at_its_horizon(broker):
    start = past_start(timedelta(hours=3))
    specs = make_specs(2, 1, prefix="aa:bb:cc:80")
    dead = specs[0].mac

    async def scenario() -> tuple[bool, datetime, dict[str, int]]:
        fleet = Fleet(specs, broker_url=broker.url, clock="virtual", start=start)
        await fleet.start()
        fleet.network_down([dead])  # never comes back
        await fleet.run_until(start + timedelta(minutes=10))
        drained = await fleet.drain(20, horizon_s=900)
        now, depths = fleet.now(), fleet.queue_depths()
        await fleet.stop()
        return drained, now, depths

    drained, now, depths = asyncio.run(scenario())
    assert not drained
    assert now == start + timedelta(minutes=25)  # simulated time stopped at the horizon, not days later
    assert depths[dead] == 6  # polls at 0..25 min, all still on flash (the other may hold its 25-min poll)
