"""The unit tier is pure: any test here that creates a socket fails.

``socket.socketpair`` stays allowed (it wraps an already-open descriptor pair): asyncio's event
loop uses one as its in-process wake-up pipe. Tests that need TCP, ptys to a server, a broker or
a database belong in tests/wire or tests/integration.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest


class SocketInUnitTest(RuntimeError):
    """A unit test tried to open a socket."""


@pytest.fixture(autouse=True)
def _no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    real_init = socket.socket.__init__

    def guarded(self: socket.socket, family: Any = -1, type: Any = -1, proto: Any = -1,
                fileno: Any = None) -> None:
        if fileno is None:
            raise SocketInUnitTest("unit tests open no sockets: move this test to tests/wire or tests/integration")
        real_init(self, family, type, proto, fileno)

    monkeypatch.setattr(socket.socket, "__init__", guarded)
