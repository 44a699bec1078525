"""Run an anonymous amqtt 0.12 broker on 127.0.0.1 and a free port; print ``READY <port>`` once listening.

A separate process per test: an amqtt broker whose shutdown stalls cannot leak into the next test.
"""

from __future__ import annotations

import asyncio
import signal

from amqtt.broker import Broker


async def main() -> None:
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}},
                     "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}})
    await broker.start()
    port = broker._servers["default"].instance.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await asyncio.wait_for(broker.shutdown(), 5)


if __name__ == "__main__":
    asyncio.run(main())
