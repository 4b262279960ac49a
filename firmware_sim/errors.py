"""The simulator's error tree.

SimError(CitywatchError)
├── UnknownDevice      no simulated device has that id
└── SimTransportError  a listening socket or pty could not be set up
"""

from __future__ import annotations

from contracts.errors import CitywatchError


class SimError(CitywatchError):
    """Base of every error the simulator raises on purpose."""


class UnknownDevice(SimError, KeyError):
    """No simulated device has that id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown device"


class SimTransportError(SimError):
    """A listening socket or a pty pair could not be set up."""
