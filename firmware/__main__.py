"""``python -m firmware --config gateway.yaml``: run the firmware on real hardware.

Exits 2 with a one-line reason on a bad config. SIGTERM/SIGINT: say "offline", disconnect, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sys
from urllib.parse import urlsplit

from .config import ConfigError, GatewayConfig, load_config
from .gateway import Firmware, Hardware
from .hal import AiomqttTransport, FileFlash, ModbusPort, SerialModbusPort, SystemClock, TcpModbusPort, soft_reboot


def build_port(cfg: GatewayConfig) -> ModbusPort:
    """The real Modbus port named by ``modbus.port`` (a serial device or ``tcp://host:port``)."""
    m = cfg.modbus
    if m.port.startswith("tcp://"):
        u = urlsplit(m.port)
        return TcpModbusPort(u.hostname or "", u.port or 502, framer=m.framer, timeout_s=m.timeout_s)
    return SerialModbusPort(m.port, baudrate=m.baudrate, bytesize=m.bytesize, parity=m.parity,
                            stopbits=m.stopbits, timeout_s=m.timeout_s)


async def _amain(cfg: GatewayConfig) -> int:
    stopping = False

    async def reboot(reason: str) -> None:
        if stopping:
            raise SystemExit(0)
        await soft_reboot(reason)

    hw = Hardware(clock=SystemClock(), flash=FileFlash(cfg.storage_dir), modbus=build_port(cfg),
                  network=AiomqttTransport(max_inflight=cfg.queue.inflight), reboot=reboot, rng=random.Random())
    fw = Firmware(cfg, hw)

    def stop() -> None:
        nonlocal stopping
        stopping = True
        fw.request_reboot("signal")

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        await fw.run()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, validate the config, run."""
    ap = argparse.ArgumentParser(prog="python -m firmware", description="TDS gateway firmware")
    ap.add_argument("--config", required=True, help="gateway YAML config")
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"firmware: bad config: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return asyncio.run(_amain(cfg))


if __name__ == "__main__":
    sys.exit(main())
