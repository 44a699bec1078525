"""Registry: tenants (contas), gateways and devices; provisioning from fleet files; the ingest lookup cache.

The ingest path uses :class:`RegistryCache` (``tds_core.registry.cache``) and never queries per message.
"""

from tds_core.registry.cache import DeviceEntry, GatewayEntry, RegistryCache, RegistrySnapshot

__all__ = ["DeviceEntry", "GatewayEntry", "RegistryCache", "RegistrySnapshot"]
