"""How many firmware instances one asyncio event loop sustains (a measurement, not a test).

Each gateway runs the real firmware with an in-memory flash, an in-process Modbus port served by a
simulators bank (``ModbusBank.request``: no sockets, as a large virtual fleet would) and its own real MQTT
connection (aiomqtt) to a private Mosquitto. Reports delivered messages/s against the offered rate,
event-loop lag and process CPU.

    python tests/firmware/bench_fleet.py --gateways 1000 --poll 5 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fw_testkit import MOSQUITTO, MemoryFlash, Mosquitto

from firmware.config import parse_config
from firmware.gateway import Firmware, Hardware
from firmware.hal import AiomqttTransport, SystemClock


class BankPort:
    """A ModbusPort answering from a simulators bank in-process (what a virtual gateway at scale needs)."""

    def __init__(self, bank: Any) -> None:
        self.bank = bank

    async def client(self) -> BankPort:
        return self

    def close(self) -> None:
        pass

    async def _read(self, fc: int, address: int, count: int, device_id: int) -> Any:
        from simulators import NoAnswer

        try:
            regs = await self.bank.request(device_id, fc, address, count)
        except NoAnswer as exc:
            raise TimeoutError(str(exc)) from None
        if not isinstance(regs, list):
            return SimpleNamespace(isError=lambda: True, exception_code=int(regs), registers=[])
        return SimpleNamespace(isError=lambda: False, registers=regs)

    def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Any:
        return self._read(3, address, count, device_id)

    def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Any:
        return self._read(4, address, count, device_id)


class FlatMeter:
    """A cheap meter model (the simulators' profile models cost ~0.5 ms a read: not what we measure here)."""

    kind, unit = "energy", "kWh"

    def __init__(self, code: str) -> None:
        self.code = code

    def value_at(self, at: Any) -> float:
        return 1000.0 + (at.timestamp() % 86400) / 100


async def run(n: int, poll: float, seconds: float, broker_port: int) -> dict[str, float]:
    from simulators import ModbusBank

    transport = AiomqttTransport(max_inflight=10)
    fws: list[Firmware] = []
    tasks = []
    for i in range(n):
        bank = ModbusBank(f"gw{i}", log_size=0)
        meters = []
        for s in (1, 2):
            bank.add_meter(s, FlatMeter(f"D{s:02d}"), data_type="uint32", scale=0.01)
            meters.append({"code": f"D{s:02d}", "slave_id": s, "register": 0, "data_type": "uint32",
                           "scale": 0.01, "unit": "kWh"})
        mac = f"02:00:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"
        cfg = parse_config({"mac": mac, "poll_interval_s": poll, "broker": {"url": f"mqtt://127.0.0.1:{broker_port}"},
                            "modbus": {"port": "/dev/null"}, "meters": meters,
                            "reconnect": {"initial_s": 1, "max_s": 10}}, check_files=False)

        async def reboot(reason: str) -> None:
            raise SystemExit(reason)

        hw = Hardware(clock=SystemClock(), flash=MemoryFlash(), modbus=BankPort(bank), network=transport,
                      reboot=reboot, rng=random.Random(i))
        fw = Firmware(cfg, hw)
        fws.append(fw)

    lags: list[float] = []

    async def probe() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.1)
            lags.append(time.perf_counter() - t - 0.1)

    probe_task = asyncio.create_task(probe())
    t0 = time.perf_counter()
    for i, fw in enumerate(fws):
        tasks.append(asyncio.create_task(fw.run()))
        if i % 50 == 49:
            await asyncio.sleep(0)  # stagger start-up a little
    # wait until all are online (or 60 s)
    deadline = time.perf_counter() + 60
    while sum(fw.connected.is_set() for fw in fws) < n and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
    online_s = time.perf_counter() - t0
    online = sum(fw.connected.is_set() for fw in fws)
    lags.clear()
    acked0 = sum(fw.counters().acked for fw in fws)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = time.perf_counter()
    await asyncio.sleep(seconds)
    wall = time.perf_counter() - w0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    acked = sum(fw.counters().acked for fw in fws) - acked0
    depth = sum(fw.counters().queue_depth for fw in fws)
    failures = sum(sum(fw.counters().meter_failures.values()) for fw in fws)
    probe_task.cancel()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, probe_task, return_exceptions=True)
    cpu = (cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime) / wall
    return {
        "gateways": n, "online": online, "online_after_s": round(online_s, 1), "offered_msg_s": round(n / poll, 1),
        "acked_msg_s": round(acked / wall, 1), "queue_depth_end": depth, "meter_failures": failures,
        "loop_lag_p50_ms": round(statistics.median(lags) * 1000, 1) if lags else 0.0,
        "loop_lag_max_ms": round(max(lags) * 1000, 1) if lags else 0.0, "cpu_cores": round(cpu, 2),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateways", type=int, default=500)
    ap.add_argument("--poll", type=float, default=5.0, help="poll interval, seconds")
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement window after all are online")
    args = ap.parse_args()
    if MOSQUITTO is None:
        sys.exit("needs the mosquitto binary: apt-get install mosquitto")
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as d:
        broker = Mosquitto(Path(d)).start()
        try:
            print(asyncio.run(run(args.gateways, args.poll, args.seconds, broker.port)))
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
