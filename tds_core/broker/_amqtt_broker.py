"""amqtt 0.12.1 broker and protocol handler with the fixes TDS needs.

What stock amqtt 0.12.1 does, and what this module changes (read amqtt/broker.py and
amqtt/mqtt/protocol/handler.py next to it):

* QoS 1 to subscribers: the broker waits 5 s for a PUBACK and then, or on disconnect, *forgets* the
  message (``finally: inflight_out.pop``). A consumer that acknowledges after its commit and then
  disconnects would lose it. Here an unacknowledged message stays in the session's ``inflight_out``
  until it is acknowledged; it is resent with DUP=1 when the persistent session reconnects
  [MQTT-4.4.0-1], without blocking the connection's start.
* Publishes PUBACKed but not yet routed: amqtt acknowledges a QoS 1 PUBLISH once it is in the
  publisher session's queue and ended the per-connection loop that routes that queue on disconnect,
  dropping its backlog (5.9 % of acknowledged messages in the ingest bench at 3,000 msg/s). Here the
  loop routes everything still queued after the handler has stopped.
* Messages queued for an offline persistent session were sent with RETAIN=1 and their PUBACKs awaited
  before the client's packets were read; they are sent with RETAIN=0, in order, without blocking.
* Identity: stock amqtt deletes a clean session and takes over a connected one *before* it
  authenticates, so any client naming another's client id could wipe or cut another session. Here the
  identity check runs on the CONNECT alone (client id, certificate, will topic) before any session is
  looked up; a refused client gets a CONNACK refusal and touches nothing.
* Shared subscriptions (``$share/{group}/{filter}``): stock amqtt treats them as literal filters that
  never match. Here each message goes to one member of each matching group (a connected member when
  there is one, round robin), and is queued for an offline persistent member otherwise.
* Outbound in-flight window: stock amqtt sends every message at once and gives each a packet id; a
  consumer that stops acknowledging (its database is down) gets them all, and past 65,535 unacknowledged
  messages ``next_packet_id`` raises and the message is dropped, after the publisher had its PUBACK.
  Here at most ``max_inflight`` QoS 1/2 messages per session are unacknowledged (Mosquitto's
  ``max_inflight_messages``); the rest wait in order, in memory, and go to the session's offline queue
  if the connection ends first.
* Topic checks (publish, subscribe, per-message receive, will topic) come from a policy object
  instead of the plugin manager; TLS uses a context built by the caller (client certificate required).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from amqtt.broker import Broker, RetainedApplicationMessage
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import IDENTIFIER_REJECTED, NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import OUTGOING, IncomingApplicationMessage, OutgoingApplicationMessage, Session
from amqtt.utils import gen_client_id

from tds_core.broker.acl import split_shared, topic_matches

log = logging.getLogger(__name__)

_CONNECTING = "tds.connecting"
_LOOP_DONE = "tds.loop_done"

__all__ = ["AccessPolicy", "ConnectRefused", "TdsBroker", "TdsBrokerHandler", "check_max_inflight"]


class ConnectRefused(Exception):
    """Raised by an identity check to refuse a CONNECT; ``code`` is the CONNACK return code."""

    def __init__(self, reason: str, code: int = NOT_AUTHORIZED) -> None:
        super().__init__(reason)
        self.code = code


class AccessPolicy:
    """What the broker asks before letting a client in and before moving a message.

    ``identify`` receives the session built from the CONNECT (client_id, will, ssl_object set) and must
    set ``session.username`` or raise ConnectRefused. The three topic checks take the username.
    This default lets everybody in with username = client id and allows every topic.
    """

    def identify(self, session: Session) -> None:
        """Set ``session.username`` from the connection, or raise ConnectRefused."""
        session.username = session.client_id

    def can_publish(self, username: str | None, topic: str) -> bool:
        """May ``username`` publish on ``topic``?"""
        return True

    def can_subscribe(self, username: str | None, topic_filter: str) -> bool:
        """May ``username`` subscribe to ``topic_filter``?"""
        return True

    def can_receive(self, username: str | None, topic: str) -> bool:
        """May a message on ``topic`` be sent to ``username``?"""
        return True


DEFAULT_MAX_INFLIGHT = 1000  # as the Mosquitto configuration TDS writes


def check_max_inflight(value: int) -> int:
    """`value` if it is a usable in-flight window (MQTT packet ids: 1..65535), else ValueError."""
    if not 1 <= value <= 65535:
        raise ValueError(f"max_inflight: {value} is not in 1..65535 (MQTT packet ids)")
    return value


class TdsBrokerHandler(BrokerProtocolHandler):
    """Broker-side protocol handler that keeps unacknowledged QoS 1 messages for redelivery and sends at
    most ``max_inflight`` of them before their acknowledgements (the rest wait in order)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._retry_tasks: set[asyncio.Task[None]] = set()
        self.max_inflight = DEFAULT_MAX_INFLIGHT
        self._waiting: deque[tuple[str, bytes | bytearray, int, bool]] = deque()
        self._flows: set[asyncio.Task[None]] = set()
        self._closed = False

    async def mqtt_publish(self, topic: str, data: bytes | bytearray, qos: int | None, retain: bool,
                           ack_timeout: int | None = None) -> OutgoingApplicationMessage | None:  # type: ignore[override]
        """Send a message to this client. QoS 1/2 messages join the window's queue and are sent, in order,
        as acknowledgements make room; this returns at once for them (the flow runs in its own task)."""
        if qos not in (QOS_1, QOS_2) or self.session is None:
            return await super().mqtt_publish(topic, data, qos, retain, ack_timeout)
        if self._closed:
            self._park(topic, data, qos)
            return None
        self._waiting.append((topic, data, qos, retain))
        self._send_waiting()
        return None

    def _send_waiting(self) -> None:
        """Start the flows of waiting messages while the session has fewer than max_inflight in flight."""
        session = self.session
        if session is None:
            return
        while self._waiting and not self._closed and len(session.inflight_out) < self.max_inflight:
            topic, data, qos, retain = self._waiting.popleft()
            packet_id = session.next_packet_id  # free: fewer than max_inflight (<= 65,535) are in flight
            message = OutgoingApplicationMessage(packet_id, topic, qos, data, retain)
            # Counted in the window from now on: the flow task only starts at the loop's next turn.
            session.inflight_out[packet_id] = message
            flow = asyncio.ensure_future(self._handle_message_flow(message))
            self._flows.add(flow)
            flow.add_done_callback(self._flow_done)

    def _flow_done(self, flow: asyncio.Task[None]) -> None:
        self._flows.discard(flow)
        if not flow.cancelled() and flow.exception() is not None:
            log.debug("delivery stopped: %r (the message stays in flight for redelivery)", flow.exception())
        self._send_waiting()

    def _park(self, topic: str, data: bytes | bytearray, qos: int) -> None:
        """A message that was never sent on this (now closed) connection: queued for the persistent
        session's next connection, dropped for a clean session (which ends with its connection)."""
        session = self.session
        if session is not None and not session.clean_session:
            session.retained_messages.put_nowait(RetainedApplicationMessage(None, topic, data, qos))

    async def _handle_qos1_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        if app_message.direction != OUTGOING:
            await super()._handle_qos1_message_flow(app_message)
            return
        session = self.session
        if session is None or app_message.packet_id is None:
            raise AMQTTError("QoS 1 flow without a session or packet id")
        packet_id = app_message.packet_id
        # Stored before sending: if the send fails or the client goes away, the message stays queued
        # in the session and is resent on the next connection of this persistent session.
        session.inflight_out[packet_id] = app_message  # type: ignore[assignment]
        packet = app_message.build_publish_packet(dup=app_message.publish_packet is not None)
        await self._send_packet(packet)
        app_message.publish_packet = packet
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter  # type: ignore[assignment]
        try:
            # No timeout: a consumer may acknowledge only after its database commit. MQTT 3.1.1
            # resends only on reconnect, so waiting is what the spec asks.
            app_message.puback_packet = await waiter
        except asyncio.CancelledError:
            # The handler stopped (disconnect): keep the message in flight for redelivery.
            if asyncio.current_task() is not None and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            return
        finally:
            if self._puback_waiters.get(packet_id) is waiter:
                self._puback_waiters.pop(packet_id, None)
        if session.inflight_out.get(packet_id) is app_message:
            session.inflight_out.pop(packet_id, None)

    async def _retry_deliveries(self) -> None:
        """Resend in-flight messages of a resumed session in the background, in their original order."""
        if self.session is None:
            return
        pending = list(itertools.chain(self.session.inflight_in.values(), self.session.inflight_out.values()))
        if not pending:
            return
        log.debug("%s: resending %d in-flight message(s)", self.session.client_id, len(pending))
        for message in pending:
            task = asyncio.create_task(self._resend(message))
            self._retry_tasks.add(task)
            task.add_done_callback(self._retry_tasks.discard)

    async def _resend(self, message: IncomingApplicationMessage | OutgoingApplicationMessage) -> None:
        try:
            await self._handle_message_flow(message)
        except (AMQTTError, MQTTError, OSError, TimeoutError) as exc:
            log.debug("redelivery of packet %s stopped: %r", message.packet_id, exc)
        finally:
            self._send_waiting()  # a resent message counts in the window too

    async def stop(self) -> None:
        """Stop the handler; in-flight messages stay in the session, waiting ones go to its offline queue."""
        self._closed = True
        waiting, self._waiting = self._waiting, deque()
        if waiting:
            log.debug("%s: %d message(s) not yet sent go to the session's queue",
                      self.session.client_id if self.session else "?", len(waiting))
        for topic, data, qos, _ in waiting:
            self._park(topic, data, qos)
        for task in list(self._retry_tasks):
            task.cancel()
        await super().stop()


