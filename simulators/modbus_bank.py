"""A bank of Modbus slaves (one slave id per meter) served by pymodbus 3.16 over TCP and/or RTU serial.

Registers are computed at request time from the meter model and the bank's clock, so a virtual clock drives
what a poll returns. Faults are applied per slave id on the same clock. Every request addressed to a known
slave is accounted as a :class:`ServedRead` (slave, simulated time, raw registers, decoded value, outcome), so
the harness knows what was exposed independently of the core.

pymodbus hooks used (3.16 source, ``server/requesthandler.py``):

* the datastore: a ``ModbusServerContext`` subclass with ``old_simulator = True`` is used as-is by
  ``ModbusBaseServer``; ``handle_request`` awaits ``pdu.datastore_update(context, dev_id)`` which calls our
  ``async_getValues``. Returning an ``ExcCodes`` member makes an exception response; awaiting inside it delays
  the answer; raising ``NoSuchIdException`` with ``ignore_missing_devices=True`` sends nothing (silence, also
  what unknown slave ids get - as on a real RS-485 bus);
* ``trace_packet(sending, frame)`` rewrites an outgoing frame: used to corrupt the CRC (RTU) or the MBAP
  protocol id (TCP) for ``bad_crc``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from .clock import Clock, system_clock
from .faults import Fault
from .meters import Meter, _unit
from .registers import DATA_TYPES, WORD_ORDERS, EncodingError, decode_registers, encode_value, register_count

log = logging.getLogger(__name__)

READ_FUNCTIONS = (3, 4)  # holding and input registers expose the same point

# outcomes recorded in ServedRead.outcome
OK = "ok"
NO_REPLY = "no_reply"
EXCEPTION = "exception"
BAD_CRC = "bad_crc"
ILLEGAL_ADDRESS = "illegal_address"
ILLEGAL_FUNCTION = "illegal_function"
ENCODE_ERROR = "encode_error"


class NoAnswer(Exception):
    """In-process request (:meth:`ModbusBank.request`) that a master would see as no valid answer."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome


@dataclass(frozen=True)
class Point:
    """Where and how a slave exposes its meter's value."""

    meter: Meter
    register: int = 0
    data_type: str = "uint16"
    scale: float = 0.01
    word_order: str = "big"
    overflow: str = "error"

    def __post_init__(self) -> None:
        if not isinstance(self.register, int) or not 0 <= self.register <= 0xFFFF:
            raise ValueError(f"register={self.register!r} must be an int in 0..65535")
        if self.data_type not in DATA_TYPES:
            raise ValueError(f"data_type={self.data_type!r} is not supported; expected one of {DATA_TYPES}")
        if self.word_order not in WORD_ORDERS:
            raise ValueError(f"word_order={self.word_order!r} is not supported; expected 'big' or 'little'")
        if self.register + self.count - 1 > 0xFFFF:
            raise ValueError(f"register={self.register} + {self.count} registers runs past 65535")
        if not callable(getattr(self.meter, "value_at", None)):
            raise TypeError(f"meter={self.meter!r} has no value_at(datetime) method")
        encode_value(0.0, self.data_type, self.scale, self.word_order, overflow=self.overflow)  # validates scale

    @property
    def count(self) -> int:
        """Registers occupied (1 or 2)."""
        return register_count(self.data_type)

    def encode(self, value: float) -> list[int]:
        """Registers for ``value`` (raises EncodingError when out of range and overflow='error')."""
        return encode_value(value, self.data_type, self.scale, self.word_order, overflow=self.overflow)

    def decode(self, registers: list[int] | tuple[int, ...]) -> float:
        """Value a master decodes from this point's registers."""
        return decode_registers(list(registers), self.data_type, self.scale, self.word_order)


@dataclass(frozen=True, slots=True)
class ServedRead:
    """One request addressed to a known slave, as the bank handled it.

    ``registers`` are the registers answered (or that would have been, for bad_crc); ``value`` is the decoded
    value of the whole point when the request covered it, else None. ``outcome`` is 'ok' only when a valid
    answer left the bank; with ``delay_s`` > 0 the master may still have timed out before it arrived.
    """

    bank: str
    slave_id: int
    at: datetime
    function_code: int
    address: int
    count: int
    outcome: str
    meter_code: str
    registers: tuple[int, ...] = ()
    value: float | None = None
    exception_code: int | None = None
    delay_s: float = 0.0


@dataclass
class _Slave:
    point: Point
    faults: list[Fault] = field(default_factory=list)
    requests: int = 0


