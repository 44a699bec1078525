"""Measure bank throughput: ``python -m simulators.bench --transport tcp --banks 1 --seconds 3``.

Each bank gets ``--slaves`` energy meters and one async pymodbus client polling them round-robin (one register,
the seed encoding), all in one event loop; prints reads/s over the run. ``--transport inproc`` skips the network
(``ModbusBank.request``) to show the model + accounting cost alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from datetime import timedelta

from .clock import ScaledClock
from .meters import DEFAULT_ORIGIN
from .modbus_bank import ModbusBank
from .pty_bridge import PtyPair
from .testing import energy_meters, rtu_client, tcp_client


async def _run(transport: str, banks: int, slaves: int, seconds: float) -> tuple[int, float]:
    stack = contextlib.AsyncExitStack()
    counts = [0] * banks
    deadline = 0.0

    async def poll(i: int, client, bank: ModbusBank) -> None:
        if client is not None:
            assert await client.connect(), "client could not connect"
        sid = 0
        try:
            while time.monotonic() < deadline:
                sid = sid % slaves + 1
                if client is None:
                    await bank.request(sid, 3, 0, 1)
                else:
                    rr = await client.read_holding_registers(0, count=1, device_id=sid)
                    if rr.isError():
                        raise RuntimeError(f"bank {i} slave {sid}: {rr}")
                counts[i] += 1
        finally:
            if client is not None:
                client.close()

    # a simulated day every 5 real minutes, starting near the meters' origin (values stay in uint16 range)
    clock = ScaledClock(DEFAULT_ORIGIN + timedelta(days=1), speed=288)
    async with stack:
        jobs = []
        for i in range(banks):
            bank = ModbusBank(f"bench{i}", clock=clock, log_size=0)
            for sid, meter in energy_meters(slaves, seed=i).items():
                bank.add_meter(sid, meter)
            stack.push_async_callback(bank.stop)
            if transport == "inproc":
                client = None
            elif transport in ("tcp", "rtu-tcp"):
                framer = "socket" if transport == "tcp" else "rtu"
                port = await bank.start_tcp(framer=framer)
                client = tcp_client(port, timeout=2, framer=framer)
            else:
                pair = await PtyPair().open()
                stack.callback(pair.close)
                await bank.start_serial(pair.device_a)
                client = rtu_client(pair.device_b, timeout=2)
            jobs.append((i, client, bank))
        start = time.monotonic()
        deadline = start + seconds
        await asyncio.gather(*(poll(*job) for job in jobs))
        elapsed = time.monotonic() - start
    return sum(counts), elapsed


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transport", choices=["tcp", "rtu-tcp", "rtu-pty", "inproc"], default="tcp")
    parser.add_argument("--banks", type=int, default=1)
    parser.add_argument("--slaves", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    reads, elapsed = asyncio.run(_run(args.transport, args.banks, args.slaves, args.seconds))
    print(
        f"{args.transport}: {args.banks} bank(s) x {args.slaves} slaves, {reads} reads in {elapsed:.2f}s "
        f"= {reads / elapsed:,.0f} reads/s"
    )


if __name__ == "__main__":
    main()
