"""The asyncio adapter: one MQTT connection, paho-mqtt 2.x driven from the asyncio loop (no paho thread).

Used by the edge agent's uplink and the console's live feed. Why this shape: their state
(outbox, in-flight batches, health; the SSE hub) is touched only from the one event loop, so
there are no locks between PUBACK handling, acks and polling; and no ``select()`` is involved,
which fails once a descriptor number passes 1024 (a console with a thousand SSE clients). paho is used
through its external-loop API (``on_socket_*`` callbacks + ``loop_read``/``loop_write``/
``loop_misc``), the pattern aiomqtt uses. The only blocking step, the TCP/TLS connect, runs
in the default executor so a slow or dead uplink never stalls bus polling; socket callbacks
fired from that thread are handed to the loop with ``call_soon_threadsafe``.

A :class:`MqttLink` is one connection attempt and lives until that connection ends; the caller
makes a new one for every reconnect (paho's own in-memory resend queue is thereby discarded:
the outbox is the only resend queue); callers reconnect with :func:`mqttlink.backoff.backoff_delay`.
MQTT 5 is tried first; a broker that refuses the
protocol version gets MQTT 3.1.1 (then PUBACKs carry no reason code and only the end-to-end
ack protects against silent drops).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from contracts.config import MqttSettings
from mqttlink.client import new_client, suback_ok
from mqttlink.errors import LinkError

log = logging.getLogger(__name__)

ProtocolChoice = Literal["auto", "5", "3.1.1"]
#: CONNACK reason codes meaning "I do not speak this protocol version" (v5 0x84, v3 return code 1)
_UNSUPPORTED_VERSION = (0x84, 1)

OnMessage = Callable[[str, bytes], None]
OnPuback = Callable[[int, int, str], None]  # mid, reason code value, reason name


class MqttLink:
    """One broker connection. ``closed`` is set when it ends, for whatever reason."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        will: tuple[str, bytes] | None,
        on_message: OnMessage,
        on_puback: OnPuback | None = None,
        protocol: Literal["5", "3.1.1"] = "5",
        connect_timeout_s: float = 10.0,
        max_inflight: int = 20,
    ) -> None:
        self.settings = settings
        self.protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._on_message = on_message
        self._on_puback = on_puback
        self._connect_timeout_s = connect_timeout_s
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._connack: asyncio.Future[tuple[int, str]] = self._loop.create_future()
        # the failure may have nobody waiting for it (connect already gave up): mark it retrieved
        self._connack.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._misc_task: asyncio.Task[None] | None = None
        self._sock_fd: int | None = None
        # no session: the caller's own store (the outbox) is the resend queue, and a live view
        # finds what happened while it was away in the databases
        c, self._connect_args = new_client(settings, client_id, persistent=False,
                                           protocol_level=5 if protocol == "5" else 4)
        c.connect_timeout = connect_timeout_s
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=True)
        self._sub_filters: list[str] = []
        self.subscribed = asyncio.Event()
        c.on_connect = self._cb_connect
        c.on_disconnect = self._cb_disconnect
        c.on_publish = self._cb_publish
        c.on_message = self._cb_message
        c.on_subscribe = self._cb_subscribe
        c.on_socket_open = self._cb_socket_open
        c.on_socket_close = self._cb_socket_close
        c.on_socket_register_write = self._cb_register_write
        c.on_socket_unregister_write = self._cb_unregister_write
        c.max_inflight_messages_set(max_inflight)
        self._client = c

    # ------------------------------------------------------------ thread hand-off

    def _in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _cb_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        self._sock_fd = fd
        self._in_loop(self._loop.add_reader, fd, self._read)

    def _cb_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # forget the descriptor now: once the socket is closed the kernel hands the same number to
        # the next socket (another link connecting in the executor), and a second removal later
        # (``_drop_socket``) would unregister that link's reader and writer, leaving its CONNECT
        # unsent and its CONNACK unread ("no CONNACK within 10 s" in the all-in-one)
        fd, self._sock_fd = self._sock_fd, None
        if fd is not None:
            self._in_loop(self._remove_fd, fd)

    def _remove_fd(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)

    def _cb_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        self._in_loop(self._loop.add_writer, fd, self._write)

    def _cb_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd >= 0:
            self._in_loop(self._loop.remove_writer, fd)

    def _read(self) -> None:
        rc = self._client.loop_read()
        if rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_AGAIN):
            self._mark_closed(f"read failed: {paho.error_string(rc)}")

    def _write(self) -> None:
        rc = self._client.loop_write()
        if rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_AGAIN):
            self._mark_closed(f"write failed: {paho.error_string(rc)}")

    # ------------------------------------------------------------ paho callbacks (loop thread)

    def _cb_connect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Properties | None
    ) -> None:
        if not self._connack.done():
            self._connack.set_result((int(rc.value), str(rc)))

    def _cb_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Properties | None
    ) -> None:
        self._mark_closed(f"disconnected: {rc}")

    def _cb_publish(
        self, client: paho.Client, userdata: Any, mid: int, rc: ReasonCode, props: Properties | None
    ) -> None:
        if self._on_puback is not None:
            self._on_puback(mid, int(rc.value), str(rc))

    def _cb_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Properties | None
    ) -> None:
        if suback_ok(rcs, self._sub_filters):
            self.subscribed.set()
            return
        # a refused subscription (a NATS node without a JetStream leader answers 0x80 for a while)
        # would leave the gateway deaf to its ack watermark: drop the link, reconnect with backoff
        bad = [str(rc) for rc in rcs if rc.is_failure]
        if bad:
            self._mark_closed(f"subscription refused: {', '.join(bad)}")

    def _cb_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._on_message(msg.topic, bytes(msg.payload))

    def _mark_closed(self, reason: str) -> None:
        if not self.closed.is_set():
            self.close_reason = reason
            self.closed.set()
            if not self._connack.done():
                self._connack.set_exception(LinkError(reason))

    # ------------------------------------------------------------ public

    async def connect(self) -> None:
        """Connect and wait for a successful CONNACK; raises :class:`LinkError` otherwise."""
        s = self.settings
        try:
            await asyncio.wait_for(
                self._loop.run_in_executor(None, lambda: self._client.connect(**self._connect_args)),
                self._connect_timeout_s + 1,
            )
        except (OSError, ssl.SSLError, ValueError, TimeoutError) as exc:
            self._mark_closed(f"connect to {s.host}:{s.port} failed: {exc}")
            await self._drop_socket()
            raise LinkError(f"connect to {s.host}:{s.port} failed: {exc}") from exc
        self._misc_task = asyncio.create_task(self._misc(), name="mqtt-misc")
        try:
            code, name = await asyncio.wait_for(asyncio.shield(self._connack), self._connect_timeout_s)
        except TimeoutError as exc:
            await self.close()
            raise LinkError(f"no CONNACK from {s.host}:{s.port} within {self._connect_timeout_s} s",
                            handshake_failed=True) from exc
        except LinkError as exc:
            await self.close()
            raise LinkError(str(exc), handshake_failed=True) from exc
        if code != 0:
            await self.close()
            raise LinkError(f"broker {s.host}:{s.port} refused the connection: {code:#04x} {name}",
                            connack_code=code, handshake_failed=code in _UNSUPPORTED_VERSION)

    async def _misc(self) -> None:
        """Keepalive pings and ping timeouts (paho's loop_misc), once a second."""
        while not self.closed.is_set():
            await asyncio.sleep(1.0)
            if self._client.loop_misc() != paho.MQTT_ERR_SUCCESS:
                self._mark_closed("keepalive timeout")

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Queue one message; returns its mid (the PUBACK arrives through ``on_puback``)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            self._mark_closed(f"publish failed: {paho.error_string(info.rc)}")
            raise LinkError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        return int(info.mid)

    def subscribe(self, topics: list[tuple[str, int]]) -> None:
        """Subscribe; ``subscribed`` is set once the broker granted every filter (refusals are logged)."""
        self._sub_filters = [t for t, _ in topics]
        rc, _mid = self._client.subscribe(topics)
        if rc != paho.MQTT_ERR_SUCCESS:
            self._mark_closed(f"subscribe failed: {paho.error_string(rc)}")
            raise LinkError(f"subscribe failed: {paho.error_string(rc)}")

    @property
    def fileno(self) -> int | None:
        """The socket's descriptor while connected."""
        return self._sock_fd

    def disconnect(self) -> None:
        """Send DISCONNECT now (callable from sync code; the retained last will is then *not* sent)."""
        with contextlib.suppress(Exception):
            self._client.disconnect()
            self._client.loop_write()
        self._mark_closed(self.close_reason or "closed by us")

    async def close(self) -> None:
        """Disconnect cleanly if possible and release the socket."""
        self.disconnect()
        await self._drop_socket()

    async def _drop_socket(self) -> None:
        if self._misc_task is not None:
            self._misc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc_task
        fd, self._sock_fd = self._sock_fd, None
        if fd is not None:
            self._remove_fd(fd)
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


