"""The root of every citywatch error tree.

    CitywatchError
    ├── ConfigError            bad config: names file, key path and value
    ├── ContractError          something crossing a process boundary is wrong
    │   ├── InvalidId          gateway/device id outside [a-z0-9][a-z0-9-]{0,62}
    │   └── PayloadError       undecodable or invalid payload (carries a short reason code)
    └── <package>Error         each package roots its own subtree here (GatewayError, ...)

Lower-level exceptions (pyserial, sqlite3, psycopg, paho) are translated once at the
package boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class CitywatchError(Exception):
    """Base of all errors raised on purpose by citywatch code."""


class ConfigError(CitywatchError):
    """A config file is invalid; the message names the file, the key path and the value."""

    def __init__(self, source: str, key_path: str, value: object, problem: str) -> None:
        self.source = source
        self.key_path = key_path
        self.value = value
        self.problem = problem
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        where = f"{source}: {key_path}" if key_path else source
        super().__init__(f"{where}: {problem} (got {shown})")


class ContractError(CitywatchError):
    """Something that crossed a process boundary breaks the contract."""


class InvalidId(ContractError):
    """An id that cannot be used in a topic or as a key."""


class PayloadError(ContractError):
    """A payload that cannot be decoded; ``reason`` is a short stable code for dead letters."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
