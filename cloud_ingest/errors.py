"""Errors of the cloud ingester.

    CitywatchError
    └── IngestError
        ├── StoreError            a store refused an operation (bad URL, schema, query)
        │   └── StoreUnavailable  the database is down, paused or unreachable: retry later
        └── BrokerError           the MQTT broker refused us or could not be reached

Lower-level exceptions (sqlite3, psycopg, influxdb-client, paho) are translated once, in
the backend or the MQTT shell, with ``raise ... from exc``.
"""

from __future__ import annotations

from contracts.errors import CitywatchError


class IngestError(CitywatchError):
    """Root of the ingester's errors."""


class StoreError(IngestError):
    """A store operation failed for a reason a retry will not fix."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now; the ingester keeps messages unacknowledged and retries."""


class BrokerError(IngestError):
    """The broker refused the connection or a subscription."""
