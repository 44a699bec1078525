"""TDS production core: protocol, registry, storage, ingest, PKI, broker config, OTA and API.

The core never imports the harness (firmware/, simulators/, scenarios/, hil/, loadtests/).
"""

__version__ = "0.1.0"
