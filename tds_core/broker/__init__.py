"""MQTT broker side of TDS: the embedded amqtt broker, Mosquitto config/ACL generation, topic rules.

Offers ``EmbeddedBroker`` (in-process, plain or mTLS), ``BrokerTLS`` (TLS material) and ``Acl``
(who may publish/subscribe/receive which topics). Imported lazily so that
``python -m tds_core.broker.embedded`` runs its module only once.
"""

from typing import Any

__all__ = ["Acl", "BrokerTLS", "EmbeddedBroker"]


def __getattr__(name: str) -> Any:
    if name == "Acl":
        from tds_core.broker.acl import Acl
        return Acl
    if name == "BrokerTLS":
        from tds_core.broker.tls import BrokerTLS
        return BrokerTLS
    if name == "EmbeddedBroker":
        from tds_core.broker.embedded import EmbeddedBroker
        return EmbeddedBroker
    raise AttributeError(name)