class TdsBroker(Broker):
    """amqtt Broker with the identity, ACL, redelivery and shared-subscription behaviour above."""

    def __init__(self, config: dict[str, Any], *, policy: AccessPolicy,
                 ssl_context_factory: Callable[[], Any] | None = None,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT) -> None:
        self.max_inflight = check_max_inflight(max_inflight)
        super().__init__(config)
        self.policy = policy
        self._ssl_context_factory = ssl_context_factory
        self._share_rr: dict[tuple[str, str], int] = {}

    # -- listeners -------------------------------------------------------------------------------
    def _create_ssl_context(self, listener: Any) -> Any:  # type: ignore[override]
        # amqtt hard-codes CERT_OPTIONAL; the caller's context requires a client certificate.
        if self._ssl_context_factory is None:
            raise AMQTTError("listener asks for TLS but no SSL context was given")
        return self._ssl_context_factory()

    def bound_port(self, listener_name: str = "default") -> int:
        """The port the listener actually bound (useful with port 0)."""
        server = self._servers[listener_name]
        return int(server.instance.sockets[0].getsockname()[1])

    # -- connect -----------------------------------------------------------------------------
    async def _initialize_client_session(self, reader: Any, writer: Any, remote_address: str,
                                         remote_port: int) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, incoming = await TdsBrokerHandler.init_from_connect(reader, writer, self.plugins_manager)
        except MQTTError:
            await writer.close()
            raise
        except NoDataError as exc:
            raise AMQTTError(exc) from exc
        handler.max_inflight = self.max_inflight

        if not incoming.client_id:
            if not incoming.clean_session:  # amqtt already refuses this; keep the guard explicit
                await self._refuse(writer, "empty client id with a persistent session", IDENTIFIER_REJECTED)
            incoming.client_id = gen_client_id()
        try:
            self.policy.identify(incoming)
            if incoming.will_flag and incoming.will_topic is not None and not self.policy.can_publish(
                    incoming.username, incoming.will_topic):
                raise ConnectRefused(f"will topic {incoming.will_topic!r} not allowed for {incoming.username!r}")
        except ConnectRefused as refused:
            log.warning("refused CONNECT from %s:%s client id %r: %s", remote_address, remote_port,
                        incoming.client_id, refused)
            await self._refuse(writer, str(refused), refused.code)

        # Only now, with the identity settled, may the CONNECT touch an existing session.
        await self._close_previous_connection(incoming.client_id)
        if incoming.clean_session:
            await self._delete_session(incoming.client_id)
            incoming.parent = 0
            session = incoming
        elif incoming.client_id in self._sessions:
            session, _ = self._sessions[incoming.client_id]
            for attr in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive",
                         "username", "password", "ssl_object", "remote_address", "remote_port"):
                setattr(session, attr, getattr(incoming, attr))
            session.parent = 1
        else:
            incoming.parent = 0
            session = incoming
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _close_previous_connection(self, client_id: str) -> None:
        """Session takeover done in order: the old connection's loop finishes (and marks the session
        disconnected) before the new one attaches. Stock amqtt lets the old loop mark the session
        disconnected *after* the new connection took it, so messages were queued instead of sent."""
        entry = self._sessions.get(client_id)
        if entry is None:
            return
        session, handler = entry
        if session.transitions.state != "connected":
            return
        log.info("client %r connected again: closing its previous connection", client_id)
        done: asyncio.Event | None = session.attributes.get(_LOOP_DONE)
        await handler.handle_connection_closed()
        if done is not None:
            try:
                await asyncio.wait_for(done.wait(), 5)
            except TimeoutError:
                log.warning("previous connection of %r did not close within 5 s", client_id)

    async def _refuse(self, writer: Any, reason: str, code: int) -> None:
        connack = ConnackPacket.build(0, code)
        try:
            await connack.to_stream(writer)
        finally:
            await writer.close()
        raise MQTTError(reason)

    async def _authenticate(self, session: Session, _: Any) -> bool:  # type: ignore[override]
        # The identity was checked in _initialize_client_session; an unidentified session never gets here.
        return session.username is not None

    # -- topic checks ------------------------------------------------------------------------
    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:  # type: ignore[override]
        username = session.username
        if action == Action.PUBLISH:
            allowed = self.policy.can_publish(username, topic)
        elif action == Action.SUBSCRIBE:
            allowed = self.policy.can_subscribe(username, topic)
        else:
            allowed = self.policy.can_receive(username, topic)
        if not allowed:
            log.info("denied %s on %r for %r", action.value, topic, username)
        return allowed

    def _matches(self, topic: str, a_filter: str) -> bool:
        _, inner = split_shared(a_filter)
        if a_filter.startswith("$share/") and inner == a_filter:
            return False  # malformed $share filter
        return topic_matches(topic, inner)

    # -- delivery ----------------------------------------------------------------------------
    async def _run_broadcast(self, running_tasks: Any) -> None:
        broadcast = await self._broadcast_queue.get()
        topic = broadcast["topic"]
        groups: dict[tuple[str, str], list[tuple[Session, int]]] = {}
        for k_filter, subscriptions in list(self._subscriptions.items()):
            group, inner = split_shared(k_filter)
            if not self._matches(topic, k_filter):
                continue
            if group is not None:
                groups.setdefault((group, inner), []).extend(subscriptions)
                continue
            for session, sub_qos in list(subscriptions):
                await self._deliver(broadcast, session, sub_qos, running_tasks)
        for key, members in groups.items():
            # only members that may receive this topic: a member the ACL would refuse must not take
            # the group's copy away from the consumer
            eligible = [(s, q) for s, q in members
                        if (s.transitions.state == "connected" or not s.clean_session)
                        and self.policy.can_receive(s.username, topic)]
            connected = [(s, q) for s, q in eligible if s.transitions.state == "connected"]
            candidates = connected or eligible
            if not candidates:
                continue
            index = self._share_rr.get(key, 0) % len(candidates)
            self._share_rr[key] = index + 1
            session, sub_qos = candidates[index]
            await self._deliver(broadcast, session, sub_qos, running_tasks)

    async def _deliver(self, broadcast: dict[str, Any], session: Session, sub_qos: int,
                       running_tasks: Any) -> None:
        qos = broadcast.get("qos", sub_qos)
        topic = broadcast["topic"]
        if not await self._topic_filtering(session, topic=topic, action=Action.RECEIVE):
            return
        connected = session.transitions.state == "connected"
        if not connected and not session.clean_session and qos in (QOS_1, QOS_2) and not session.is_anonymous:
            await self._retain_broadcast_message(broadcast, qos, session)
            return
        if not connected:
            return
        handler = self._get_handler(session)
        if handler:
            running_tasks.append(asyncio.ensure_future(handler.mqtt_publish(topic, broadcast["data"], qos,
                                                                           retain=False)))

    async def _client_message_loop(self, client_session: Session, handler: BrokerProtocolHandler) -> None:
        """Per-connection loop: routes what the client published, handles (un)subscriptions, disconnect.

        Replaces amqtt's loop, which lost acknowledged messages: the handler PUBACKs a QoS 1 PUBLISH as
        soon as it sits in ``session.delivered_message_queue``, and only this loop moves it on to the
        broadcast queue. Under load the loop lags behind the reader (thousands of messages), and amqtt
        ended it on disconnect, leaving everything still queued behind: acknowledged, never delivered.
        Here the loop, once the handler has stopped (so nothing more is PUBACKed), routes every message
        still queued, including one its delivery waiter had already taken off the queue.
        """
        client_session.attributes.pop(_CONNECTING, None)
        done = client_session.attributes[_LOOP_DONE] = asyncio.Event()
        disconnect_waiter = asyncio.ensure_future(handler.wait_disconnect())
        subscribe_waiter = asyncio.ensure_future(handler.get_next_pending_subscription())
        unsubscribe_waiter = asyncio.ensure_future(handler.get_next_pending_unsubscription())
        wait_deliver = asyncio.ensure_future(handler.mqtt_deliver_next_message())
        try:
            while True:
                finished, _ = await asyncio.wait(
                    [disconnect_waiter, subscribe_waiter, unsubscribe_waiter, wait_deliver],
                    return_when=asyncio.FIRST_COMPLETED)
                if wait_deliver in finished:
                    if not await self._route_published(client_session, handler, wait_deliver.result()):
                        await handler.handle_connection_closed()  # a protocol violation closes the connection
                    wait_deliver = asyncio.ensure_future(handler.mqtt_deliver_next_message())
                if subscribe_waiter in finished:
                    await self._handle_subscription(client_session, handler, subscribe_waiter)
                    subscribe_waiter = asyncio.ensure_future(handler.get_next_pending_subscription())
                if unsubscribe_waiter in finished:
                    await self._handle_unsubscription(client_session, handler, unsubscribe_waiter)
                    unsubscribe_waiter = asyncio.ensure_future(handler.get_next_pending_unsubscription())
                if disconnect_waiter in finished:
                    # stops the handler: its reader and its PUBLISH tasks are gone when this returns
                    await self._handle_disconnect(client_session, handler, disconnect_waiter)
                    break
        except asyncio.CancelledError:
            log.debug("%s: client loop cancelled", client_session.client_id)
        finally:
            waiters = [disconnect_waiter, subscribe_waiter, unsubscribe_waiter, wait_deliver]
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
            # Taken synchronously, so a clean-session CONNECT of the same client id (which clears the
            # session's queues) cannot take them away while they are being routed.
            backlog = []
            if (wait_deliver.done() and not wait_deliver.cancelled() and wait_deliver.exception() is None
                    and wait_deliver.result() is not None):
                backlog.append(wait_deliver.result())
            while not client_session.delivered_message_queue.empty():
                backlog.append(client_session.delivered_message_queue.get_nowait())
            if backlog:
                log.debug("%s: routing %d message(s) received before the disconnect", client_session.client_id,
                          len(backlog))
            for message in backlog:
                await self._route_published(client_session, handler, message)
            done.set()

    async def _route_published(self, client_session: Session, handler: BrokerProtocolHandler,
                               message: Any) -> bool:
        """Broadcast one message the client published; False when its topic violates the protocol."""
        taken: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        taken.set_result(message)
        return await self._handle_message_delivery(client_session, handler, taken)

    async def _publish_session_retained_messages(self, session: Session) -> None:
        # Messages queued while the session was offline: not retained messages, so RETAIN=0, and not
        # awaited (their PUBACKs come after the consumer's commit, while its packets must keep flowing).
        # amqtt next re-sends retained messages for *every* filter anyone subscribed to; a reconnect
        # is not a subscription, so that pass is skipped until the client's packet loop starts.
        session.attributes[_CONNECTING] = True
        handler = self._get_handler(session)
        if handler is None:
            return
        while not session.retained_messages.empty():
            queued = session.retained_messages.get_nowait()
            self._tasks_queue.append(asyncio.ensure_future(
                handler.mqtt_publish(queued.topic, queued.data, queued.qos, retain=False)))

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        topic_filter, qos = subscription
        handler = self._get_handler(session)
        if session.attributes.get(_CONNECTING) or handler is None or topic_filter.startswith("$share/"):
            return  # shared subscriptions get no retained messages (as MQTT 5 and Mosquitto)
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and self.policy.can_receive(session.username, topic):
                self._tasks_queue.append(asyncio.ensure_future(
                    handler.mqtt_publish(retained.topic, retained.data, min(qos, retained.qos or qos),
                                         retain=True)))
