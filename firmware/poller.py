"""Reading meters over Modbus with the firmware's retry policy.

Each attempt is bounded by ``timeout_s`` on the Clock; after a failed attempt the poller waits
``backoff_s[i]`` (1, 2, 4 s by default, also after the last attempt, as the field firmware does: it gives
a confused slave and the bus a quiet period before the next meter). A meter that fails every attempt
yields None: it is logged and counted, never published as a zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pymodbus.exceptions import ModbusException

from .config import MeterConfig, ModbusConfig
from .counters import Counters
from .hal import Clock, ModbusPort
from .registers import decode_registers, register_count
from .tasks import raise_if_cancelling
from .timing import with_timeout

__all__ = ["MeterPoller", "ReadFailure"]

log = logging.getLogger(__name__)


class ReadFailure(Exception):
    """One attempt failed: exception response, wrong answer or undecodable value."""


@dataclass
class MeterPoller:
    """Reads configured meters through a ``ModbusPort``."""

    port: ModbusPort
    clock: Clock
    policy: ModbusConfig
    counters: Counters
    mac: str = ""

    async def read_once(self, meter: MeterConfig) -> float:
        """One attempt, bounded by the timeout. Raises ReadFailure, TimeoutError, OSError or ModbusException."""
        client = await self.port.client()
        count = register_count(meter.data_type)
        fn = client.read_holding_registers if meter.function == "holding" else client.read_input_registers
        rr = await with_timeout(
            self.clock, fn(meter.register, count=count, device_id=meter.slave_id), self.policy.timeout_s
        )
        if rr.isError():
            raise ReadFailure(f"exception response {getattr(rr, 'exception_code', '?')}")
        regs = list(getattr(rr, "registers", []) or [])[:count]
        try:
            return decode_registers(regs, meter.data_type, meter.word_order, meter.scale)
        except ValueError as exc:
            raise ReadFailure(str(exc)) from None

    async def read(self, meter: MeterConfig) -> float | None:
        """Read with retries; None when every attempt failed."""
        attempts = self.policy.attempts
        for attempt in range(1, attempts + 1):
            try:
                value = await self.read_once(meter)
            except (ReadFailure, TimeoutError, OSError, ModbusException) as exc:
                raise_if_cancelling()
                delay = self.policy.backoff_s[min(attempt - 1, len(self.policy.backoff_s) - 1)]
                log.warning(
                    "event=modbus_attempt_failed mac=%s meter=%s slave=%d register=%d attempt=%d/%d "
                    "error=%r backoff_s=%g", self.mac, meter.code, meter.slave_id, meter.register,
                    attempt, attempts, str(exc) or type(exc).__name__, delay,
                )
                await self.clock.sleep(delay)
                continue
            self.counters.meter_reads += 1
            return value
        self.counters.meter_failed(meter.code)
        log.error(
            "event=meter_failed mac=%s meter=%s slave=%d register=%d attempts=%d",
            self.mac, meter.code, meter.slave_id, meter.register, attempts,
        )
        return None
