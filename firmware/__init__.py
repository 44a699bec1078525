"""TDS gateway firmware (Python, as it runs on a Raspberry Pi gateway, a virtual gateway or a HIL rig).

Offers: ``Firmware`` and ``Hardware`` (the main loop and the HAL bundle it runs on), ``load_config`` /
``parse_config`` / ``GatewayConfig`` / ``ConfigError``, ``CountersSnapshot``; the HAL interfaces and real
implementations live in ``firmware.hal``; register decoding in ``firmware.registers``.
Imports nothing from ``tds_core`` but ``tds_core.protocol``.
"""

from .config import ConfigError, GatewayConfig, MeterConfig, load_config, parse_config
from .counters import CountersSnapshot
from .gateway import Firmware, Hardware

__all__ = [
    "ConfigError",
    "CountersSnapshot",
    "Firmware",
    "GatewayConfig",
    "Hardware",
    "MeterConfig",
    "load_config",
    "parse_config",
]