class _BankContext(ModbusServerContext):
    """Datastore adapter: pymodbus calls these for every request on every listener of the bank."""

    def __init__(self, bank: ModbusBank) -> None:  # no super().__init__: it only builds the deprecated stores
        self._bank = bank
        self.old_simulator = True
        self.simdevices = []
        self._devices = {}

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1):
        return await self._bank._serve(device_id, func_code, address, count)

    async def async_setValues(self, device_id: int, func_code: int, address: int, values):
        # meters are read-only: writes to a known slave are refused, to an unknown one are not answered
        if device_id not in self._bank._slaves:
            raise NoSuchIdException(f"no slave {device_id}")
        return ExcCodes.ILLEGAL_FUNCTION

    def device_ids(self) -> list[int]:
        return list(self._bank._slaves)


class ModbusBank:
    """Modbus slaves (ids 1..247), one meter each, served on any number of TCP / serial listeners.

    Create and start it inside a running event loop::

        bank = ModbusBank("gw-01", clock=clock)
        bank.add_meter(1, EnergyMeter("D01", seed=1, base_kw=0.5))
        port = await bank.start_tcp()                # socket (MBAP) framing on 127.0.0.1:<port>
        await bank.start_serial("/dev/pts/7")        # RTU on a serial device (see PtyPair)
        ...
        await bank.stop()

    ``on_read`` is called synchronously with each :class:`ServedRead`; ``bank.reads`` keeps the last
    ``log_size`` of them (0 disables the in-memory log).
    """

    def __init__(
        self,
        name: str = "bank",
        *,
        clock: Clock = system_clock,
        seed: int = 0,
        on_read: Callable[[ServedRead], None] | None = None,
        log_size: int = 10_000,
    ) -> None:
        self.name = name
        self.clock = clock
        self.seed = seed
        self.on_read = on_read
        self.reads: deque[ServedRead] = deque(maxlen=max(log_size, 0))
        self._log_reads = log_size > 0
        self._slaves: dict[int, _Slave] = {}
        self._servers: list[ModbusTcpServer | ModbusSerialServer] = []
        self._corrupt: dict[int, int] = {}  # slave id -> answers still to corrupt on the wire
        self.stats: dict[str, int] = {}
        self._encode_warned: set[int] = set()

    # -- configuration ----------------------------------------------------------------------------------------
    def add_meter(
        self,
        slave_id: int,
        meter: Meter,
        *,
        register: int = 0,
        data_type: str = "uint16",
        scale: float = 0.01,
        word_order: str = "big",
        overflow: str = "error",
    ) -> Point:
        """Expose ``meter`` as slave ``slave_id`` at ``register`` (allowed while serving)."""
        if not isinstance(slave_id, int) or not 1 <= slave_id <= 247:
            raise ValueError(f"slave_id={slave_id!r} must be an int in 1..247")
        if slave_id in self._slaves:
            taken = self._slaves[slave_id].point.meter.code
            raise ValueError(f"bank {self.name}: slave_id={slave_id} already serves {taken!r}")
        point = Point(meter, register, data_type, scale, word_order, overflow)
        self._slaves[slave_id] = _Slave(point)
        return point

    def remove_meter(self, slave_id: int) -> None:
        """Stop serving ``slave_id`` (it falls silent)."""
        self._slaves.pop(slave_id, None)
        self._corrupt.pop(slave_id, None)

    @property
    def slave_ids(self) -> list[int]:
        """Configured slave ids, ascending."""
        return sorted(self._slaves)

    def point(self, slave_id: int) -> Point:
        """The point served by ``slave_id``."""
        return self._slave(slave_id).point

    def _slave(self, slave_id: int) -> _Slave:
        try:
            return self._slaves[slave_id]
        except KeyError:
            raise KeyError(f"bank {self.name}: no slave_id={slave_id}; configured: {self.slave_ids}") from None

    def add_fault(self, slave_id: int, fault: Fault) -> Fault:
        """Schedule ``fault`` on ``slave_id``; an open start means "from now" on the bank's clock.

        ``counter_reset`` is applied to the meter model at once (the meter must have ``add_reset``).
        Returns the fault as stored (with its start filled in).
        """
        slave = self._slave(slave_id)
        fault = fault.anchored(self.clock()) if fault.kind in ("stuck", "counter_reset") else fault
        if fault.kind == "counter_reset":
            add_reset = getattr(slave.point.meter, "add_reset", None)
            if add_reset is None:
                raise ValueError(
                    f"bank {self.name}: slave {slave_id} ({slave.point.meter.code}) is a "
                    f"{getattr(slave.point.meter, 'kind', '?')} meter; counter_reset needs a counter"
                )
            add_reset(fault.start)
        slave.faults.append(fault)
        slave.faults.sort(key=lambda f: f.priority)
        return fault

    def clear_faults(self, slave_id: int | None = None) -> None:
        """Drop scheduled faults (of one slave or all). Counter resets already happened and stay."""
        for sid, slave in self._slaves.items():
            if slave_id is None or sid == slave_id:
                slave.faults.clear()
                self._corrupt.pop(sid, None)

    def faults(self, slave_id: int) -> tuple[Fault, ...]:
        """Faults scheduled on ``slave_id``."""
        return tuple(self._slave(slave_id).faults)

    # -- values -----------------------------------------------------------------------------------------------
    def value_at(self, slave_id: int, at: datetime | None = None) -> float:
        """Meter value the slave exposes at ``at`` (default: now on the bank clock), before quantisation.

        Honours ``stuck`` faults; ignores wire faults.
        """
        slave = self._slave(slave_id)
        at = self.clock() if at is None else at
        return self._model_value(slave, at)

    def registers_at(self, slave_id: int, at: datetime | None = None) -> list[int]:
        """Registers the slave would answer at ``at`` (raises EncodingError when out of range)."""
        slave = self._slave(slave_id)
        at = self.clock() if at is None else at
        return slave.point.encode(self._model_value(slave, at))

    @staticmethod
    def _model_value(slave: _Slave, at: datetime) -> float:
        for fault in slave.faults:
            if fault.kind == "stuck" and fault.active(at):
                return slave.point.meter.value_at(fault.start)  # type: ignore[arg-type]
        return slave.point.meter.value_at(at)

    # -- request path (called by pymodbus) --------------------------------------------------------------------
    def _record(self, read: ServedRead) -> None:
        self.stats[read.outcome] = self.stats.get(read.outcome, 0) + 1
        if self._log_reads:
            self.reads.append(read)
        if self.on_read is not None:
            self.on_read(read)

    def _fires(self, fault: Fault, slave_id: int, request_no: int) -> bool:
        if fault.probability >= 1.0:
            return True
        draw = _unit(self.seed, slave_id * 8 + fault.priority, request_no)
        return (draw + 1.0) / 2.0 < fault.probability

    async def request(self, slave_id: int, function_code: int, address: int, count: int) -> list[int] | ExcCodes:
        """Serve one request in-process (no network): same clock, faults and accounting as on the wire.

        Returns the registers or an ``ExcCodes`` exception code; raises :class:`NoAnswer` when a master would
        get nothing valid (unknown slave, ``no_reply``, ``bad_crc``). For fleets too large to put on sockets.
        """
        try:
            answer = await self._serve(slave_id, function_code, address, count, wire=False)
        except NoSuchIdException as exc:
            outcome = NO_REPLY if slave_id in self._slaves else "unknown_slave"
            raise NoAnswer(outcome, str(exc)) from None
        return answer

    async def _serve(
        self, slave_id: int, func_code: int, address: int, count: int, *, wire: bool = True
    ) -> list[int] | ExcCodes:
        slave = self._slaves.get(slave_id)
        if slave is None:
            raise NoSuchIdException(f"bank {self.name}: no slave {slave_id}")  # silence, like an absent device
        at = self.clock()
        slave.requests += 1
        point = slave.point

        def record(outcome: str, **kw) -> None:
            self._record(ServedRead(self.name, slave_id, at, func_code, address, count, outcome,
                                    point.meter.code, **kw))

        delay_s = 0.0
        corrupt = False
        for fault in slave.faults:
            if not fault.active(at) or not self._fires(fault, slave_id, slave.requests):
                continue
            if fault.kind == "no_reply":
                record(NO_REPLY)
                raise NoSuchIdException(f"bank {self.name}: slave {slave_id} silenced by fault")
            if fault.kind == "exception":
                record(EXCEPTION, exception_code=fault.code)
                return ExcCodes(fault.code)
            if fault.kind == "delay":
                delay_s = max(delay_s, fault.seconds)
            elif fault.kind == "bad_crc":
                corrupt = True

        if func_code not in READ_FUNCTIONS:
            record(ILLEGAL_FUNCTION, exception_code=int(ExcCodes.ILLEGAL_FUNCTION))
            return ExcCodes.ILLEGAL_FUNCTION
        offset = address - point.register
        if offset < 0 or offset + count > point.count or count < 1:
            record(ILLEGAL_ADDRESS, exception_code=int(ExcCodes.ILLEGAL_ADDRESS))
            return ExcCodes.ILLEGAL_ADDRESS
        try:
            registers = point.encode(self._model_value(slave, at))
        except EncodingError as exc:
            if slave_id not in self._encode_warned:  # once per episode, not per poll
                self._encode_warned.add(slave_id)
                log.warning("bank %s slave %d (%s): %s", self.name, slave_id, point.meter.code, exc)
            record(ENCODE_ERROR, exception_code=int(ExcCodes.DEVICE_FAILURE))
            return ExcCodes.DEVICE_FAILURE
        self._encode_warned.discard(slave_id)
        answer = registers[offset : offset + count]
        value = point.decode(registers) if count == point.count else None
        if delay_s:
            await asyncio.sleep(delay_s)
            if slave_id not in self._slaves:  # removed while we waited
                raise NoSuchIdException(f"bank {self.name}: slave {slave_id} removed")
        if corrupt and wire:
            self._corrupt[slave_id] = self._corrupt.get(slave_id, 0) + 1
        record(BAD_CRC if corrupt else OK, registers=tuple(answer), value=value, delay_s=delay_s)
        if corrupt and not wire:
            raise NoAnswer(BAD_CRC, f"bank {self.name}: slave {slave_id} answer corrupted by fault")
        return answer

    def _trace_packet(self, framer: FramerType) -> Callable[[bool, bytes], bytes]:
        id_index = 0 if framer == FramerType.RTU else 6

        def trace(sending: bool, data: bytes) -> bytes:
            if not sending or not self._corrupt or len(data) <= id_index:
                return data
            sid = data[id_index]
            pending = self._corrupt.get(sid)
            if not pending:
                return data
            if pending == 1:
                del self._corrupt[sid]
            else:
                self._corrupt[sid] = pending - 1
            if framer == FramerType.RTU:
                return data[:-2] + bytes(b ^ 0xFF for b in data[-2:])  # CRC no longer matches
            return data[:2] + b"\xde\xad" + data[4:]  # MBAP protocol id must be 0

        return trace

    # -- listeners --------------------------------------------------------------------------------------------
    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0, *, framer: str = "socket") -> int:
        """Listen on TCP; ``framer`` 'socket' (Modbus TCP) or 'rtu' (RTU frames over TCP). Returns the port."""
        framer_type = _framer(framer)
        server = ModbusTcpServer(
            _BankContext(self), framer=framer_type, address=(host, port), ignore_missing_devices=True,
            trace_packet=self._trace_packet(framer_type),
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise OSError(f"bank {self.name}: cannot listen on {host}:{port}: {exc}") from None
        self._servers.append(server)
        bound = server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("bank %s: %d slaves on tcp %s:%d (%s)", self.name, len(self._slaves), host, bound, framer)
        return bound

    async def start_serial(
        self, device: str, *, baudrate: int = 19200, parity: str = "N", stopbits: int = 1, bytesize: int = 8,
        framer: str = "rtu",
    ) -> None:
        """Serve on a serial device (a real port or one end of a :class:`PtyPair`)."""
        framer_type = _framer(framer)
        server = ModbusSerialServer(
            _BankContext(self), framer=framer_type, port=device, baudrate=baudrate, parity=parity,
            stopbits=stopbits, bytesize=bytesize, ignore_missing_devices=True, reconnect_delay=0.5,
            trace_packet=self._trace_packet(framer_type),
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise OSError(f"bank {self.name}: cannot open serial device {device!r}: {exc}") from None
        self._servers.append(server)
        log.info("bank %s: %d slaves on serial %s (%s)", self.name, len(self._slaves), device, framer)

    async def stop(self) -> None:
        """Close every listener (idempotent)."""
        servers, self._servers = self._servers, []
        for server in servers:
            await server.shutdown()

    async def __aenter__(self) -> ModbusBank:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()


def _framer(name: str) -> FramerType:
    try:
        framer = FramerType(name)
    except ValueError:
        raise ValueError(f"framer={name!r} is not supported; expected 'socket' or 'rtu'") from None
    if framer not in (FramerType.SOCKET, FramerType.RTU):
        raise ValueError(f"framer={name!r} is not supported; expected 'socket' or 'rtu'")
    return framer


def bank_from_meters(
    meters: Iterable[tuple[int, Meter]], name: str = "bank", **kwargs
) -> ModbusBank:
    """Convenience: a bank with ``(slave_id, meter)`` pairs using the seed encoding (uint16 × 0.01)."""
    bank = ModbusBank(name, **kwargs)
    for slave_id, meter in meters:
        bank.add_meter(slave_id, meter)
    return bank
