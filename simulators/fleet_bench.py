"""Measure the virtual-time fleet: ``python -m simulators.fleet_bench --gateways 50 --meters 8 --hours 24``.

Starts the embedded broker (``tds_core.stack.BrokerProcess``, plain mode) and, unless ``--no-subscriber``, a
paho subscriber in its own thread counting telemetry (the broker then forwards every message, as it would
to the consumer). Prints simulated gateway-polls and messages per wall second and this process' CPU time,
then a linear estimate for ``--estimate-gateways`` × ``--estimate-days`` (month-of-fleet: 200 × 30).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta

from .fleet import Fleet, GatewaySpec, MeterSpec


def bench_specs(gateways: int, meters: int) -> list[GatewaySpec]:
    """``gateways`` v1 gateways with ``meters`` uint32 kWh meters each."""
    out = []
    for g in range(gateways):
        ms = tuple(MeterSpec(f"D{i + 1:02d}", i + 1, 0, "uint32", 0.01, "kWh", "energy", {"base_kw": 1.0 + i})
                   for i in range(meters))
        out.append(GatewaySpec(f"02:00:00:00:{g // 256:02x}:{g % 256:02x}", f"GW-B{g:05d}", "bench", "v1", ms))
    return out


class _Counter:
    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.n = 0
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-bench-counter")
        self.client.on_connect = lambda c, *a: c.subscribe("tds_new/+/+/telemetry", qos=1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("bench subscriber: no SUBACK")

    def _on_message(self, *args: object) -> None:
        self.n += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def run(gateways: int, meters: int, hours: float, subscribe: bool) -> dict:
    """One measured run; returns the numbers."""
    from tds_core.stack import BrokerProcess

    broker = BrokerProcess("127.0.0.1", 0)
    broker.start()
    counter = _Counter(broker.port or 0) if subscribe else None
    try:
        t = datetime.now(UTC) - timedelta(hours=hours, minutes=10)
        start = t.replace(minute=t.minute - t.minute % 5, second=0, microsecond=0)
        fleet = Fleet(bench_specs(gateways, meters), broker_url=broker.url, clock="virtual", start=start)
        await fleet.start()
        w0, c0 = time.monotonic(), time.process_time()
        await fleet.run_until(start + timedelta(hours=hours))
        drained = await fleet.drain(60)
        wall, cpu = time.monotonic() - w0, time.process_time() - c0
        stats = fleet.stats()
        await fleet.stop()
        acc = fleet.accounting.snapshot()
        acc.pop("per_gateway")
        polls = stats["polls"]
        out = {
            "gateways": gateways, "meters": meters, "simulated_hours": hours, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "polls": polls, "gateway_polls_per_s": round(polls / wall, 1),
            "messages_per_s": round(acc["acked"] / wall, 1), "readings_per_s": round(acc["expected_rows"] / wall, 1),
            "modbus_reads_per_s": round(stats["modbus_requests"] / wall, 1), "drained": drained,
            "engine": {k: stats[k] for k in ("calendar_steps", "wakeups", "quiescences")}, "accounting": acc,
        }
        if counter is not None:
            out["subscriber_received"] = counter.n
        return out
    finally:
        if counter is not None:
            counter.close()
        broker.stop()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateways", type=int, default=50)
    ap.add_argument("--meters", type=int, default=8)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--no-subscriber", action="store_true")
    ap.add_argument("--estimate-gateways", type=int, default=200)
    ap.add_argument("--estimate-days", type=float, default=30.0)
    args = ap.parse_args(argv)
    res = asyncio.run(run(args.gateways, args.meters, args.hours, not args.no_subscriber))
    target_polls = args.estimate_gateways * args.estimate_days * 24 * 3600 / 300
    res["estimate"] = {
        "gateways": args.estimate_gateways, "days": args.estimate_days, "polls": int(target_polls),
        "wall_s_at_measured_rate": round(target_polls / res["gateway_polls_per_s"]),
    }
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
