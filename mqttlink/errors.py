"""The MQTT layer's error tree: paho and socket/TLS errors are translated here, once.

    LinkError(CitywatchError)   connecting, subscribing or publishing failed
"""

from __future__ import annotations

from contracts.errors import CitywatchError


class LinkError(CitywatchError):
    """The broker connection failed or refused something.

    ``connack_code`` is the CONNACK reason code when the broker answered and refused;
    ``handshake_failed`` says the TCP connection stood but the MQTT handshake did not complete
    (a 3.1.1-only broker may simply drop an MQTT 5 CONNECT): a reason to retry with 3.1.1.
    """

    def __init__(self, message: str, *, connack_code: int | None = None, handshake_failed: bool = False) -> None:
        super().__init__(message)
        self.connack_code = connack_code
        self.handshake_failed = handshake_failed
