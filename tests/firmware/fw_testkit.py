"""Helpers for the firmware tests: a fast clock, an in-memory flash, config files, a Mosquitto broker,
and a cuttable TCP path between a gateway and its broker (the "network down" switch).

Imported as a top-level module (pytest puts this directory on sys.path); fixtures are in conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


class FastClock:
    """Real wall time for timestamps (the decoder bounds future skew), everything else ``speed`` x faster.

    Timeouts shrink too: keep ``timeout / speed`` well above real round trips on a loaded machine.

    Records every sleep so tests can check the retry schedule in clock seconds.
    """

    def __init__(self, speed: float = 10.0) -> None:
        self.speed = speed
        self.sleeps: list[float] = []
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class MemoryFlash:
    """In-memory Flash. The object survives a simulated reboot; ``power_loss()`` drops writes in progress."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.writes = 0

    async def read(self, name: str) -> bytes | None:
        return self.files.get(name)

    async def write(self, name: str, data: bytes) -> None:
        await asyncio.sleep(0)  # a suspension point, as on real storage
        self.files[name] = bytes(data)
        self.writes += 1

    async def delete(self, name: str) -> None:
        self.files.pop(name, None)

    async def list(self, prefix: str) -> list[str]:
        return sorted(n for n in self.files if n.startswith(prefix))


def free_port() -> int:
    """A port free right now on 127.0.0.1 (for servers that cannot bind port 0 and report it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:port (the readiness signal)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


class Mosquitto:
    """A private Mosquitto on 127.0.0.1: a plain anonymous listener (``port``) and, with ``tls`` (paths of
    ca, cert, key), a second listener (``tls_port``) that requires a client certificate (CN = username)."""

    def __init__(self, workdir: Path, tls: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.tls = tls
        self.tls_port = free_port() if tls else 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        conf = self.workdir / "mosquitto.conf"
        # as root, mosquitto drops to the "mosquitto" user, which cannot read pytest's 0700 tmp dirs
        lines = ["user root"] if os.geteuid() == 0 else []
        lines += ["per_listener_settings true", "persistence false", "log_dest stderr", "log_type error",
                 f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        if self.tls:
            lines += [f"listener {self.tls_port} 127.0.0.1", "allow_anonymous false",
                      f"cafile {self.tls['ca']}", f"certfile {self.tls['cert']}", f"keyfile {self.tls['key']}",
                      "require_certificate true", "use_identity_as_username true"]
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        wait_listening(self.port, proc=self.proc)
        if self.tls:
            wait_listening(self.tls_port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


class AmqttBroker:
    """amqtt 0.12 (anonymous, plain TCP) in its own process (``amqtt_runner.py``), ready when it prints its port.

    With the anonymous plugin sessions are not persistent (FIELD-NOTES): fine, the collectors stay connected.
    """

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> AmqttBroker:
        import sys

        runner = Path(__file__).with_name("amqtt_runner.py")
        self.proc = subprocess.Popen([sys.executable, str(runner)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the readiness signal (blocks until printed or the process dies)
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"amqtt broker did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Collector:
    """An aiomqtt subscriber that records (topic, payload, retain) and lets a test wait for a condition."""

    def __init__(self, port: int, *topics: str) -> None:
        self.port = port
        self.topics = topics or ("#",)
        self.messages: list[tuple[str, bytes, bool]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._client: Any = None

    async def __aenter__(self) -> Collector:
        import aiomqtt

        self._client = aiomqtt.Client("127.0.0.1", self.port, identifier=f"test-collector-{id(self)}")
        await self._client.__aenter__()
        for t in self.topics:
            await self._client.subscribe(t, qos=1)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async for m in self._client.messages:
            self.messages.append((str(m.topic), bytes(m.payload), bool(m.retain)))
            self._changed.set()

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        with contextlib.suppress(Exception):
            await self._client.__aexit__(None, None, None)

    def on(self, topic: str) -> list[bytes]:
        """Payloads received on ``topic`` (exact), in arrival order."""
        return [p for t, p, _ in self.messages if t == topic]

    async def wait_for(self, predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
        """Wait until ``predicate()`` is true (re-checked on every message and every 20 ms)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {len(self.messages)} messages")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.02)


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 that can cut every connection and refuse new ones (a network outage)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = True
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def start(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        """Network down: drop every connection (no MQTT DISCONNECT) and refuse new ones."""
        self.up = False
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        """Network up again."""
        self.up = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def write_config(path: Path, **overrides: Any) -> Path:
    """Write a gateway YAML config with fast test defaults; ``overrides`` replace top-level keys."""
    doc: dict[str, Any] = {
        "mac": "aa:bb:cc:dd:ee:01",
        "payload_format": "v1",
        "poll_interval_s": 10,
        "broker": {"url": "mqtt://127.0.0.1:1883"},
        "modbus": {"port": "tcp://127.0.0.1:5020", "timeout_s": 5, "attempts": 3, "backoff_s": [1, 2, 4]},
        "queue": {"max_messages": 100, "inflight": 4, "ack_timeout_s": 30},
        "reconnect": {"initial_s": 1, "max_s": 8},
        "storage_dir": str(path.parent / "flash"),
        "meters": [
            {"code": "D01", "slave_id": 1, "register": 0, "data_type": "uint32", "scale": 0.01, "unit": "kWh",
             "kind": "energy"},
            {"code": "D02", "slave_id": 2, "register": 0, "data_type": "uint32", "scale": 0.01, "unit": "kWh",
             "kind": "energy"},
        ],
    }
    doc.update(overrides)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def energy_bank_meters(bank: Any, count: int, *, data_type: str = "uint32", word_order: str = "big") -> list[dict]:
    """Add ``count`` simulated energy meters D01.. (slaves 1..count) to a simulators bank; return the
    matching ``meters`` config entries (uint32 x 0.01 by default: real counters overflow uint16)."""
    from simulators import EnergyMeter

    out = []
    for i in range(1, count + 1):
        code = f"D{i:02d}"
        bank.add_meter(i, EnergyMeter(code, i, base_kw=0.5), data_type=data_type, scale=0.01, word_order=word_order)
        out.append({"code": code, "slave_id": i, "register": 0, "data_type": data_type, "word_order": word_order,
                    "scale": 0.01, "unit": "kWh", "kind": "energy"})
    return out
