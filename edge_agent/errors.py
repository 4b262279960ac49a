"""The edge agent's error tree.

    EdgeError(CitywatchError)
    ├── OutboxError         the on-disk outbox failed (sqlite3 error, disk full, corrupt file)
    ├── PublishError        the MQTT side failed (connect refused, TLS, protocol)
    │   └── PublishRefused  the broker answered a PUBLISH with a reason code >= 0x80
    └── CommandError        a command on ``.../cmd`` cannot be carried out (unknown action,
                            bad argument, device missing, write not confirmed); its ``code``
                            goes into the command result

sqlite3 and paho exceptions are translated once, in :mod:`edge_agent.outbox` and
:mod:`edge_agent.mqtt_io`.
"""

from __future__ import annotations

from contracts.errors import CitywatchError


class EdgeError(CitywatchError):
    """Base of every error the edge agent raises on purpose."""


class OutboxError(EdgeError):
    """The outbox database failed; nothing was changed by the failing call."""


class PublishError(EdgeError):
    """Connecting or publishing to the broker failed."""


class PublishRefused(PublishError):
    """The broker refused a publish (MQTT 5 PUBACK reason code >= 0x80, e.g. 0x87 not authorised)."""

    def __init__(self, reason_code: int, reason: str, topic: str) -> None:
        self.reason_code = reason_code
        self.reason = reason
        self.topic = topic
        super().__init__(f"broker refused publish to {topic}: {reason_code:#04x} {reason}")


class CommandError(EdgeError):
    """A command cannot be carried out; ``code`` is a short stable reason for the result message."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)