async def open_link(
    settings: MqttSettings,
    client_id: str,
    *,
    will: tuple[str, bytes] | None,
    on_message: OnMessage,
    on_puback: OnPuback | None = None,
    protocol: ProtocolChoice | None = None,
    connect_timeout_s: float = 10.0,
) -> MqttLink:
    """Connect with MQTT 5, falling back to 3.1.1 when the broker refuses the version (``auto``).

    ``None`` follows the settings: ``protocol: "3.1.1"`` connects with 3.1.1 only, ``"5"`` tries 5
    and falls back.
    """
    if protocol is None:
        protocol = "auto" if settings.protocol_level == 5 else "3.1.1"
    first: Literal["5", "3.1.1"] = "3.1.1" if protocol == "3.1.1" else "5"
    link = MqttLink(settings, client_id, will=will, on_message=on_message, on_puback=on_puback, protocol=first,
                    connect_timeout_s=connect_timeout_s)
    try:
        await link.connect()
        return link
    except LinkError as exc:
        # fall back when the broker said "unsupported version", or took the TCP connection but
        # never answered the v5 CONNECT (3.1.1-only brokers may just drop it); not when the
        # broker is simply unreachable
        refused = exc.connack_code in _UNSUPPORTED_VERSION
        if protocol != "auto" or not (refused or exc.handshake_failed):
            raise
        log.warning("broker did not accept MQTT 5 (%s); falling back to MQTT 3.1.1", exc)
    link = MqttLink(settings, client_id, will=will, on_message=on_message, on_puback=on_puback, protocol="3.1.1",
                    connect_timeout_s=connect_timeout_s)
    await link.connect()
    return link
