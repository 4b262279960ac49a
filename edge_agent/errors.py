"""The edge agent's error tree.

    EdgeError(CitywatchError)
    ├── OutboxError         the on-disk outbox failed (sqlite3 error, disk full, corrupt file)
    └── CommandError        a command on ``.../cmd`` cannot be carried out (unknown action,
                            bad argument, device missing, write not confirmed); its ``code``
                            goes into the command result

sqlite3 and paho exceptions are translated once, in :mod:`edge_agent.outbox` and
:mod:`mqttlink` (whose ``LinkError`` the uplink handles: the MQTT side failed).
"""

from __future__ import annotations

from contracts.errors import CitywatchError


class EdgeError(CitywatchError):
    """Base of every error the edge agent raises on purpose."""


class OutboxError(EdgeError):
    """The outbox database failed; nothing was changed by the failing call."""


class CommandError(EdgeError):
    """A command cannot be carried out; ``code`` is a short stable reason for the result message."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)
